"""The segment compiler: a rule tree becomes one SQL WHERE clause over contacts.

One statement answers a count or a preview, on SQLite and on PostgreSQL alike:
no Python loop per contact, and no user text in the SQL text. Every value,
attribute name, JSON path, tag and event type is a bound parameter.

Every condition compiles to an expression that is TRUE or FALSE, never NULL,
so ``not`` means "everyone the inner rule does not select" (a contact without
a locale is "not es"). Interest, event and consent conditions become
membership tests against subqueries that the indexes on interests(tag), events
(type, occurred_at, contact_id, channel) and the primary keys can answer; a
condition that holds for a contact with no rows at all (an interest ``lt 5``,
"fewer than 2 purchases") is written as the complement, so those contacts are
included.
"""

from __future__ import annotations

import operator
import re
from datetime import datetime, timedelta

from sqlalchemy import (
    Float,
    Integer,
    Select,
    String,
    Text,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from segments.interests import decayed_score_sql
from segments.models import Consent, Contact, Event, Interest
from segments.rules import (
    AllOf,
    AnyOf,
    AttrCondition,
    ConsentCondition,
    EventCondition,
    FieldCondition,
    InterestCondition,
    Not,
    Rule,
    mentions_status,
    parse_rules,
)

DIALECTS = ("sqlite", "postgresql")
_COMPARE = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
# Keys SQLite's JSON path syntax ($."key") reads the same in every version and
# however the document was written; other keys are found through json_each().
_SQLITE_PATH_KEY = re.compile(r"[A-Za-z0-9_\-. ]+")
_DATE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"
_DATE_REGEX = "^[0-9]{4}-[0-9]{2}-[0-9]{2}"


def compile_rules(rule: Rule | dict, *, dialect_name: str, now: datetime, half_life_days: float) -> ColumnElement[bool]:
    """The WHERE clause over ``Contact`` selecting the contacts ``rule`` matches (no implicit status filter)."""
    return _Compiler(dialect_name, now, half_life_days).rule(parse_rules(rule))


def segment_filter(
    rule: Rule | dict, *, dialect_name: str, now: datetime, half_life_days: float
) -> ColumnElement[bool]:
    """The segment's WHERE clause: the rule, plus ``status = 'active'`` unless the rule tests status itself."""
    rule = parse_rules(rule)
    where = compile_rules(rule, dialect_name=dialect_name, now=now, half_life_days=half_life_days)
    if mentions_status(rule):
        return where
    return and_(Contact.status == literal("active", String()), where)


def segment_query(rule: Rule | dict, *, dialect_name: str, now: datetime, half_life_days: float) -> Select:
    """``SELECT contacts.id`` for the segment's members, unordered; add order and limits as needed."""
    where = segment_filter(rule, dialect_name=dialect_name, now=now, half_life_days=half_life_days)
    return select(Contact.id).where(where)


def count_contacts(session: Session, rule: Rule | dict, *, now: datetime, half_life_days: float) -> int:
    """How many contacts the segment selects, in one statement."""
    where = segment_filter(rule, dialect_name=_dialect(session), now=now, half_life_days=half_life_days)
    return session.scalar(select(func.count()).select_from(Contact).where(where))


def preview_contacts(
    session: Session, rule: Rule | dict, limit: int = 20, *, now: datetime, half_life_days: float
) -> list[Contact]:
    """The first ``limit`` contacts of the segment, by id."""
    where = segment_filter(rule, dialect_name=_dialect(session), now=now, half_life_days=half_life_days)
    return list(session.scalars(select(Contact).where(where).order_by(Contact.id).limit(limit)))


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _holds_at_zero(op: str, value: float) -> bool:
    """Whether a comparison is true for a contact with no rows (score 0, no events)."""
    return _COMPARE[op](0, value)


class _Compiler:
    def __init__(self, dialect_name: str, now: datetime, half_life_days: float):
        if dialect_name not in DIALECTS:
            raise ValueError(f"segments compile for {' or '.join(DIALECTS)}, not {dialect_name!r}")
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        self.dialect = dialect_name
        self.now = now
        self.half_life_days = half_life_days

    def rule(self, rule: Rule) -> ColumnElement[bool]:
        if isinstance(rule, AllOf):
            return and_(true(), *(self.rule(r) for r in rule.rules))
        if isinstance(rule, AnyOf):
            return or_(false(), *(self.rule(r) for r in rule.rules))
        if isinstance(rule, Not):
            return not_(self.rule(rule.rule))
        if isinstance(rule, FieldCondition):
            return self.created_at(rule) if rule.field == "created_at" else self.string_field(rule)
        if isinstance(rule, AttrCondition):
            return self.attr(rule)
        if isinstance(rule, InterestCondition):
            return self.interest(rule)
        if isinstance(rule, EventCondition):
            return self.event(rule)
        if isinstance(rule, ConsentCondition):
            return self.consent(rule)
        raise TypeError(f"not a rule: {rule!r}")

    # --- contact columns ----------------------------------------------------

    def string_field(self, c: FieldCondition) -> ColumnElement[bool]:
        column = getattr(Contact, c.field)
        if c.op == "exists":
            present = and_(column.is_not(None), column != literal("", String()))
            return present if c.value else not_(present)
        if c.op in ("ne", "not_in"):
            return not_(self.string_field(FieldCondition(c.field, "eq" if c.op == "ne" else "in", c.value)))
        test = self.string_test(column, c.op, c.value)
        # The NULL check first keeps the test two-valued, so not_() can flip it.
        return and_(column.is_not(None), test) if Contact.__table__.c[c.field].nullable else test

    def string_test(self, text: ColumnElement, op: str, value) -> ColumnElement[bool]:
        """eq, in, contains or startswith on a text expression, case-sensitive, wildcard-free."""
        if op == "eq":
            return text == literal(value, String())
        if op == "in":
            return text.in_(list(value))
        if op == "contains":
            position = func.instr if self.dialect == "sqlite" else func.strpos
            return position(text, literal(value, String())) > literal(0, Integer())
        if op == "startswith":
            return func.substr(text, literal(1, Integer()), literal(len(value), Integer())) == literal(value, String())
        raise ValueError(f"no text test {op!r}")

    def created_at(self, c: FieldCondition) -> ColumnElement[bool]:
        column = Contact.created_at
        if c.op == "exists":
            return column.is_not(None) if c.value else column.is_(None)
        if c.op == "within_days":
            return column >= self.now - timedelta(days=c.value)
        if c.op == "older_than_days":
            return column < self.now - timedelta(days=c.value)
        return _COMPARE[c.op](column, c.value)

    # --- attributes ---------------------------------------------------------

    def json_key(self, column: ColumnElement, key: str) -> _JsonKey:
        if self.dialect == "postgresql":
            return _PostgresKey(column, key)
        if _SQLITE_PATH_KEY.fullmatch(key):
            return _SqlitePathKey(column, key)
        return _SqliteEachKey(column, key)

    def attr(self, c: AttrCondition) -> ColumnElement[bool]:
        key = self.json_key(Contact.attributes, c.name)
        op, value = c.op, c.value
        if op in ("ne", "not_in"):
            return not_(self.attr(AttrCondition(c.name, "eq" if op == "ne" else "in", value)))
        if op == "exists":
            present = key.holds(
                and_(not_(key.is_null()), not_(and_(key.text == literal("", String()), key.is_string())))
            )
            return present if value else not_(present)
        if op == "eq":
            return key.holds(key.equals(value))
        if op == "in":
            return key.holds(key.equals_any(value))
        if op in ("gt", "gte", "lt", "lte"):
            return key.holds(and_(_COMPARE[op](key.number, literal(float(value), Float())), key.is_number()))
        if op in ("contains", "startswith"):
            return key.holds(and_(self.string_test(key.text, op, value), key.is_string()))
        # within_days / older_than_days: an ISO date string, compared on its YYYY-MM-DD prefix.
        cutoff = literal((self.now - timedelta(days=value)).date().isoformat(), String())
        day = func.substr(key.text, literal(1, Integer()), literal(10, Integer()))
        if self.dialect == "sqlite":
            date_like = key.text.op("GLOB")(literal(_DATE_GLOB, String()))
        else:
            date_like = key.text.op("~")(literal(_DATE_REGEX, String()))
        compare = day >= cutoff if op == "within_days" else day < cutoff
        return key.holds(and_(key.is_string(), date_like, compare))

    # --- interests, events, consent -----------------------------------------

    def interest(self, c: InterestCondition) -> ColumnElement[bool]:
        decayed = decayed_score_sql(
            Interest.score,
            Interest.updated_at,
            dialect_name=self.dialect,
            now=self.now,
            half_life_days=self.half_life_days,
        )
        test = _COMPARE[c.op](decayed, literal(float(c.value), Float()))
        scores = select(Interest.contact_id).where(Interest.tag == literal(c.tag, String()))
        if _holds_at_zero(c.op, c.value):
            # No row means a score of 0, which passes: exclude only the rows that fail.
            return self.none_of(scores.where(not_(test)))
        return Contact.id.in_(scores.where(test))

    def event(self, c: EventCondition) -> ColumnElement[bool]:
        matching = [Event.type == literal(c.type, String())]
        if c.channel is not None:
            matching.append(Event.channel == literal(c.channel, String()))
        if c.within_days is not None:
            matching.append(Event.occurred_at >= self.now - timedelta(days=c.within_days))
        for prop, value in c.where:
            key = self.json_key(Event.properties, prop)
            matching.append(key.holds(key.equals(value)))
        events = select(Event.contact_id).where(*matching)
        # Grouping by contact_id + 0 rather than contact_id: with statistics
        # gathered, SQLite walks the whole (contact_id, type) index to avoid a
        # sort for GROUP BY, 4 s instead of 0.7 s over 5M events. An expression
        # matches no index, so the type/time range scan wins again.
        contact = (Event.contact_id + literal(0, Integer())).label("contact_id")
        counted = select(contact).where(*matching).group_by(contact)
        count = func.count()
        bound = literal(c.value, Integer())
        none = (c.op, c.value) in (("eq", 0), ("lt", 1), ("lte", 0))
        some = (c.op, c.value) in (("gt", 0), ("gte", 1))
        if (none or some) and c.within_days is None and not c.where:
            # "Ever" needs no time range: probing the (contact_id, type) index per
            # contact beats collecting every such event (1M contacts, 5M events:
            # 0.4 s instead of 5 s).
            ever = exists().where(Event.contact_id == Contact.id, *matching)
            return ever if some else ~ever
        if _holds_at_zero(c.op, c.value):
            # Contacts with no matching event pass: exclude those whose count fails.
            if none:
                return self.none_of(events)
            return self.none_of(counted.having(not_(_COMPARE[c.op](count, bound))))
        if some:  # "at least one": no need to count
            return Contact.id.in_(events)
        return Contact.id.in_(counted.having(_COMPARE[c.op](count, bound)))

    def consent(self, c: ConsentCondition) -> ColumnElement[bool]:
        granted = select(Consent.contact_id).where(
            Consent.purpose == literal(c.purpose, String()), Consent.granted.is_(True)
        )
        return Contact.id.in_(granted) if c.granted else self.none_of(granted)

    def none_of(self, contact_ids: Select) -> ColumnElement[bool]:
        """Contacts whose id the subquery does not return."""
        if self.dialect == "sqlite":
            # SQLite builds the subquery's result once and probes it per contact.
            return Contact.id.not_in(contact_ids)
        # PostgreSQL plans NOT EXISTS as an anti-join; NOT IN over a big result
        # can fall back to rescanning the subquery per contact.
        found = contact_ids.subquery()
        return ~exists(select(literal(1)).select_from(found).where(found.c.contact_id == Contact.id))


class _JsonKey:
    """The value under one key of a JSON column: its JSON type, its text and its number, as SQL."""

    type: ColumnElement
    text: ColumnElement
    number: ColumnElement
    STRING: tuple[str, ...]
    NUMBER: tuple[str, ...]

    def is_string(self) -> ColumnElement[bool]:
        return self.type.in_(self.STRING)

    def is_number(self) -> ColumnElement[bool]:
        return self.type.in_(self.NUMBER)

    def is_null(self) -> ColumnElement[bool]:
        return self.type == literal("null", String())

    def is_boolean(self, value: bool) -> ColumnElement[bool]:
        raise NotImplementedError

    def holds(self, test: ColumnElement[bool]) -> ColumnElement[bool]:
        """TRUE when the key is present and ``test`` holds for its value, else FALSE (never NULL)."""
        return func.coalesce(test, false())

    def equals(self, value) -> ColumnElement[bool]:
        """Equal in value and JSON type: 1 equals 1.0, "1" does not equal 1, true does not equal 1."""
        if isinstance(value, bool):
            return self.is_boolean(value)
        if isinstance(value, str):
            # The value test comes first: it fails fast on most rows.
            return and_(self.text == literal(value, String()), self.is_string())
        return and_(self.number == literal(float(value), Float()), self.is_number())

    def equals_any(self, values) -> ColumnElement[bool]:
        strings = [v for v in values if isinstance(v, str)]
        numbers = [float(v) for v in values if not isinstance(v, (str, bool))]
        tests = [self.is_boolean(flag) for flag in (True, False) if any(v is flag for v in values)]
        if strings:
            tests.append(and_(self.text.in_(strings), self.is_string()))
        if numbers:
            tests.append(and_(self.number.in_(numbers), self.is_number()))
        return or_(false(), *tests)


class _SqlitePathKey(_JsonKey):
    STRING = ("text",)
    NUMBER = ("integer", "real")

    def __init__(self, column, key: str):
        path = literal(f'$."{key}"', String())
        self.type = func.json_type(column, path)
        self.text = func.json_extract(column, path)
        # As REAL, so that numbers compare as doubles here as on PostgreSQL.
        self.number = cast(self.text, Float())

    def is_boolean(self, value: bool) -> ColumnElement[bool]:
        return self.type == literal("true" if value else "false", String())


class _SqliteEachKey(_SqlitePathKey):
    """A key the path syntax cannot spell (quotes, backslashes, non-ASCII): found by json_each()."""

    def __init__(self, column, key: str):
        self.entries = func.json_each(column).table_valued("key", "value", "type").alias()
        self.key = key
        self.type = self.entries.c.type
        self.text = self.entries.c.value
        self.number = cast(self.text, Float())

    def holds(self, test: ColumnElement[bool]) -> ColumnElement[bool]:
        entry = select(literal(1)).select_from(self.entries).where(self.entries.c.key == literal(self.key, String()))
        return exists(entry.where(test))


class _PostgresKey(_JsonKey):
    STRING = ("string",)
    NUMBER = ("number",)

    def __init__(self, column, key: str):
        name = literal(key, Text())
        self.type = func.jsonb_typeof(column.op("->", return_type=JSONB)(name))
        self.text = column.op("->>", return_type=Text)(name)
        # CASE guards the cast: PostgreSQL may evaluate AND's operands in any order.
        self.number = case((self.type == literal("number", String()), cast(self.text, Float())))

    def is_boolean(self, value: bool) -> ColumnElement[bool]:
        return and_(
            self.type == literal("boolean", String()), self.text == literal("true" if value else "false", String())
        )
