"""Hostile values in imports: scores past learning's scale, impossible times, invisible characters, odd encodings."""

from __future__ import annotations

import io

from hypothesis import strategies as st
from sqlalchemy import select

from delivery.learning import CLICK_POINTS, raise_interests
from segments.db import utcnow
from segments.imports import RejectList, import_contacts, import_events
from segments.models import Contact, Interest

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
