"""A plain-Python reading of the segment rule language, to check the SQL compiler against.

Written from the rule semantics in docs/segments.md, not from the compiler: it
walks the raw rule data (as a marketer writes it) over plain contact dicts::

    {"id": 1, "email": "ann@example.com", "first_name": ..., "last_name": ...,
     "locale": ..., "timezone": ..., "status": "active", "created_at": datetime,
     "attributes": {...},
     "interests": {tag: (score, updated_at)},
     "events": [{"type": ..., "channel": ..., "occurred_at": datetime, "properties": {...}}],
     "consents": {purpose: granted}}

Results are three-valued: True, False, or None when a decayed interest score
lands so close to a threshold that floating-point rounding in SQL could fall
either way. ``all``/``any``/``not`` combine them with Kleene logic, so only a
verdict that truly hinges on such a tie is None.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from segments.rules import email_value

_DATE_PREFIX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIE = 1e-9


def evaluate(rule: dict, contacts: list[dict], *, now: datetime, half_life_days: float) -> dict[int, bool | None]:
    """Each contact's id mapped to whether the segment selects it (None: too close to call)."""
    implicit_active = not _mentions_status(rule)
    verdicts = {}
    for contact in contacts:
        verdict = _match(rule, contact, now, half_life_days)
        if implicit_active and contact["status"] != "active":
            verdict = False
        verdicts[contact["id"]] = verdict
    return verdicts


def _mentions_status(rule: dict) -> bool:
    if "all" in rule or "any" in rule:
        return any(_mentions_status(r) for r in rule.get("all", rule.get("any")))
    if "not" in rule:
        return _mentions_status(rule["not"])
    return rule.get("field") == "status"


def _match(rule: dict, contact: dict, now: datetime, half_life_days: float) -> bool | None:
    if "all" in rule:
        verdicts = [_match(r, contact, now, half_life_days) for r in rule["all"]]
        return False if False in verdicts else (None if None in verdicts else True)
    if "any" in rule:
        verdicts = [_match(r, contact, now, half_life_days) for r in rule["any"]]
        return True if True in verdicts else (None if None in verdicts else False)
    if "not" in rule:
        verdict = _match(rule["not"], contact, now, half_life_days)
        return None if verdict is None else not verdict
    op, value = rule["op"], rule["value"]
    if "field" in rule:
        if rule["field"] == "created_at":
            return _created_at(contact["created_at"], op, value, now)
        return _text_field(contact[rule["field"]], op, value, lower=rule["field"] == "email")
    if "attr" in rule:
        return _attr(contact["attributes"], rule["attr"], op, value, now)
    if "interest" in rule:
        return _interest(contact["interests"].get(rule["interest"].lower()), op, value, now, half_life_days)
    if "event" in rule:
        count = sum(1 for event in contact["events"] if _event_matches(event, rule["event"], now))
        return _compare(count, op, value)
    if "consent" in rule:
        return (contact["consents"].get(rule["consent"]) is True) == value
    raise ValueError(f"not a rule: {rule!r}")


def _compare(left, op: str, right) -> bool:
    return {
        "eq": left == right,
        "ne": left != right,
        "gt": left > right,
        "gte": left >= right,
        "lt": left < right,
        "lte": left <= right,
    }[op]


def _text_field(stored: str | None, op: str, value, *, lower: bool) -> bool:
    if lower:  # emails are stored in canonical form, so the rule's values are normalized the same way
        value = [email_value(v, op) for v in value] if isinstance(value, list) else value
        value = email_value(value, op) if isinstance(value, str) else value
    if op == "exists":
        return (stored is not None and stored != "") == value
    if op == "ne":
        return stored is None or stored != value
    if op == "not_in":
        return stored is None or stored not in value
    if stored is None:
        return False
    if op == "eq":
        return stored == value
    if op == "in":
        return stored in value
    if op == "contains":
        return value in stored
    if op == "startswith":
        return stored.startswith(value)
    raise ValueError(op)


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed


def _created_at(stored: datetime, op: str, value, now: datetime) -> bool:
    if op == "exists":
        return (stored is not None) == value
    if op == "within_days":
        return stored >= now - timedelta(days=value)
    if op == "older_than_days":
        return stored < now - timedelta(days=value)
    return _compare(stored, op, _instant(value))


def _kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"  # null, objects and arrays equal nothing a rule can name


def _json_equal(stored, wanted) -> bool:
    kind = _kind(stored)
    if kind != _kind(wanted):
        return False
    return float(stored) == float(wanted) if kind == "number" else stored == wanted


def _attr(attributes: dict, name: str, op: str, value, now: datetime) -> bool:
    present = name in attributes
    stored = attributes.get(name)
    kind = _kind(stored) if present else "missing"
    if op == "eq":
        return present and _json_equal(stored, value)
    if op == "ne":
        return not (present and _json_equal(stored, value))
    if op == "in":
        return present and any(_json_equal(stored, v) for v in value)
    if op == "not_in":
        return not (present and any(_json_equal(stored, v) for v in value))
    if op == "exists":
        return (present and stored is not None and stored != "") == value
    if op in ("gt", "gte", "lt", "lte"):
        return kind == "number" and _compare(float(stored), op, float(value))
    if kind != "string":
        return False
    if op == "contains":
        return value in stored
    if op == "startswith":
        return stored.startswith(value)
    if not _DATE_PREFIX.match(stored):
        return False
    cutoff = (now - timedelta(days=value)).date().isoformat()
    return stored[:10] >= cutoff if op == "within_days" else stored[:10] < cutoff


def _interest(row: tuple[float, datetime] | None, op: str, value, now: datetime, half_life_days: float) -> bool | None:
    if row is None:
        return _compare(0.0, op, value)
    score, updated_at = row
    half_lives = max((now - updated_at).total_seconds(), 0) / (half_life_days * 86400)
    if half_lives > 1000 or abs(score) < 1e-20:  # negligible: counts as 0
        return _compare(0.0, op, value)
    if half_lives == 0:  # no decay (a future timestamp counts as now): exact in SQL too
        return _compare(score, op, value)
    decayed = score * 0.5**half_lives
    if abs(decayed - value) <= _TIE * max(1.0, abs(value)):
        return None
    return _compare(decayed, op, value)


def _event_matches(event: dict, spec: dict, now: datetime) -> bool:
    if event["type"] != spec["type"]:
        return False
    if spec.get("channel") is not None and event["channel"] != spec["channel"]:
        return False
    if spec.get("within_days") is not None and event["occurred_at"] < now - timedelta(days=spec["within_days"]):
        return False
    properties = event["properties"]
    return all(key in properties and _json_equal(properties[key], v) for key, v in (spec.get("where") or {}).items())
