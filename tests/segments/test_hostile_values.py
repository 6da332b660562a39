"""Hostile values in imports: scores past learning's scale, impossible times, invisible characters, odd encodings."""

from __future__ import annotations

import io
import json
import unicodedata
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from delivery.learning import CLICK_POINTS, raise_interests
from delivery.responses import ConversionError, record_conversion
from segments.db import utcnow
from segments.event_times import CLOCK_SKEW
from segments.imports import FileProblem, RejectList, import_contacts, import_events, values
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


# -- invisible and control characters ---------------------------------------------------------------


@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029", "\u202e", "\u2066", "\x9b"])
def test_invisible_characters_are_rejected_in_every_text_column(session, char):
    code = f"U+{ord(char):04X}"
    header = "email,first_name,attr:note,id:shop\n"
    summary, reasons = contacts(
        session,
        header
        + f"a@example.com,Eve{char}Bcc: victim2@example.com,,\n"
        + f"b@example.com,,x{char}y,\n"
        + f"c@example.com,,,S{char}1\n"
        + f"d{char}@example.com,,,\n"
        + "ok@example.com,Zoë \u200d,,\n",
    )
    assert (summary.created, summary.rejected) == (1, 4)
    for line, column in [(2, "first_name"), (3, "attr:note"), (4, "id:shop"), (5, "email")]:
        assert reasons[line].startswith(f"{column}: ") and code in reasons[line], reasons[line]

    record = {"type": "call", "occurred_at": "2026-11-01T10:00:00Z", "phone": "+34600000001"}
    lines = [
        {**record, "properties": {"note": f"a{char}b"}},
        {**record, "type": f"ca{char}ll"},
        {**record, "identities": {"shop": f"S{char}2"}},
    ]
    summary, reasons = events(session, "\n".join(json.dumps(line) for line in lines) + "\n", format="jsonl")
    assert summary.rejected == 3
    assert [reasons[n].split(":")[0] for n in (1, 2, 3)] == ["properties.note", "type", "id"]
    assert all(code in reason for reason in reasons.values())


@given(before=st.text(VISIBLE, max_size=20), char=INVISIBLE, after=st.text(VISIBLE, max_size=20))
def test_any_text_with_an_invisible_control_is_rejected(before, char, after):
    for multi_line in (False, True):
        if multi_line and char in "\t\n\r":
            continue  # a multi-line value may hold tabs and line breaks
        with pytest.raises(values.BadValue, match=f"U\\+{ord(char):04X}|line break"):
            values.text(before + "x" + char + "x" + after, 100, multi_line=multi_line)
        if char not in "\t\n\r":  # ordinary whitespace around a value is trimmed; these are refused even there
            with pytest.raises(values.BadValue, match=f"U\\+{ord(char):04X}"):
                values.text(before + char, 100, multi_line=multi_line)


@given(value=st.text(VISIBLE, max_size=40))
def test_any_text_without_one_passes(value):
    assert values.text(value, 100) == value.strip(values.TRIMMED)
    assert values.text(value, 100, multi_line=True) == value.strip(values.TRIMMED)


def test_the_refused_set_follows_unicode_categories():
    for code in range(0x30000):
        char = chr(code)
        category = unicodedata.category(char)
        bidi = unicodedata.bidirectional(char) in {"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"}
        if category == "Cs":
            continue
        refused = category in ("Cc", "Zl", "Zp") or bidi
        try:
            values.text(f"a{char}b", 10)
        except values.BadValue:
            assert refused, f"U+{code:04X} ({category}) is refused"
        else:
            assert not refused, f"U+{code:04X} ({category}) is accepted"


# -- encodings: say what the file is ----------------------------------------------------------------


@pytest.mark.parametrize(
    "encoding, guess",
    [
        ("utf-16", "UTF-16"),
        ("utf-16-le", "UTF-16"),
        ("utf-16-be", "UTF-16"),
        ("utf-32", "UTF-32"),
        ("utf-32-le", "UTF-32"),
    ],
)
def test_a_utf16_or_utf32_file_is_named_as_such(session, encoding, guess):
    data = "email,first_name\nana@example.com,Ana\n".encode(encoding)
    with pytest.raises(FileProblem) as caught:
        contacts(session, data)
    message = str(caught.value)
    assert f"not UTF-8 (it looks like {guess}: save it as UTF-8)" in message
    assert "\\x" not in message and "\\u" not in message
    with pytest.raises(FileProblem, match=f"looks like {guess}"):
        import_events(session, io.BytesIO(data), channel="pos")


def test_a_header_that_is_not_utf8_is_named_as_such(session):
    with pytest.raises(FileProblem) as caught:
        contacts(session, "email,prénom\nana@example.com,Ana\n".encode("latin-1"))
    assert "not UTF-8" in str(caught.value) and "0xE9" in str(caught.value)
    with pytest.raises(FileProblem, match="not UTF-8"):
        contacts(session, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
