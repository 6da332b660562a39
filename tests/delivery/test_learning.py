"""The closed loop's arithmetic: whatever order clicks, conversions and time come in, scores match a plain model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from delivery.learning import CLICK_POINTS, CONVERSION_POINTS, MAX_SCORE, raise_interests, top_interest
from segments.models import Contact, Interest

START = datetime(2026, 1, 1, tzinfo=UTC)
TAGS = ("pizza", "pasta", "wine")

weights = st.dictionaries(st.sampled_from(TAGS), st.floats(0.01, 25.0), min_size=1, max_size=3)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("click"), weights),
        st.tuples(st.just("conversion"), weights),
        st.tuples(st.just("wait"), st.floats(0.0, 90 * 86400.0)),
    ),
    max_size=25,
)


class Reference:
    """The rules in plain Python: decay to now with the half-life, add points × weight, clamp to [0, MAX_SCORE]."""

    def __init__(self, half_life_days: float):
        self.half_life_seconds = half_life_days * 86400.0
        self.scores: dict[str, tuple[float, datetime]] = {}

    def raise_(self, weights: dict[str, float], points: float, now: datetime) -> None:
        for tag, weight in weights.items():
            score, at = self.scores.get(tag, (0.0, now))
            age = max((now - at).total_seconds(), 0.0)
            decayed = score * 0.5 ** (age / self.half_life_seconds)
            self.scores[tag] = (min(max(decayed + points * weight, 0.0), MAX_SCORE), now)


@pytest.fixture
def contact(session):
    contact = Contact(email="loop@example.com", status="active")
    session.add(contact)
    session.commit()
    return contact


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=steps,
    half_life_days=st.floats(0.5, 120.0),
    initial=st.dictionaries(st.sampled_from(TAGS), st.floats(0.0, MAX_SCORE)),
)
def test_scores_stay_in_bounds_and_match_the_reference(session, contact, steps, half_life_days, initial):
    session.execute(delete(Interest).where(Interest.contact_id == contact.id))
    reference = Reference(half_life_days)
    for tag, score in initial.items():  # as imported before any response
        session.add(Interest(contact_id=contact.id, tag=tag, score=score, updated_at=START))
        reference.scores[tag] = (score, START)
    session.commit()
    now = START
    for kind, value in steps:
        if kind == "wait":
            now += timedelta(seconds=value)
            continue
        points = CLICK_POINTS if kind == "click" else CONVERSION_POINTS
        raise_interests(session, contact.id, value, points, now=now, half_life_days=half_life_days)
        session.commit()
        reference.raise_(value, points, now)
    stored = {
        tag: (score, at)
        for tag, score, at in session.execute(
            select(Interest.tag, Interest.score, Interest.updated_at).where(Interest.contact_id == contact.id)
        )
    }
    assert set(stored) == set(reference.scores)
    for tag, (score, at) in stored.items():
        expected, expected_at = reference.scores[tag]
        assert 0.0 <= score <= MAX_SCORE
        assert score == pytest.approx(expected, rel=1e-6, abs=1e-9), tag
        assert at == expected_at


def test_nothing_to_teach_writes_nothing(session, contact):
    for unusable in (None, {}, {"pizza": 0}, {"pizza": -1.0}, {"pizza": True}, {"": 1.0}, {"x" * 65: 1.0}):
        raise_interests(session, contact.id, unusable, CLICK_POINTS, now=START, half_life_days=30.0)
    session.commit()
    assert session.scalars(select(Interest)).all() == []


def test_the_top_interest_is_the_heaviest_tag_ties_alphabetical():
    assert top_interest({"pasta": 0.5, "pizza": 1.0}) == "pizza"
    assert top_interest({"wine": 1.0, "beer": 1.0}) == "beer"
    assert top_interest(None) is None and top_interest({}) is None
