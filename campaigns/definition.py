"""The campaign file: what a marketer writes in YAML, checked field by field.

Top-level keys (the contract): ``name``; ``segment`` (a saved segment's name)
or ``rules`` (an inline rule tree); ``layout``; ``from``; ``reply_to``;
``subject`` and ``preheader`` (Jinja templates, or one per locale);
optional ``slots`` (filters per slot) and ``frequency_cap``.
"""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateSyntaxError
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from content.rendering import check_template
from segments.rules import RuleError, error_paths, parse_rules

_TAGS = fields.List(fields.String(), load_default=list)


class CampaignError(ValueError):
    """A campaign definition that cannot be used, with the file and field at fault."""


class _Address(fields.String):
    """``Name <user@domain>`` or a bare address, kept as written once checked."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if any(c in text for c in "\r\n\0"):
            raise ValidationError("must be on one line")
        name, address = parseaddr(text)
        if "@" not in address or address.startswith("@") or address.endswith("@"):
            raise ValidationError(f"is not an email address: {text!r}")
        return {"name": name or None, "email": address}


class _Template(fields.Field):
    """A Jinja template, or a mapping of locale to template."""

    def _deserialize(self, value, attr, data, **kwargs):
        templates = value if isinstance(value, dict) else {"*": value}
        for locale, source in templates.items():
            if not isinstance(source, str):
                raise ValidationError(f"{locale}: must be text")
            try:
                check_template(source, text=True)
            except TemplateSyntaxError as exc:
                raise ValidationError(f"template error: {exc.message}") from None
        return {str(k).lower().replace("_", "-"): v for k, v in templates.items()}


class _SlotSchema(Schema):
    tags = _TAGS
    exclude_tags = _TAGS
    interests = _TAGS
    blocks = _TAGS


class _CapSchema(Schema):
    max = fields.Integer(required=True, validate=validate.Range(min=1))
    days = fields.Float(required=True, validate=validate.Range(min=0, min_inclusive=False))


class _CampaignSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    segment = fields.String(load_default=None)
    rules = fields.Raw(load_default=None)
    layout = fields.String(required=True)
    sender = _Address(required=True, data_key="from")
    reply_to = _Address(load_default=None)
    subject = _Template(required=True)
    preheader = _Template(load_default=None)
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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CampaignError(f"{path}: cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        raise CampaignError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_definition(data, str(path))


def _describe(messages) -> str:
    """Every marshmallow error as ``field 'path': message``, joined."""
    return "; ".join(f"field '{path}': {message.rstrip('.')}" for path, message in error_paths(messages))
