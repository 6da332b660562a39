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
    },
}


def page_language(contact_locale: str | None) -> str:
    """The catalogue language for a contact's locale: the first of its CLDR chain held here, else English."""
    for key in locale_chain(contact_locale, FALLBACK):
        if key in CATALOGUE:
            return key
    return FALLBACK


def strings(language: str) -> dict[str, str]:
    """The page strings of ``language`` (a key of CATALOGUE)."""
    return CATALOGUE[language]
