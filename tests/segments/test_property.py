"""The SQL compiler and the plain-Python evaluator select the same contacts, on both databases.

Hypothesis draws a small audience (missing fields, empty strings, non-ASCII,
quotes and LIKE wildcards, attributes of every JSON type, interests of every
age, events, consents), then a rule tree (every condition kind, all/any/not up
to four deep) whose values come mostly from what that audience holds: the
exact strings, their pieces, the same number as another JSON type, the number
of days that lands exactly on a contact's timestamp. Boundaries get hit.

Each example inserts its audience once (in a transaction it rolls back) and
checks every subtree of the drawn trees plus one condition per kind and
operator against it, so 150 examples check several thousand rules.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert
from sqlalchemy.orm import Session

from segments.compiler import count_contacts, segment_query
from segments.models import CONTACT_STATUSES, Consent, Contact, Event, Interest
from segments.rules import parse_rules
from tests.segments.evaluator import evaluate

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
HALF_LIFE_DAYS = 30.0
DAY = 86400
TEXT_FIELDS = ("email", "first_name", "last_name", "locale", "timezone")

TEXTS = [
    "", "es", "ES", "é", "Zoë", "日本", "ab", "1", "2.5", "true",
    "%", "_", "%_", "a%b", "'", '"', "\\", "x'); DROP TABLE contacts; --",
]  # fmt: skip
EMAILS = ["ann@example.com", "a%b@x.io", "o'neil@x.io", "zoë@x.io", "Mixed@Example.com", "_@x.io"]
# Few names, so that rules and contacts meet often; some SQLite's JSON path
# syntax cannot spell, some look like SQL.
ATTR_NAMES = ["plan", "a.b", 'q"uote', "é", "x'); --"]
TAGS = ["outdoor", "%", "x'); DROP TABLE contacts; --"]
EVENT_TYPES = ["purchase", "%_"]
CHANNELS = ["web", "_"]
PURPOSES = ["newsletter", "%"]
DATES = ["2024-05-31", "2024-05-30T23:59:59Z", "2024-06-01", "2024-04-02T00:00:00", "2024-05-3x"]
DAYS = [0, 1, 2, 30, 60]

texts = st.one_of(
    st.sampled_from(TEXTS),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=5),
)
numbers = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([0.5, 2.5, -0.0, 1e6]),
    st.floats(-100, 100, allow_nan=False, allow_subnormal=False),
)
scalars = st.one_of(st.booleans(), numbers, texts, st.sampled_from(DATES))
seconds_ago = st.one_of(st.sampled_from([-3600, 0, DAY, 30 * DAY]), st.integers(-2 * DAY, 400 * DAY))


def _ago(seconds: int) -> datetime:
    return NOW - timedelta(seconds=seconds)


# --- audiences --------------------------------------------------------------

stored_values = st.one_of(scalars, st.none(), st.just({"k": 1}), st.just([1, "a"]))
event_rows = st.fixed_dictionaries(
    {
        "type": st.sampled_from(EVENT_TYPES),
        "channel": st.sampled_from(CHANNELS),
        "occurred_at": seconds_ago.map(_ago),
        "properties": st.dictionaries(st.sampled_from(ATTR_NAMES), stored_values, max_size=2),
    }
)
contacts = st.fixed_dictionaries(
    {
        "email": st.one_of(st.none(), st.sampled_from(EMAILS)),
        **{field: st.one_of(st.none(), texts) for field in TEXT_FIELDS[1:]},
        "status": st.one_of(st.just("active"), st.sampled_from(CONTACT_STATUSES)),
        "created_at": seconds_ago.map(_ago),
        "attributes": st.dictionaries(st.sampled_from(ATTR_NAMES), stored_values, max_size=4),
        "interests": st.dictionaries(
            st.sampled_from(TAGS),
            st.tuples(
                st.one_of(st.sampled_from([0.0, 2.5, 10.0]), st.floats(0, 100)),
                st.one_of(seconds_ago, st.just(40_000 * DAY)).map(_ago),  # past 1000 half-lives: counts as 0
            ),
            max_size=3,
        ),
        "events": st.lists(event_rows, max_size=5),
        "consents": st.dictionaries(st.sampled_from(PURPOSES), st.booleans(), max_size=2),
    }
)


def _number_ids(drawn: list[dict]) -> list[dict]:
    emails = set()
    for number, contact in enumerate(drawn, start=1):
        contact["id"] = number
        if contact["email"] in emails:  # emails are unique
            contact["email"] = None
        emails.add(contact["email"])
    return drawn


audiences = st.lists(contacts, max_size=8).map(_number_ids)


class Aim:
    """Draws rule values from what the audience holds (per field and attribute) and their near neighbours.

    Rule values are drawn through plain functions over ``draw`` rather than
    strategies built per audience: building strategies is what would cost time.
    """

    def __init__(self, draw, audience: list[dict]):
        self.draw = draw
        self.fields = {f: [c[f] for c in audience if c[f] is not None] for f in TEXT_FIELDS}
        self.instants = [c["created_at"] for c in audience]
        self.created_days = [_days_ago(c["created_at"]) for c in audience]
        self.event_days = [d for c in audience for e in c["events"] if (d := _days_ago(e["occurred_at"])) > 0]
        self.scores = [score for c in audience for score, _ in c["interests"].values()]
        self.attributes: dict[str, list] = {name: [] for name in ATTR_NAMES}
        self.properties: dict[str, list] = {name: [] for name in ATTR_NAMES}
        for contact in audience:
            for name, value in contact["attributes"].items():
                self.attributes[name] += _neighbours(value)
            for event in contact["events"]:
                for name, value in event["properties"].items():
                    self.properties[name] += _neighbours(value)

    def pick(self, pool: list, fallback: st.SearchStrategy):
        """Half the time something held, else anything."""
        if pool and self.draw(st.booleans()):
            return pool[self.draw(st.integers(0, len(pool) - 1))]
        return self.draw(fallback)

    def fragment(self, pool: list) -> str:
        """A non-empty piece of a held string: for contains and startswith."""
        whole = self.pick([v for v in pool if isinstance(v, str) and v], texts.filter(bool))
        start, length = self.draw(st.integers(0, 2)), self.draw(st.integers(1, 4))
        return whole[start : start + length] or whole

    def some(self, count_max: int, one) -> list:
        return [one() for _ in range(self.draw(st.integers(1, count_max)))]

    def field(self, op: str | None = None) -> dict:
        draw = self.draw
        field = draw(st.sampled_from([*TEXT_FIELDS, "status"]))
        op = op or draw(st.sampled_from(STRING_OPS))
        held, anything = (list(CONTACT_STATUSES), st.sampled_from(CONTACT_STATUSES))
        if field != "status":
            held, anything = self.fields[field], texts

        def one():
            return self.pick(held, anything)

        if op == "exists":
            value = draw(st.booleans())
        elif op in ("contains", "startswith"):
            value = self.fragment(self.fields.get(field, []))
        elif op in ("in", "not_in"):
            value = self.some(3, one)
        else:
            value = one()
        if field == "email" and op != "exists" and draw(st.booleans()):
            value = [v.upper() for v in value] if isinstance(value, list) else value.upper()  # rules lower-case emails
        return {"field": field, "op": op, "value": value}

    def created_at(self, op: str | None = None) -> dict:
        op = op or self.draw(st.sampled_from(DATE_OPS))
        if op == "exists":
            value = self.draw(st.booleans())
        elif op in ("within_days", "older_than_days"):
            value = self.pick(self.created_days, st.sampled_from(DAYS))
        else:
            instant = self.pick(self.instants, seconds_ago.map(_ago))
            forms = [
                instant.isoformat(),
                instant.date().isoformat(),
                instant.replace(tzinfo=None).isoformat(),
                instant.astimezone(timezone(timedelta(hours=2))).isoformat(),
            ]
            value = self.draw(st.sampled_from(forms))
        return {"field": "created_at", "op": op, "value": value}

    def attr(self, op: str | None = None) -> dict:
        name = self.draw(st.sampled_from(ATTR_NAMES))
        op = op or self.draw(st.sampled_from(ATTR_OPS))
        held = self.attributes[name]
        if op in ("eq", "ne"):
            value = self.pick(held, scalars)
        elif op in ("in", "not_in"):
            value = self.some(3, lambda: self.pick(held, scalars))
        elif op in ("gt", "gte", "lt", "lte"):
            value = self.pick([v for v in held if _is_number(v)], numbers)
        elif op in ("contains", "startswith"):
            value = self.fragment(held)
        elif op == "exists":
            value = self.draw(st.booleans())
        else:  # the days whose cut-off date is exactly a date the attribute holds
            value = self.pick([d for v in held if (d := _cutoff_days(v)) is not None], st.sampled_from(DAYS))
        return {"attr": name, "op": op, "value": value}

    def interest(self, op: str | None = None) -> dict:
        op = op or self.draw(st.sampled_from(CMP_OPS))
        value = self.pick(self.scores, st.floats(0, 100))
        return {"interest": self.draw(st.sampled_from(TAGS)), "op": op, "value": value}

    def event(self, op: str | None = None) -> dict:
        draw = self.draw
        spec = {"type": draw(st.sampled_from(EVENT_TYPES))}
        if draw(st.booleans()):
            spec["channel"] = draw(st.sampled_from(CHANNELS))
        if draw(st.booleans()):
            spec["within_days"] = self.pick(self.event_days, st.sampled_from(DAYS[1:]))
        if draw(st.booleans()):
            name = draw(st.sampled_from(ATTR_NAMES))
            spec["where"] = {name: self.pick(self.properties[name], scalars)}
        op = op or draw(st.sampled_from(CMP_OPS))
        return {"event": spec, "op": op, "value": draw(st.integers(0, 3))}

    def consent(self) -> dict:
        return {"consent": self.draw(st.sampled_from(PURPOSES)), "op": "eq", "value": self.draw(st.booleans())}

    def condition(self) -> dict:
        kinds = (self.field, self.created_at, self.attr, self.interest, self.event, self.consent)
        return self.draw(st.sampled_from(kinds))()

    def rule(self, depth: int = 4) -> dict:
        """A rule tree, all/any/not nested up to ``depth`` deep."""
        kind = self.draw(st.sampled_from(["condition", "all", "any", "not"])) if depth else "condition"
        if kind == "condition":
            return self.condition()
        if kind == "not":
            return {"not": self.rule(depth - 1)}
        return {kind: [self.rule(depth - 1) for _ in range(self.draw(st.integers(0, 3)))]}

    def every_op(self) -> list[dict]:
        """One condition per kind and operator, so each example exercises the whole language."""
        return [
            *(self.field(op) for op in STRING_OPS),
            *(self.created_at(op) for op in DATE_OPS),
            *(self.attr(op) for op in ATTR_OPS),
            *(self.interest(op) for op in CMP_OPS),
            *(self.event(op) for op in CMP_OPS),
            self.consent(),
        ]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _days_ago(instant: datetime) -> float:
    return max((NOW - instant).total_seconds() / DAY, 0)


def _cutoff_days(value) -> int | None:
    try:
        days = (NOW.date() - datetime.fromisoformat(value[:10]).date()).days
    except (TypeError, ValueError):
        return None
    return days if 0 <= days <= 500 else None


def _neighbours(value) -> list:
    """The value, and the same value as other JSON types: "1" for 1, 1 for true, 1.0 for 1."""
    if isinstance(value, bool):
        return [value, int(value), str(value).lower()]
    if _is_number(value):
        return [value, float(value), str(value)]
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return [value]
        return [value, number] if abs(number) < 1e300 else [value]
    return []


DATE_OPS = ["eq", "ne", "gt", "gte", "lt", "lte", "within_days", "older_than_days", "exists"]
STRING_OPS = ["eq", "ne", "in", "not_in", "contains", "startswith", "exists"]
ATTR_OPS = [*STRING_OPS, "gt", "gte", "lt", "lte", "within_days", "older_than_days"]
CMP_OPS = ["eq", "gt", "gte", "lt", "lte"]


@st.composite
def cases(draw):
    """An audience, a few rule trees, and one condition per operator, aimed at it."""
    audience = draw(audiences)
    aim = Aim(draw, audience)
    return [aim.rule() for _ in range(draw(st.integers(1, 3)))] + aim.every_op(), audience


def _subtrees(rule: dict):
    """The rule and every rule nested in it: each is checked on its own, cheaply."""
    yield rule
    for child in rule.get("all", rule.get("any", [])):
        yield from _subtrees(child)
    if "not" in rule:
        yield from _subtrees(rule["not"])


# --- the property -----------------------------------------------------------


def _insert(conn, audience: list[dict]) -> None:
    if not audience:
        return
    columns = ("id", *TEXT_FIELDS, "status", "created_at", "attributes")
    conn.execute(insert(Contact), [{k: c[k] for k in columns} | {"updated_at": NOW} for c in audience])
    rows = {
        Interest: [
            {"contact_id": c["id"], "tag": tag, "score": score, "updated_at": at}
            for c in audience
            for tag, (score, at) in c["interests"].items()
        ],
        Event: [
            {**e, "contact_id": c["id"], "source": "test", "external_id": f"{c['id']}-{i}"}
            for c in audience
            for i, e in enumerate(c["events"])
        ],
        Consent: [
            {"contact_id": c["id"], "purpose": purpose, "granted": granted}
            for c in audience
            for purpose, granted in c["consents"].items()
        ],
    }
    for model, model_rows in rows.items():
        if model_rows:
            conn.execute(insert(model), model_rows)


def test_sql_selects_what_the_evaluator_selects(engine):
    @settings(
        max_examples=150 if engine.dialect.name == "sqlite" else 75,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(case=cases())
    def check(case):
        drawn, audience = case
        with engine.connect() as conn:
            transaction = conn.begin()  # rolled back: each example starts from empty tables
            try:
                _insert(conn, audience)
                for subtree in (subtree for rule in drawn for subtree in _subtrees(rule)):
                    _check(conn, subtree, audience)
                # count_contacts runs the same filter as one aggregate statement.
                tree = drawn[0]
                counted = count_contacts(Session(conn), tree, now=NOW, half_life_days=HALF_LIFE_DAYS)
                assert counted == len(set(conn.scalars(_query(conn, tree))))
            finally:
                transaction.rollback()

    check()


def _check(conn, rule: dict, audience: list[dict]) -> None:
    parse_rules(rule)  # the strategies draw valid rules only
    verdicts = evaluate(rule, audience, now=NOW, half_life_days=HALF_LIFE_DAYS)
    definite = {cid for cid, verdict in verdicts.items() if verdict is not None}
    selected = set(conn.scalars(_query(conn, rule)))
    assert selected & definite == {cid for cid in definite if verdicts[cid]}, rule


def _query(conn, rule: dict):
    return segment_query(rule, dialect_name=conn.dialect.name, now=NOW, half_life_days=HALF_LIFE_DAYS)
