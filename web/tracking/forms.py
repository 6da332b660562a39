"""The preference form: language, interests, frequency, consent per purpose, or unsubscribe (CSRF-protected)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, RadioField, SelectMultipleField, SubmitField
from wtforms.validators import Optional
from wtforms.widgets import CheckboxInput, ListWidget

from segments.preferences import FREQUENCIES, PURPOSES

# How long a preference form may stay open before it must be opened again (its CSRF token's lifetime, Flask-WTF's
# WTF_CSRF_TIME_LIMIT): a day, so a tab left open over a working day still saves; Flask-WTF's own hour lost the
# choices of a reader who came back after lunch. The token is also bound to the browser session's cookie.
FORM_LIFETIME_SECONDS = 24 * 3600


class CheckboxesField(SelectMultipleField):
    """Several choices as checkboxes; a choice not offered fails validation."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class PreferencesForm(FlaskForm):
    """The form; FlaskForm adds ``csrf_token`` and checks it in ``validate()`` (the view relies on that)."""

    locale = RadioField(validators=[Optional()])
    interests = CheckboxesField()
    frequency = RadioField()
    marketing = BooleanField()
    tracking = BooleanField()
    profiling = BooleanField()
    save = SubmitField()
    unsubscribe = SubmitField()


def preferences_form(words: dict[str, str], languages: list[tuple[str, str]], tags: list[str], **kwargs):
    """The form in the page's language: ``languages`` as (locale key, name), ``tags`` as offered interests."""
    form = PreferencesForm(**kwargs)
    form.locale.label.text = words["language"]
    form.locale.choices = languages
    form.interests.label.text = words["interests"]
    form.interests.choices = [(tag, tag) for tag in tags]
    form.frequency.label.text = words["frequency"]
    form.frequency.choices = [(key, words[f"frequency_{key}"]) for key in FREQUENCIES]
    for purpose in PURPOSES:
        form[purpose].label.text = words[f"consent_{purpose}"]
    form.save.label.text = words["save"]
    form.unsubscribe.label.text = words["unsubscribe_button"]
    if not languages:
        del form.locale
    return form
