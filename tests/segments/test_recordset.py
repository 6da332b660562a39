"""``segments.db.recordset_insert``: many rows in one PostgreSQL statement, as one JSON document.

It proves that what goes in comes back field for field (any text, NUL aside, which PostgreSQL's text
cannot hold; timestamps in any zone, stored as naive UTC; nested JSON documents, booleans staying
booleans),
and that values with no faithful JSON form fail in Python, naming themselves, before the statement runs.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from segments.db import as_recordset, make_session_factory, recordset_insert
from segments.models import Contact, Event

COLUMNS = ("contact_id", "channel", "type", "occurred_at", "properties", "source", "external_id", "received_at")
# Every character but NUL and the lone surrogates no encoding of text can carry.
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=64)
zones = st.sampled_from([UTC, timezone(timedelta(hours=-9, minutes=-30)), timezone(timedelta(hours=14))])
moments = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=zones)
documents = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture
def postgresql(request):
    engine = request.getfixturevalue("_postgresql_engine")
    with make_session_factory(engine)() as session:
        session.execute(delete(Event))
        session.execute(delete(Contact))
        contact = Contact(email="ana@example.com")
        session.add(contact)
        session.commit()
        yield session, contact.id


def row(contact_id, n, text, at, properties) -> dict:
    return {
        "contact_id": contact_id,
        "channel": "email",
        "type": text[:64] or "click",
        "occurred_at": at,
        "properties": properties,
        "source": "test",
        "external_id": f"recordset:{n}",
        "received_at": at,
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.tuples(texts, moments, st.dictionaries(texts, documents, max_size=4)), max_size=20))
def test_every_row_comes_back_field_for_field(postgresql, values):
    session, contact_id = postgresql
    session.execute(delete(Event))
    rows = [row(contact_id, n, text, at, {"text": text, "doc": doc}) for n, (text, at, doc) in enumerate(values)]
    if rows:
        session.execute(recordset_insert(Event.__table__, COLUMNS), as_recordset(rows, COLUMNS))
    stored = session.execute(select(Event.external_id, Event.type, Event.occurred_at, Event.properties)).all()
    session.rollback()
    assert {key: (kind, at, exact(properties)) for key, kind, at, properties in stored} == {
        r["external_id"]: (r["type"], r["occurred_at"].astimezone(UTC), exact(r["properties"])) for r in rows
    }


def exact(document) -> str:
    """A document as canonical JSON text: ``True`` and ``1`` differ there, though Python finds them equal."""
    return json.dumps(document, sort_keys=True)


def test_a_naive_timestamp_is_refused_before_the_statement():
    with pytest.raises(ValueError, match="naive datetime"):
        as_recordset([{"occurred_at": datetime(2026, 1, 1, 12, 0)}], ["occurred_at"])


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_float_json_cannot_hold_is_refused_before_the_statement(value):
    with pytest.raises(ValueError, match="JSON compliant"):
        as_recordset([{"score": value}], ["score"])


def test_a_value_with_no_json_form_is_refused_naming_its_type():
    with pytest.raises(TypeError, match="Decimal"):
        as_recordset([{"value": Decimal("1.5")}], ["value"])


@pytest.mark.parametrize(
    ("row", "named"),
    [
        ({"contact_id": 1, "tag": "pizza"}, r"row 1: missing \['score'\], unexpected \[\]"),
        ({"contact_id": 1, "tag": "pizza", "score": 1.0, "scroe": 2.0}, r"row 1: missing \[\], unexpected \['scroe'\]"),
    ],
)
def test_a_row_without_exactly_the_columns_is_refused_naming_it(row, named):
    # json_to_recordset would store a missing key as NULL and drop an unknown one without a word.
    columns = ("contact_id", "tag", "score")
    with pytest.raises(ValueError, match=named):
        as_recordset([{"contact_id": 1, "tag": "wine", "score": 1.0}, row], columns)
