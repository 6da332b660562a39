"""The segment rule language: validation into the typed rule tree (``segments.rule_tree``), and rule files.

A rule is a JSON or YAML tree (the grammar is in ``docs/segments.md``)::

    rule      := {"all": [rule, ...]} | {"any": [rule, ...]} | {"not": rule} | condition
    condition := {"field": F, "op": OP, "value": V}
               | {"attr": NAME, "op": OP, "value": V}
               | {"interest": TAG, "op": CMP, "value": NUMBER}
               | {"event": {"type": T, "channel": C?, "within_days": D?, "where": {...}?},
                  "op": CMP, "value": COUNT}
               | {"consent": PURPOSE, "op": "eq", "value": true|false}

:func:`parse_rules` checks a tree with marshmallow schemas and returns it as
frozen dataclasses; :class:`RuleError` lists every problem with its path
(``all[2].op: must be one of: eq, gt, gte, lt, lte``) so a marketer can fix a
file in one pass. :func:`rule_to_data` turns a tree back into plain JSON data.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, post_load
from marshmallow.validate import OneOf

from segments.imports.values import BadValue
from segments.imports.values import email as canonical_email
from segments.interests import MAX_SCORE
from segments.models import CHANNEL_LENGTH, CONTACT_STATUSES, TAG_LENGTH
from segments.plain_data import TooBig, child_path, json_deeper_than, refused_text, yaml_depth
from segments.rule_tree import (  # noqa: F401  (the rule tree is part of this module's interface)
    RULE_TYPES,
    AllOf,
    AnyOf,
    AttrCondition,
    ConsentCondition,
    EventCondition,
    FieldCondition,
    InterestCondition,
    Not,
    Rule,
    RuleError,
    Scalar,
    iter_conditions,
    mentions_status,
    rule_to_data,
)

MAX_DEPTH = 20  # nested all/any/not levels
MAX_CONDITIONS = 500
MAX_GROUPS = 500
# Every listed value becomes a bound parameter; SQLite allows 32,766 per statement.
MAX_LISTED_VALUES = 20_000
MAX_WHERE_PROPERTIES = 20
# Keys and values a rule may hold in all, far above what the limits above allow.
MAX_VALUES = 100_000
# Lists and mappings in a rules file: two per all/any level, a few more for a condition.
MAX_NESTING = 2 * MAX_DEPTH + 10
MAX_FILE_BYTES = 4 * 1024 * 1024
KINDS = ("all", "any", "not", "field", "attr", "interest", "event", "consent")

# --- values per field and operator ------------------------------------------

STRING_FIELDS = ("email", "first_name", "last_name", "locale", "timezone", "status")
STRING_OPS = ("eq", "ne", "in", "not_in", "contains", "startswith", "exists")
DATE_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "within_days", "older_than_days", "exists")
FIELD_OPS = {**{field: STRING_OPS for field in STRING_FIELDS}, "created_at": DATE_OPS}
ATTR_OPS = STRING_OPS + ("gt", "gte", "lt", "lte", "within_days", "older_than_days")
CMP_OPS = ("eq", "gt", "gte", "lt", "lte")
ALL_OPS = ATTR_OPS  # every op of the grammar, in its order
MAX_NAME_LENGTH = 64
MAX_LIST_LENGTH = 10_000
MAX_DAYS = 36_500  # a century; also keeps now - N days inside datetime's range


def _value_error(message: str, index: int | None = None) -> ValidationError:
    return ValidationError({"value": [message] if index is None else {index: [message]}})


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too big for a float
        return False


def _name(max_length: int):
    def check(value: Any) -> None:
        if not isinstance(value, str) or not value or len(value) > max_length:
            raise ValidationError(f"must be a non-empty string of at most {max_length} characters")

    return check


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, (str, bool)) or _is_number(value):
        return None
    return "must be a string, a finite number, or true/false"


def _boolean(value: Any, op: str) -> bool:
    if not isinstance(value, bool):
        raise _value_error(f"must be true or false for op {op!r}")
    return value


def _days(value: Any, *, positive: bool = False, field_name: str = "value") -> float:
    if not _is_number(value) or value < 0 or (positive and value == 0) or value > MAX_DAYS:
        low = "more than 0" if positive else "0"
        raise ValidationError(f"must be a number of days from {low} to {MAX_DAYS}", field_name)
    return value


def _list(value: Any, op: str, check) -> tuple:
    if not isinstance(value, list):
        raise _value_error(f"must be a list for op {op!r}")
    if not value:
        raise _value_error(f"must not be an empty list for op {op!r}")
    if len(value) > MAX_LIST_LENGTH:
        raise _value_error(f"must list at most {MAX_LIST_LENGTH} values, not {len(value)}")
    problems = {}
    for index, item in enumerate(value):
        problem = check(item)
        if problem:
            problems[index] = [problem]
    if problems:
        raise ValidationError({"value": problems})
    return tuple(value)


def _datetime(value: Any) -> datetime:
    """An ISO-8601 date or date-time; naive means UTC, a date means its midnight UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise _value_error("must be an ISO-8601 date or date-time, e.g. 2024-05-01 or 2024-05-01T09:30:00Z")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _string_problem(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _status_problem(value: Any) -> str | None:
    return None if value in CONTACT_STATUSES else f"must be one of: {', '.join(CONTACT_STATUSES)}"


def _field_value(field: str, op: str, value: Any) -> Any:
    """The checked value of a field condition; email values are normalized like stored emails."""
    if op not in FIELD_OPS[field]:
        raise ValidationError(f"must be one of: {', '.join(FIELD_OPS[field])} for field {field!r}", "op")
    if op == "exists":
        return _boolean(value, op)
    if field == "created_at":
        return _days(value) if op in ("within_days", "older_than_days") else _datetime(value)
    check = _status_problem if field == "status" and op in ("eq", "ne", "in", "not_in") else _string_problem
    if op in ("in", "not_in"):
        values = _list(value, op, check)
        return tuple(email_value(v, op) for v in values) if field == "email" else values
    problem = check(value)
    if not problem and op in ("contains", "startswith") and value == "":
        problem = f"must not be empty for op {op!r}"
    if problem:
        raise _value_error(problem)
    return email_value(value, op) if field == "email" else value


def email_value(value: str, op: str) -> str:
    """An email rule's value as addresses are stored: a whole address (eq, ne, in, not_in) in canonical form, else
    lower-cased, so that ``jonas@xn--bcher-kva.example`` finds ``jonas@bücher.example``."""
    if op in ("eq", "ne", "in", "not_in"):
        try:
            return canonical_email(value)
        except BadValue:
            pass
    return value.lower()


def _attr_value(op: str, value: Any) -> Any:
    """The checked value of an attribute condition."""
    problem = None
    if op in ("eq", "ne"):
        problem = _scalar_problem(value)
    elif op in ("in", "not_in"):
        return _list(value, op, _scalar_problem)
    elif op in ("gt", "gte", "lt", "lte"):
        problem = None if _is_number(value) else f"must be a finite number for op {op!r}"
    elif op in ("contains", "startswith"):
        problem = None if isinstance(value, str) and value else f"must be a non-empty string for op {op!r}"
    elif op == "exists":
        return _boolean(value, op)
    else:  # within_days, older_than_days
        return _days(value)
    if problem:
        raise _value_error(problem)
    return value


def _interest_value(value: Any) -> float:
    """A score to compare with: one on the scale scores are kept on (a threshold past it could never match)."""
    if not _is_number(value) or not 0 <= value <= MAX_SCORE:
        raise _value_error(f"must be a score from 0 to {MAX_SCORE:g}, the scale interests are kept on")
    return value


def _count_value(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _value_error("must be a whole number of events from 0 up")
    return value


# --- schemas ----------------------------------------------------------------

_MESSAGES = {"required": "is required", "null": "must not be null"}


def _one_of(choices) -> OneOf:
    return OneOf(choices, error="must be one of: {choices}")


def _raw(**kwargs) -> fields.Raw:
    return fields.Raw(error_messages=_MESSAGES, **kwargs)


class _Strict(Schema):
    class Meta:
        unknown = RAISE

    error_messages: ClassVar[dict[str, str]] = {"unknown": "unknown key", "type": "must be a mapping"}


class _RuleField(fields.Field):
    """A nested rule: dispatches on the one key that says what kind of rule it is."""

    default_error_messages: ClassVar[dict[str, str]] = {**_MESSAGES, "null": "must be a rule, not null"}

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise ValidationError(f"must be a mapping with one of the keys: {', '.join(KINDS)}")
        kinds = [kind for kind in KINDS if kind in value]
        if not kinds:
            found = ", ".join(str(key) for key in value) or "none"
            raise ValidationError(f"must have one of the keys: {', '.join(KINDS)} (found: {found})")
        if len(kinds) > 1:
            raise ValidationError(f"has both {kinds[0]!r} and {kinds[1]!r}: write each rule as its own mapping")
        try:
            return _SCHEMAS[kinds[0]].load(value)
        except ValidationError as err:
            raise ValidationError(err.messages) from None


def _rule_list(key: str) -> fields.List:
    return fields.List(
        _RuleField(), required=True, data_key=key, error_messages={**_MESSAGES, "invalid": "must be a list of rules"}
    )


class _AllSchema(_Strict):
    rules = _rule_list("all")

    @post_load
    def _build(self, data, **_):
        return AllOf(tuple(data["rules"]))


class _AnySchema(_Strict):
    rules = _rule_list("any")

    @post_load
    def _build(self, data, **_):
        return AnyOf(tuple(data["rules"]))


class _NotSchema(_Strict):
    rule = _RuleField(required=True, data_key="not")

    @post_load
    def _build(self, data, **_):
        return Not(data["rule"])


class _FieldSchema(_Strict):
    field = _raw(required=True, validate=_one_of(tuple(FIELD_OPS)))
    op = _raw(required=True, validate=_one_of(ALL_OPS))
    value = _raw(required=True, allow_none=True)

    @post_load
    def _build(self, data, **_):
        return FieldCondition(data["field"], data["op"], _field_value(data["field"], data["op"], data["value"]))


class _AttrSchema(_Strict):
    attr = _raw(required=True, validate=_name(MAX_NAME_LENGTH))
    op = _raw(required=True, validate=_one_of(ATTR_OPS))
    value = _raw(required=True, allow_none=True)

    @post_load
    def _build(self, data, **_):
        return AttrCondition(data["attr"], data["op"], _attr_value(data["op"], data["value"]))


class _InterestSchema(_Strict):
    interest = _raw(required=True, validate=_name(TAG_LENGTH))
    op = _raw(required=True, validate=_one_of(CMP_OPS))
    value = _raw(required=True, allow_none=True)

    @post_load
    def _build(self, data, **_):
        return InterestCondition(data["interest"].lower(), data["op"], _interest_value(data["value"]))


def _where(value) -> None:
    if not isinstance(value, dict):
        raise ValidationError("must be a mapping of event properties to values")
    if len(value) > MAX_WHERE_PROPERTIES:
        raise ValidationError(f"must name at most {MAX_WHERE_PROPERTIES} properties")
    problems = {}
    for key, item in value.items():
        try:
            _name(MAX_NAME_LENGTH)(key)
        except ValidationError as err:
            problems[str(key)] = err.messages
            continue
        problem = _scalar_problem(item)
        if problem:
            problems[str(key)] = [problem]
    if problems:
        raise ValidationError(problems)


class _EventSpecSchema(_Strict):
    type = _raw(required=True, validate=_name(MAX_NAME_LENGTH))
    channel = _raw(load_default=None, allow_none=True, validate=_name(CHANNEL_LENGTH))
    within_days = _raw(load_default=None, allow_none=True)
    where = _raw(load_default=None, allow_none=True, validate=_where)

    @post_load
    def _build(self, data, **_):
        if data["within_days"] is not None:
            data["within_days"] = _days(data["within_days"], positive=True, field_name="within_days")
        return data


class _EventSchema(_Strict):
    event = fields.Nested(_EventSpecSchema, required=True, error_messages=_MESSAGES)
    op = _raw(required=True, validate=_one_of(CMP_OPS))
    value = _raw(required=True, allow_none=True)

    @post_load
    def _build(self, data, **_):
        spec = data["event"]
        where = tuple(sorted((spec["where"] or {}).items()))
        return EventCondition(
            spec["type"], spec["channel"], spec["within_days"], where, data["op"], _count_value(data["value"])
        )


class _ConsentSchema(_Strict):
    consent = _raw(required=True, validate=_name(TAG_LENGTH))
    op = _raw(required=True, validate=_one_of(("eq",)))
    value = _raw(required=True, allow_none=True)

    @post_load
    def _build(self, data, **_):
        if not isinstance(data["value"], bool):
            raise ValidationError("must be true or false", field_name="value")
        return ConsentCondition(data["consent"], data["value"])


_SCHEMAS: dict[str, Schema] = {
    "all": _AllSchema(),
    "any": _AnySchema(),
    "not": _NotSchema(),
    "field": _FieldSchema(),
    "attr": _AttrSchema(),
    "interest": _InterestSchema(),
    "event": _EventSchema(),
    "consent": _ConsentSchema(),
}


# --- parsing ----------------------------------------------------------------


def parse_rules(data: Any) -> Rule:
    """Validate a rule tree given as plain data (parsed JSON or YAML) and return it typed.

    A tree already typed is checked for size, depth and text the same way.
    Raises RuleError, and only RuleError, for anything that is not a valid rule:
    among others a tree nested deeper than MAX_DEPTH (found without recursion),
    and a key or string holding NUL or a lone surrogate, which PostgreSQL
    refuses (the path names it: ``all[2].value``).
    """
    if isinstance(data, RULE_TYPES):
        _check_typed(data)
        return data
    _check_size(data)
    _check_text(data)
    try:
        rule = _RuleField(required=True).deserialize(data)
    except ValidationError as err:
        raise RuleError(_flatten(err.messages)) from None
    listed = sum(len(c.value) for c in iter_conditions(rule) if getattr(c, "op", None) in ("in", "not_in"))
    if listed > MAX_LISTED_VALUES:
        raise RuleError([("", f"lists {listed} values in all; a rule may list at most {MAX_LISTED_VALUES}")])
    return rule


def _check_text(data: Any, path: str = "") -> None:
    """Refuse keys and strings the databases cannot store, naming each one's path."""
    try:
        problems = refused_text(data, path, max_values=MAX_VALUES)
    except TooBig as err:
        raise RuleError([(path, f"{err}; split the segment")]) from None
    if problems:
        raise RuleError(problems)


def _check_size(data: Any) -> None:
    """Refuse trees too deep or too big before walking them recursively."""
    conditions = groups = 0
    stack = [(data, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        if not isinstance(node, dict):
            continue
        children = []
        for key in ("all", "any"):
            if isinstance(node.get(key), list):
                children += [(child, f"{path}{'.' if path else ''}{key}[{i}]") for i, child in enumerate(node[key])]
        if isinstance(node.get("not"), dict):
            children.append((node["not"], f"{path}{'.' if path else ''}not"))
        if children or any(key in node for key in ("all", "any", "not")):
            groups += 1
            _check_counts(path, depth, conditions, groups)
        else:
            conditions += 1
            _check_counts(path, 0, conditions, groups)
        stack.extend((child, where, depth + 1) for child, where in children)


def _check_typed(rule: Rule) -> None:
    """The checks of :func:`_check_size` and :func:`_check_text` for a tree built as dataclasses."""
    conditions = groups = 0
    stack = [(rule, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, (AllOf, AnyOf)):
            groups += 1
            key = "all" if isinstance(node, AllOf) else "any"
            stack.extend((child, child_path(child_path(path, key), i), depth + 1) for i, child in enumerate(node.rules))
        elif isinstance(node, Not):
            groups += 1
            stack.append((node.rule, child_path(path, "not"), depth + 1))
        elif isinstance(node, RULE_TYPES):
            conditions += 1
            _check_text(rule_to_data(node), path)  # a condition holds no rule: rule_to_data does not recurse
        else:
            raise RuleError([(path, f"must be a rule, not {type(node).__name__}")])
        _check_counts(path, depth if isinstance(node, (AllOf, AnyOf, Not)) else 0, conditions, groups)


def _check_counts(path: str, depth: int, conditions: int, groups: int) -> None:
    if depth > MAX_DEPTH:
        raise RuleError([(path, f"nests more than {MAX_DEPTH} levels of all/any/not; flatten the rule")])
    if conditions > MAX_CONDITIONS:
        raise RuleError([("", f"has more than {MAX_CONDITIONS} conditions; split the segment")])
    if groups > MAX_GROUPS:
        raise RuleError([("", f"has more than {MAX_GROUPS} all/any/not groups; simplify the rule")])


# marshmallow files a Dict field's errors under "key" or "value" below the entry
# (``interests.pizza.value``); a list index (``layouts[0].key``) is not an entry.
_DICT_ENTRY_MARKER = re.compile(r"(?<![0-9]\])\.(?:key|value)(?=$|[.\[])")


def error_paths(messages: Any) -> list[tuple[str, str]]:
    """Any marshmallow schema's errors as (``layouts[0].slots``, message) pairs, without Dict entry markers."""
    return [(_DICT_ENTRY_MARKER.sub("", path), message) for path, message in _flatten(messages)]


def _flatten(messages: Any, path: str = "") -> list[tuple[str, str]]:
    """marshmallow's nested error dict as (``all[2].op``, message) pairs."""
    if isinstance(messages, str):
        return [(path, messages)]
    if isinstance(messages, list):
        return [pair for message in messages for pair in _flatten(message, path)]
    problems = []
    for key, nested in messages.items():
        # A property or key that would blur the path is shown quoted.
        problems += _flatten(nested, path if key == "_schema" else child_path(path, key))
    return problems


# --- files ------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML that leaves dates as strings: the rule checks read ISO-8601 text themselves."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


_TOO_DEEP = object()


def load_rules_file(path: str | Path) -> Rule:
    """Read and validate a rule tree from a .json, .yaml or .yml file; errors name the file."""
    source = str(path)
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise RuleError([("", "a rules file must end in .json, .yaml or .yml")], source)
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise RuleError([("", f"is larger than {MAX_FILE_BYTES // 1024 // 1024} MB; split the segment")], source)
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise RuleError([("", f"cannot read the file: {err}")], source) from None
    try:
        # The parsers recurse once per level: the nesting is measured first, without recursion.
        if json_deeper_than(text, MAX_NESTING) if suffix == ".json" else yaml_depth(text, _YamlLoader) > MAX_NESTING:
            data = _TOO_DEEP
        else:
            data = json.loads(text) if suffix == ".json" else yaml.load(text, Loader=_YamlLoader)
    except json.JSONDecodeError as err:
        raise RuleError([(f"line {err.lineno}, column {err.colno}", f"not valid JSON: {err.msg}")], source) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise RuleError([(where, f"not valid YAML: {problem}")], source) from None
    except ValueError as err:  # a number too long to convert, among others
        raise RuleError([("", f"cannot be read: {err}")], source) from None
    if data is _TOO_DEEP:
        problem = f"nests lists and mappings more than {MAX_NESTING} levels deep; flatten the rule"
        raise RuleError([("", problem)], source)
    if data is None:
        raise RuleError([("", "the file holds no rule")], source)
    try:
        return parse_rules(data)
    except RuleError as err:
        raise err.in_source(source) from None
