"""The unsubscribe and preference pages' own words, per language, and how a contact's language picks them.

A contact's locale is walked along its CLDR fallback chain (``content.selection.locale_chain``: ``es-MX`` →
``es-419`` → ``es``) and the first language this catalogue holds is used; English is the last resort. Every
language has every key (a test checks), so a page is never half translated.
"""

from __future__ import annotations

from content.selection import locale_chain

FALLBACK = "en"

CATALOGUE: dict[str, dict[str, str]] = {
    "en": {
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_question": "Do you want to stop receiving our marketing emails?",
        "unsubscribe_button": "Unsubscribe",
        "unsubscribed_title": "You are unsubscribed",
        "unsubscribed_text": "You will not receive our marketing emails any more.",
        "preferences_title": "Or tell us what you would like",
        "preferences_intro": "Tell us once: every email we send you from now on follows it.",
        "language": "Language",
        "interests": "What interests you",
        "frequency": "How often",
        "frequency_none": "Whenever we have news",
        "frequency_weekly": "At most once a week",
        "frequency_monthly": "At most once a month",
        "consents": "What you allow",
        "consent_marketing": "Marketing emails",
        "consent_tracking": "Counting opens and clicks",
        "consent_profiling": "Picking content by what you click",
        "save": "Save my preferences",
        "saved": "Your preferences are saved.",
        "invalid": "Please check your choices and try again.",
        "expired_title": "This form has expired",
        "expired_text": "Nothing was changed: the form was open too long, or your browser no longer has its cookie. "
        "Open it again and make your choices once more.",
        "expired_link": "Open the form again",
        "not_found_title": "Page not found",
        "not_found_text": "This address leads to no page. If you copied it from an email, check that it is complete.",
        "not_allowed_title": "This page cannot be used this way",
        "not_allowed_text": "Open the link from the email in your browser.",
    },
    "es": {
        "unsubscribe_title": "Darse de baja",
        "unsubscribe_question": "¿Quiere dejar de recibir nuestros correos comerciales?",
        "unsubscribe_button": "Darme de baja",
        "unsubscribed_title": "Se ha dado de baja",
        "unsubscribed_text": "Ya no recibirá nuestros correos comerciales.",
        "preferences_title": "O díganos qué prefiere",
        "preferences_intro": "Díganoslo una vez: cada correo que le enviemos lo tendrá en cuenta.",
        "language": "Idioma",
        "interests": "Qué le interesa",
        "frequency": "Con qué frecuencia",
        "frequency_none": "Cuando tengamos novedades",
        "frequency_weekly": "Como mucho una vez por semana",
        "frequency_monthly": "Como mucho una vez al mes",
        "consents": "Qué nos permite",
        "consent_marketing": "Correos comerciales",
        "consent_tracking": "Contar aperturas y clics",
        "consent_profiling": "Elegir contenidos según sus clics",
        "save": "Guardar mis preferencias",
        "saved": "Sus preferencias se han guardado.",
        "invalid": "Revise sus opciones e inténtelo de nuevo.",
        "expired_title": "Este formulario ha caducado",
        "expired_text": "No se ha cambiado nada: el formulario estuvo abierto demasiado tiempo o su navegador ya no "
        "tiene su cookie. Ábralo de nuevo y vuelva a elegir.",
        "expired_link": "Abrir el formulario de nuevo",
        "not_found_title": "Página no encontrada",
        "not_found_text": "Esta dirección no lleva a ninguna página. "
        "Si la copió de un correo, compruebe que está completa.",
        "not_allowed_title": "Esta página no se puede usar así",
        "not_allowed_text": "Abra el enlace del correo en su navegador.",
    },
    "fr": {
        "unsubscribe_title": "Se désabonner",
        "unsubscribe_question": "Voulez-vous ne plus recevoir nos e-mails commerciaux ?",
        "unsubscribe_button": "Me désabonner",
        "unsubscribed_title": "Vous êtes désabonné",
        "unsubscribed_text": "Vous ne recevrez plus nos e-mails commerciaux.",
        "preferences_title": "Ou dites-nous ce que vous préférez",
        "preferences_intro": "Dites-le-nous une fois : chaque e-mail que nous vous enverrons en tiendra compte.",
        "language": "Langue",
        "interests": "Ce qui vous intéresse",
        "frequency": "À quelle fréquence",
        "frequency_none": "Dès que nous avons du nouveau",
        "frequency_weekly": "Au plus une fois par semaine",
        "frequency_monthly": "Au plus une fois par mois",
        "consents": "Ce que vous autorisez",
        "consent_marketing": "E-mails commerciaux",
        "consent_tracking": "Compter les ouvertures et les clics",
        "consent_profiling": "Choisir le contenu selon vos clics",
        "save": "Enregistrer mes préférences",
        "saved": "Vos préférences sont enregistrées.",
        "invalid": "Vérifiez vos choix et réessayez.",
        "expired_title": "Ce formulaire a expiré",
        "expired_text": "Rien n'a été modifié : le formulaire est resté ouvert trop longtemps, ou votre navigateur "
        "n'a plus son cookie. Ouvrez-le à nouveau et refaites vos choix.",
        "expired_link": "Ouvrir à nouveau le formulaire",
        "not_found_title": "Page introuvable",
        "not_found_text": "Cette adresse ne mène à aucune page. "
        "Si vous l'avez copiée d'un e-mail, vérifiez qu'elle est complète.",
        "not_allowed_title": "Cette page ne s'utilise pas ainsi",
        "not_allowed_text": "Ouvrez le lien de l'e-mail dans votre navigateur.",
    },
    "de": {
        "unsubscribe_title": "Abmelden",
        "unsubscribe_question": "Möchten Sie keine Werbe-E-Mails mehr von uns erhalten?",
        "unsubscribe_button": "Abmelden",
        "unsubscribed_title": "Sie sind abgemeldet",
        "unsubscribed_text": "Sie erhalten keine Werbe-E-Mails mehr von uns.",
        "preferences_title": "Oder sagen Sie uns, was Sie möchten",
        "preferences_intro": "Sagen Sie es uns einmal: Jede E-Mail von uns richtet sich danach.",
        "language": "Sprache",
        "interests": "Was Sie interessiert",
        "frequency": "Wie oft",
        "frequency_none": "Wann immer es Neues gibt",
        "frequency_weekly": "Höchstens einmal pro Woche",
        "frequency_monthly": "Höchstens einmal im Monat",
        "consents": "Was Sie erlauben",
        "consent_marketing": "Werbe-E-Mails",
        "consent_tracking": "Öffnungen und Klicks zählen",
        "consent_profiling": "Inhalte nach Ihren Klicks auswählen",
        "save": "Meine Einstellungen speichern",
        "saved": "Ihre Einstellungen sind gespeichert.",
        "invalid": "Bitte prüfen Sie Ihre Auswahl und versuchen Sie es erneut.",
        "expired_title": "Dieses Formular ist abgelaufen",
        "expired_text": "Es wurde nichts geändert: Das Formular war zu lange geöffnet, oder Ihr Browser hat sein "
        "Cookie nicht mehr. Öffnen Sie es erneut und treffen Sie Ihre Auswahl noch einmal.",
        "expired_link": "Formular erneut öffnen",
        "not_found_title": "Seite nicht gefunden",
        "not_found_text": "Diese Adresse führt zu keiner Seite. "
        "Wenn Sie sie aus einer E-Mail kopiert haben, prüfen Sie, ob sie vollständig ist.",
        "not_allowed_title": "Diese Seite lässt sich so nicht verwenden",
        "not_allowed_text": "Öffnen Sie den Link aus der E-Mail in Ihrem Browser.",
    },
}


def page_language(contact_locale: str | None) -> str:
    """The catalogue language for a contact's locale: the first of its CLDR chain held here, else English."""
    for key in locale_chain(contact_locale, FALLBACK):
        if key in CATALOGUE:
            return key
    return FALLBACK


def visitor_language(accept_languages) -> str:
    """The catalogue language for a visitor nobody knows (a 404): their most preferred Accept-Language whose
    primary language this catalogue holds (``de-AT`` reads ``de``), else English.

    ``accept_languages`` is Werkzeug's ``request.accept_languages`` (its values in order of preference).
    """
    for value, _quality in accept_languages:
        primary = value.replace("_", "-").split("-")[0].lower()
        if primary in CATALOGUE:
            return primary
    return FALLBACK


def strings(language: str) -> dict[str, str]:
    """The page strings of ``language`` (a key of CATALOGUE)."""
    return CATALOGUE[language]
