"""Hostile values in imports: scores past learning's scale, impossible times, invisible characters, odd encodings."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import strategies as st
from sqlalchemy import select

from delivery.learning import CLICK_POINTS, raise_interests
from delivery.responses import ConversionError, record_conversion
from segments.db import utcnow
from segments.event_times import CLOCK_SKEW
from segments.imports import RejectList, import_contacts, import_events
from segments.models import Contact, Event, Interest

# What a text field must refuse: C0 and C1 controls, line and paragraph separators, bidi embeddings,
# overrides and isolates.
BIDI_CONTROLS = [chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]]
INVISIBLE = st.characters(categories=["Cc", "Zl", "Zp"]) | st.sampled_from(BIDI_CONTROLS)
VISIBLE = st.characters(blacklist_categories=["Cc", "Zl", "Zp", "Cs"], blacklist_characters="".join(BIDI_CONTROLS))


def contacts(session, data: str | bytes):
    rejects = RejectList()
    raw = data.encode() if isinstance(data, str) else data
    summary = import_contacts(session, io.BytesIO(raw), rejects=rejects)
    session.commit()
    return summary, {line: reason for line, reason, _ in rejects.rows}


def events(session, data: str, **kwargs):
    rejects = RejectList()
    summary = import_events(session, io.BytesIO(data.encode()), rejects=rejects, channel="pos", **kwargs)
    session.commit()
    return summary, {line: reason for line, reason, _ in rejects.rows}


# -- interest scores: one scale with learning --------------------------------------------------------


def test_an_imported_score_above_learnings_scale_is_rejected_naming_line_and_column(session):
    summary, reasons = contacts(
        session, "email,interest:pizza\nmia.wilson1164@inbox.example.com,500\nana@example.com,100\n"
    )
    assert (summary.created, summary.rejected) == (1, 1)
    assert reasons[2].startswith("interest:pizza: ") and "from 0 to 100" in reasons[2]
    assert session.scalars(select(Interest.score)).all() == [100.0]


def test_a_click_never_lowers_an_imported_score(session):
    contacts(session, "email,interest:pizza\nana@example.com,100\n")
    ana = session.scalars(select(Contact.id)).one()
    raise_interests(session, ana, {"pizza": 1.0}, CLICK_POINTS, now=utcnow(), half_life_days=30)
    session.commit()
    assert session.scalars(select(Interest.score)).one() >= 100.0 - 1e-6


# -- event times: not impossible --------------------------------------------------------------------


def test_impossible_event_times_are_rejected_in_csv_and_json_lines(session):
    soon = (utcnow() + timedelta(minutes=1)).isoformat()
    later = (utcnow() + timedelta(hours=1)).isoformat()
    rows = [
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "1999-12-31T23:59:59Z",
        later,
        "0001-01-01T00:00:00+02:00",
        "9999-12-31T23:59:59-05:00",
        soon,
        "2026-11-01T10:00:00Z",
    ]
    text = "type,occurred_at,id:pos\n" + "".join(f"purchase,{when},POS-{i}\n" for i, when in enumerate(rows))
    summary, reasons = events(session, text)
    assert (summary.created, summary.rejected) == (2, 6)
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7]
    for line in (2, 5):
        assert reasons[line].startswith("occurred_at: ") and "in the future" in reasons[line]
    for line in (3, 4):
        assert reasons[line].startswith("occurred_at: ") and "before 2000-01-01" in reasons[line]
    for line in (6, 7):
        assert reasons[line].startswith("occurred_at: ") and "outside the years 1 to 9999" in reasons[line]

    lines = [json.dumps({"type": "call", "occurred_at": when, "phone": "+34600000001"}) for when in rows]
    summary, reasons = events(session, "\n".join(lines) + "\n", format="jsonl", source="calls")
    assert (summary.created, summary.rejected) == (2, 6)
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6]
    assert session.scalar(select(Event.occurred_at).order_by(Event.occurred_at.desc()).limit(1)) < utcnow() + CLOCK_SKEW


@pytest.mark.parametrize("when", [timedelta(hours=1), datetime(1999, 12, 31, 23, 59, tzinfo=timezone.utc)])
def test_a_conversion_follows_the_same_rule(session, when):
    with pytest.raises(ConversionError, match="^occurred_at: .*(in the future|before 2000-01-01)"):
        record_conversion(
            session,
            order_id="A-1",
            value="12.50",
            currency="EUR",
            email="ana@example.com",
            occurred_at=utcnow() + when if isinstance(when, timedelta) else when,
            window_days=7,
            half_life_days=30,
            source="test",
        )
