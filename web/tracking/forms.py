"""The preference form: language, interests, frequency, consent per purpose, or unsubscribe (CSRF-protected)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, RadioField, SelectMultipleField, SubmitField
from wtforms.validators import Optional
from wtforms.widgets import CheckboxInput, ListWidget

from segments.preferences import FREQUENCIES, PURPOSES


class CheckboxesField(SelectMultipleField):
    """Several choices as checkboxes; a choice not offered fails validation."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class PreferencesForm(FlaskForm):
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
