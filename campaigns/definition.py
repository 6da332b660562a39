"""The campaign file: what a marketer writes in YAML, checked field by field.

Top-level keys (the contract): ``name``; ``segment`` (a saved segment's name)
or ``rules`` (an inline rule tree); ``layout``; ``from``; ``reply_to``;
``subject`` and ``preheader`` (Jinja templates, or one per locale);
optional ``slots`` (filters per slot) and ``frequency_cap``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from email_validator import EmailNotValidError, validate_email
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from content.checking import check_template
from content.selection import normalize_locale
from segments.imports.values import printable_text
from segments.plain_data import load_yaml
from segments.rules import RuleError, error_paths, parse_rules

_TAGS = fields.List(fields.String(), load_default=list)


class CampaignError(ValueError):
    """A campaign definition that cannot be used, with the file and field at fault."""


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_LOCALE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*")
_NAME_SPECIALS = set('<>@,;:"[]\\()')
ONE_ADDRESS = "must be exactly one address, written user@domain or Name <user@domain>"


def parse_mailbox(text: str) -> dict[str, str | None]:
    """One mailbox, ``Name <user@domain>`` or ``user@domain``: {"name", "email"}; ValueError says what is wrong.

    Our own reading, not ``email.utils.parseaddr`` (which takes the first of
    several addresses, differently across Python patch releases); the address
    is checked by email-validator and kept in the ASCII form it is sent in
    (an internationalized domain in IDNA form).
    """
    text = text.strip()
    if any(c in text for c in "\r\n\0"):
        raise ValueError("must be on one line")
    unquoted = _QUOTED.sub('""', text)
    if unquoted.count("@") > 1 or any(c in unquoted for c in ",;"):
        raise ValueError(f"{ONE_ADDRESS}: {text!r}")
    name = None
    spec = text
    if text.endswith(">") and "<" in unquoted:
        written, _, spec = text[:-1].rpartition("<")
        name = _display_name(written.strip(), text)
    try:
        checked = validate_email(spec.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"is not an email address: {text!r} ({exc})") from None
    return {"name": name, "email": checked.ascii_email}


def _display_name(written: str, text: str) -> str | None:
    """The display name as a recipient sees it: a quoted name unquoted; an unquoted one without specials."""
    if _QUOTED.fullmatch(written):
        return re.sub(r"\\(.)", r"\1", written[1:-1]) or None
    if _NAME_SPECIALS & set(written):
        raise ValueError(f"{ONE_ADDRESS} (put a name holding any of < > @ , ; : in double quotes): {text!r}")
    return written or None


class _Address(fields.String):
    """``Name <user@domain>`` or a bare address: exactly one mailbox (``parse_mailbox``)."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return parse_mailbox(super()._deserialize(value, attr, data, **kwargs))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class _Template(fields.Field):
    """A Jinja template (subject or preheader), or a mapping of locale to template; keys are normalized locales."""

    def __init__(self, kind: str, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind

    def _deserialize(self, value, attr, data, **kwargs):
        templates = value if isinstance(value, dict) else {"*": value}
        errors = {str(locale): self._problems(str(locale), source) for locale, source in templates.items()}
        errors = {locale: messages for locale, messages in errors.items() if messages}
        if errors:
            raise ValidationError(errors.get("*") or errors)
        return {_locale_key(str(locale)): source for locale, source in templates.items()}

    def _problems(self, locale: str, source) -> list[str]:
        if locale != "*" and not _LOCALE.fullmatch(locale):
            return ["must be a locale such as en or es-MX"]
        if not isinstance(source, str):
            return ["must be text"]
        return [f"template error: {p.message}" for p in check_template(source, self.kind, text=True)]


def _locale_key(locale: str) -> str:
    return locale if locale == "*" else normalize_locale(locale)


class _SlotSchema(Schema):
    tags = _TAGS
    exclude_tags = _TAGS
    interests = _TAGS
    blocks = _TAGS


class _CapSchema(Schema):
    max = fields.Integer(required=True, validate=validate.Range(min=1))
    days = fields.Float(required=True, validate=validate.Range(min=0, min_inclusive=False))


class _CampaignSchema(Schema):
    name = fields.String(required=True, validate=[validate.Length(min=1, max=200), printable_text])
    segment = fields.String(load_default=None)
    rules = fields.Raw(load_default=None)
    layout = fields.String(required=True)
    sender = _Address(required=True, data_key="from")
    reply_to = _Address(load_default=None)
    subject = _Template("subject", required=True)
    preheader = _Template("preheader", load_default=None)
    slots = fields.Dict(keys=fields.String(), values=fields.Nested(_SlotSchema), load_default=dict)
    frequency_cap = fields.Nested(_CapSchema, load_default=None)

    @validates_schema
    def _one_audience(self, data, **kwargs):
        if (data.get("segment") is None) == (data.get("rules") is None):
            raise ValidationError("give exactly one of `segment` (a saved segment) or `rules` (a rule tree)", "segment")
        if data.get("rules") is not None:
            try:
                parse_rules(data["rules"])
            except RuleError as exc:
                raise ValidationError(str(exc), "rules") from None


def parse_definition(data: Any, source: str = "campaign") -> dict[str, Any]:
    """The checked definition as stored on the campaign; CampaignError names the field."""
    if not isinstance(data, dict):
        raise CampaignError(f"{source}: must be a mapping with keys name, segment or rules, layout, from, subject")
    try:
        return _CampaignSchema().load(data)
    except ValidationError as exc:
        raise CampaignError(f"{source}: {_describe(exc.messages)}") from None


def load_definition(path: Path | str) -> dict[str, Any]:
    """Read and check a campaign YAML file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = load_yaml(raw.decode("utf-8-sig"))
    except OSError as exc:
        raise CampaignError(f"{path}: cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CampaignError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        raise CampaignError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_definition(data, str(path))


def _describe(messages) -> str:
    """Every marshmallow error as ``field 'path': message``, joined."""
    return "; ".join(f"field '{path}': {message.rstrip('.')}" for path, message in error_paths(messages))
