"""Segments counted in SQL, on SQLite and PostgreSQL: the cases a marketer would notice."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, func, inspect, select

from segments.compiler import compile_rules, count_contacts, preview_contacts, segment_query
from segments.interests import decayed_score, decayed_score_sql
from segments.models import Consent, Contact, Event, Interest

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
HALF_LIFE_DAYS = 30.0
DAY = timedelta(days=1)
EVIL = "x'); DROP TABLE contacts; --"


@pytest.fixture
def add(session):
    """A contact in one line: ``add(locale="es", attributes={...})``, flushed so it has an id."""

    def add_contact(**fields) -> int:
        fields.setdefault("created_at", NOW - 100 * DAY)
        contact = Contact(**fields)
        session.add(contact)
        session.flush()
        return contact.id

    return add_contact


def ids(session, rule) -> set[int]:
    dialect = session.get_bind().dialect.name
    return set(session.scalars(segment_query(rule, dialect_name=dialect, now=NOW, half_life_days=HALF_LIFE_DAYS)))


def cond(kind: str, subject, op: str, value) -> dict:
    return {kind: subject, "op": op, "value": value}


def test_text_fields_and_missing_values(session, add):
    es, mx, en = add(locale="es"), add(locale="es-MX"), add(locale="en")
    none, empty = add(locale=None), add(locale="")
    everyone = {es, mx, en, none, empty}
    assert ids(session, cond("field", "locale", "eq", "es")) == {es}
    # A contact with no locale is "not es": ne, not_in and not all include it.
    assert ids(session, cond("field", "locale", "ne", "es")) == everyone - {es}
    assert ids(session, {"not": cond("field", "locale", "eq", "es")}) == everyone - {es}
    assert ids(session, cond("field", "locale", "in", ["es", "en"])) == {es, en}
    assert ids(session, cond("field", "locale", "not_in", ["es", "en"])) == {mx, none, empty}
    assert ids(session, cond("field", "locale", "startswith", "es")) == {es, mx}
    assert ids(session, cond("field", "locale", "startswith", "ES")) == set()  # case-sensitive
    assert ids(session, cond("field", "locale", "contains", "-")) == {mx}
    assert ids(session, cond("field", "locale", "exists", True)) == {es, mx, en}
    assert ids(session, cond("field", "locale", "exists", False)) == {none, empty}


def test_wildcards_and_quotes_are_plain_characters(session, add):
    percent, underscore, quote, plain = (
        add(first_name="100%"),
        add(first_name="10_0"),
        add(first_name="O'Neil"),
        add(first_name="1000"),
    )
    assert ids(session, cond("field", "first_name", "contains", "%")) == {percent}
    assert ids(session, cond("field", "first_name", "contains", "_")) == {underscore}
    assert ids(session, cond("field", "first_name", "startswith", "10%")) == set()
    assert ids(session, cond("field", "first_name", "startswith", "10")) == {percent, underscore, plain}
    assert ids(session, cond("field", "first_name", "eq", "O'Neil")) == {quote}


def test_email_rules_ignore_case(session, add):
    ann = add(email="ann@example.com")
    add(email="bob@example.com")
    assert ids(session, cond("field", "email", "eq", "Ann@Example.COM")) == {ann}
    assert ids(session, cond("field", "email", "in", ["ANN@example.com"])) == {ann}
    assert ids(session, cond("field", "email", "startswith", "ANN@")) == {ann}


def test_attributes_compare_by_json_type(session, add):
    whole, decimal, text = add(attributes={"age": 30}), add(attributes={"age": 30.0}), add(attributes={"age": "30"})
    true, one = add(attributes={"age": True}), add(attributes={"age": 1})
    null, empty, missing = add(attributes={"age": None}), add(attributes={"age": ""}), add(attributes={})
    everyone = {whole, decimal, text, true, one, null, empty, missing}
    assert ids(session, cond("attr", "age", "eq", 30)) == {whole, decimal}
    assert ids(session, cond("attr", "age", "eq", "30")) == {text}
    assert ids(session, cond("attr", "age", "eq", True)) == {true}
    assert ids(session, cond("attr", "age", "eq", 1)) == {one}
    assert ids(session, cond("attr", "age", "ne", 30)) == everyone - {whole, decimal}
    assert ids(session, cond("attr", "age", "in", ["30", True])) == {text, true}
    assert ids(session, cond("attr", "age", "not_in", [30, ""])) == everyone - {whole, decimal, empty}
    assert ids(session, cond("attr", "age", "gt", 29.5)) == {whole, decimal}
    assert ids(session, cond("attr", "age", "lte", 1)) == {one}  # true is not a number
    assert ids(session, cond("attr", "age", "contains", "3")) == {text}
    assert ids(session, cond("attr", "age", "exists", True)) == {whole, decimal, text, true, one}
    assert ids(session, cond("attr", "age", "exists", False)) == {null, empty, missing}


def test_attribute_names_that_need_quoting(session, add):
    odd = ["a.b", 'q"uote', "é", "back\\slash", "100%", EVIL]
    holders = {name: add(attributes={name: "yes", "other": 1}) for name in odd}
    for name, holder in holders.items():
        assert ids(session, cond("attr", name, "eq", "yes")) == {holder}, name
        assert ids(session, cond("attr", name, "exists", False)) == set(holders.values()) - {holder}, name


def test_attribute_dates(session, add):
    yesterday, may = add(attributes={"signup": "2024-05-31"}), add(attributes={"signup": "2024-05-01T09:00:00Z"})
    last_year = add(attributes={"signup": "2023-12-25"})
    add(attributes={"signup": "soon"}), add(attributes={"signup": 20240531}), add(attributes={})
    # Cut-off day for 1 day before 2024-06-01 12:00 is 2024-05-31: that whole day is within.
    assert ids(session, cond("attr", "signup", "within_days", 1)) == {yesterday}
    assert ids(session, cond("attr", "signup", "older_than_days", 1)) == {may, last_year}
    assert ids(session, cond("attr", "signup", "within_days", 31)) == {yesterday, may}


def test_created_at(session, add):
    recent, exactly_30, old = (
        add(created_at=NOW - 10 * DAY),
        add(created_at=NOW - 30 * DAY),
        add(created_at=NOW - 40 * DAY),
    )
    assert ids(session, cond("field", "created_at", "within_days", 30)) == {recent, exactly_30}
    assert ids(session, cond("field", "created_at", "older_than_days", 30)) == {old}
    assert ids(session, cond("field", "created_at", "gte", "2024-05-02T12:00:00Z")) == {recent, exactly_30}
    assert ids(session, cond("field", "created_at", "gt", "2024-05-02T14:00:00+02:00")) == {recent}
    assert ids(session, cond("field", "created_at", "eq", "2024-05-02 12:00:00")) == {exactly_30}  # naive is UTC
    assert ids(session, cond("field", "created_at", "lt", "2024-05-01")) == {old}


def test_interest_decays_by_half_each_half_life(session, add):
    halved, fresh, future, none = add(), add(), add(), add()
    session.add_all(
        [
            Interest(contact_id=halved, tag="pizza", score=10.0, updated_at=NOW - HALF_LIFE_DAYS * DAY),
            Interest(contact_id=fresh, tag="pizza", score=10.0, updated_at=NOW),
            Interest(contact_id=future, tag="pizza", score=10.0, updated_at=NOW + DAY),  # clock skew: no growth
            Interest(contact_id=none, tag="wine", score=50.0, updated_at=NOW),
        ]
    )
    session.flush()
    assert decayed_score(10.0, NOW - HALF_LIFE_DAYS * DAY, NOW, HALF_LIFE_DAYS) == 5.0
    assert ids(session, cond("interest", "pizza", "gte", 4.99)) == {halved, fresh, future}
    assert ids(session, cond("interest", "pizza", "gt", 5.01)) == {fresh, future}
    assert ids(session, cond("interest", "pizza", "eq", 10)) == {fresh, future}
    assert ids(session, cond("interest", "pizza", "gt", 10)) == set()
    # No pizza row means a pizza score of 0, which is below 4.99.
    assert ids(session, cond("interest", "pizza", "lt", 4.99)) == {none}
    assert ids(session, cond("interest", "pizza", "lte", 5.01)) == {halved, none}
    assert ids(session, cond("interest", "pizza", "eq", 0)) == {none}


def test_ancient_and_microscopic_scores_count_as_zero(session, add):
    ancient, tiny, normal = add(), add(), add()
    session.add_all(
        [
            Interest(contact_id=ancient, tag="pizza", score=1e6, updated_at=NOW - 400 * DAY),
            Interest(contact_id=tiny, tag="pizza", score=1e-300, updated_at=NOW - DAY),
            Interest(contact_id=normal, tag="pizza", score=1.0, updated_at=NOW - DAY),
        ]
    )
    session.flush()
    # With a 6-hour half-life, 400 days is 1,600 half-lives: 0.5 ** 1600 underflows a double,
    # which PostgreSQL reports as an error rather than a zero.
    assert decayed_score(1e6, NOW - 400 * DAY, NOW, 0.25) == 0.0
    dialect = session.get_bind().dialect.name

    def quick(rule):
        return set(session.scalars(segment_query(rule, dialect_name=dialect, now=NOW, half_life_days=0.25)))

    assert quick(cond("interest", "pizza", "eq", 0)) == {ancient, tiny}
    assert quick(cond("interest", "pizza", "gt", 0)) == {normal}


def test_decay_in_sql_matches_python(session, add):
    contact = add()
    ages = [0, 1, 3600, 86400 * 7, 86400 * 30, 86400 * 365, -86400]
    for n, age in enumerate(ages):
        session.add(Interest(contact_id=contact, tag=f"t{n}", score=8.0, updated_at=NOW - timedelta(seconds=age)))
    session.flush()
    dialect = session.get_bind().dialect.name
    decayed = decayed_score_sql(
        Interest.score, Interest.updated_at, dialect_name=dialect, now=NOW, half_life_days=HALF_LIFE_DAYS
    )
    rows = session.execute(select(Interest.tag, Interest.updated_at, decayed).order_by(Interest.tag)).all()
    assert len(rows) == len(ages)
    for _tag, updated_at, in_sql in rows:
        assert in_sql == pytest.approx(decayed_score(8.0, updated_at, NOW, HALF_LIFE_DAYS), rel=1e-9)


def test_events_count_within_days_and_zero(session, add):
    twice, once, boundary, never, opener = add(), add(), add(), add(), add()

    def purchase(contact, ago, channel="web", **properties):
        session.add(
            Event(
                contact_id=contact, channel=channel, type="purchase", occurred_at=NOW - ago,
                properties=properties, source="test", external_id=f"{contact}-{ago}-{channel}",
            )
        )  # fmt: skip

    purchase(twice, 5 * DAY, "pos", sku="A1", amount=30)
    purchase(twice, 40 * DAY)
    purchase(once, 2 * DAY, sku="B2")
    purchase(boundary, 30 * DAY)
    session.add(Event(contact_id=opener, channel="email", type="open", occurred_at=NOW, source="t", external_id="o"))
    session.flush()
    recent = {"type": "purchase", "within_days": 30}
    assert ids(session, {"event": recent, "op": "gte", "value": 1}) == {twice, once, boundary}
    # "No purchase in 30 days" includes contacts who never bought anything.
    assert ids(session, {"event": recent, "op": "eq", "value": 0}) == {never, opener}
    assert ids(session, {"event": {"type": "purchase"}, "op": "lt", "value": 2}) == {once, boundary, never, opener}
    assert ids(session, {"event": {"type": "purchase"}, "op": "gte", "value": 2}) == {twice}
    assert ids(session, {"event": {"type": "purchase"}, "op": "eq", "value": 1}) == {once, boundary}
    assert ids(session, {"event": {"type": "purchase", "channel": "pos"}, "op": "gte", "value": 1}) == {twice}
    assert ids(session, {"event": {"type": "purchase", "where": {"sku": "A1"}}, "op": "gt", "value": 0}) == {twice}
    assert ids(session, {"event": {"type": "purchase", "where": {"amount": 30.0}}, "op": "eq", "value": 1}) == {twice}
    assert ids(session, {"event": {"type": "purchase", "where": {"amount": "30"}}, "op": "gte", "value": 1}) == set()


def test_consent(session, add):
    granted, denied, unknown = add(), add(), add()
    session.add_all(
        [
            Consent(contact_id=granted, purpose="marketing", granted=True),
            Consent(contact_id=denied, purpose="marketing", granted=False),
            Consent(contact_id=unknown, purpose="profiling", granted=True),
        ]
    )
    session.flush()
    assert ids(session, cond("consent", "marketing", "eq", True)) == {granted}
    assert ids(session, cond("consent", "marketing", "eq", False)) == {denied, unknown}


def test_only_active_contacts_unless_the_rule_names_status(session, add):
    active, unsubscribed, bounced = add(locale="es"), add(locale="es", status="unsubscribed"), add(status="bounced")
    assert ids(session, {"all": []}) == {active}
    assert ids(session, {"any": []}) == set()
    assert ids(session, cond("field", "locale", "eq", "es")) == {active}
    assert ids(session, cond("field", "status", "eq", "unsubscribed")) == {unsubscribed}
    assert ids(session, {"not": cond("field", "status", "eq", "bounced")}) == {active, unsubscribed}
    assert ids(session, {"all": [cond("field", "status", "exists", True)]}) == {active, unsubscribed, bounced}
    # Without the implicit filter, the bare clause selects every status.
    where = compile_rules({"all": []}, dialect_name=session.get_bind().dialect.name, now=NOW, half_life_days=30)
    assert session.scalar(select(func.count()).select_from(Contact).where(where)) == 3


def test_count_is_one_statement_and_preview_goes_by_id(session, add):
    spanish = [add(locale="es", email=f"c{n}@example.com") for n in range(5)]
    add(locale="en")
    rule = {"all": [cond("field", "locale", "eq", "es"), {"event": {"type": "purchase"}, "op": "eq", "value": 0}]}
    statements = []

    def record(_conn, _cursor, statement, *_):
        statements.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", record)
    try:
        counted = count_contacts(session, rule, now=NOW, half_life_days=HALF_LIFE_DAYS)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert counted == len(spanish)
    assert len(statements) == 1 and "count(*)" in statements[0]
    shown = preview_contacts(session, rule, 3, now=NOW, half_life_days=HALF_LIFE_DAYS)
    assert [c.id for c in shown] == sorted(spanish)[:3]


def test_a_long_in_list(session, add):
    spanish = add(locale="es")
    add(locale="en")
    locales = [f"x{n}" for n in range(9_999)] + ["es"]
    assert ids(session, cond("field", "locale", "in", locales)) == {spanish}
    assert len(ids(session, cond("field", "locale", "not_in", locales))) == 1


def test_user_text_is_only_ever_data(session, add):
    victim = add(locale=EVIL[:30], attributes={EVIL: EVIL, 'a"b': "%'"})
    session.add_all(
        [
            Interest(contact_id=victim, tag=EVIL.lower(), score=3.0, updated_at=NOW),  # as imports store tags
            Event(
                contact_id=victim,
                channel="web",
                type=EVIL,
                occurred_at=NOW,
                properties={EVIL: 1},
                source="t",
                external_id="1",
            ),
            Consent(contact_id=victim, purpose=EVIL, granted=True),
        ]
    )
    add(locale="es")
    session.flush()
    rule = {
        "all": [
            cond("field", "locale", "startswith", EVIL[:30]),
            cond("attr", EVIL, "eq", EVIL),
            cond("attr", 'a"b', "contains", "%'"),
            cond("interest", EVIL, "gte", 1),
            {"event": {"type": EVIL, "channel": "web", "where": {EVIL: 1}}, "op": "gte", "value": 1},
            cond("consent", EVIL, "eq", True),
        ]
    }
    dialect = session.get_bind().dialect
    query = segment_query(rule, dialect_name=dialect.name, now=NOW, half_life_days=HALF_LIFE_DAYS)
    sql = str(query.compile(dialect=dialect))  # bound parameters stay parameters
    for fragment in ("DROP", "x'", "%'", 'a"b', "web"):
        assert fragment not in sql
    assert ids(session, rule) == {victim}
    assert inspect(session.connection()).has_table("contacts")
    assert session.scalar(select(func.count()).select_from(Contact)) == 2
