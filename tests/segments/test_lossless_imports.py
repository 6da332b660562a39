"""An import never loses a row silently: every data record read is created, updated, unchanged or rejected.

The fault kind: a stray quote used to swallow the rest of a file into one
field (10,002 rows in, ``rows: 4448, rejected: 1`` out). Every test here reads
what the operator sees: the summary's counts, the contacts and events in the
database, and the rejects file parsed as CSV.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from segments.db import make_session_factory
from segments.imports import FileProblem, RejectList, import_contacts, import_events
from segments.imports.reading import MAX_RECORD_CHARS, MAX_RECORD_LINES
from segments.models import Contact, Event
from tests.conftest import empty_tables
from tests.segments.test_imports import counts


def contacts_import(session, text: str, **kwargs):
    rejects = RejectList()
    summary = import_contacts(session, io.BytesIO(text.encode()), rejects=rejects, **kwargs)
    session.commit()
    return summary, rejects.rows


def accounted_for(summary) -> bool:
    """Every data record read was created, updated, unchanged or rejected (events: duplicates)."""
    counted = summary.created + summary.updated + summary.rejected
    return summary.rows == counted + summary.details.get("duplicates", 0) + summary.details.get("unchanged", 0)


def stray_quote_file(rows: int = 10_002, stray_line: int = 3) -> str:
    """A contacts CSV of ``rows`` data rows whose line ``stray_line`` opens a quote that never closes."""
    lines = ["email,first_name,last_name"] + [f"user{i}@example.com,User{i},Last{i}" for i in range(rows)]
    index = stray_line - 1
    lines[index] = f'user{index - 1}@example.com,"User{index - 1},Last{index - 1}'
    return "\n".join(lines) + "\n"


def emails(session) -> set[str]:
    return set(session.scalars(select(Contact.email)))


def test_the_stray_quote_file_loses_nobody(session):
    summary, rejects = contacts_import(session, stray_quote_file())
    assert summary.as_dict() == counts(rows=10_002, lines=10_003, created=10_001, updated=0, rejected=1)
    [(line, reason, fields)] = rejects
    assert line == 3
    assert reason.startswith(f"lines 3-{2 + MAX_RECORD_LINES}: unterminated quote: no closing quote within")
    assert fields == ["user1@example.com", "User1,Last1"]
    imported = emails(session)
    assert len(imported) == 10_001
    assert "user1@example.com" not in imported
    assert {"user0@example.com", "user2@example.com", "user10001@example.com"} <= imported


def test_the_stray_quote_file_from_the_command_line(runner, tmp_path, session):
    path = tmp_path / "customers.csv"
    path.write_text(stray_quote_file())
    result = runner.invoke(args=["contacts", "import", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == {
        "rows": 10_002,
        "lines": 10_003,
        "created": 10_001,
        "updated": 0,
        "rejected": 1,
        "unchanged": 0,
        "kept_own_choices": {},
        "rejects_file": f"{path}.rejects.csv",
    }
    with open(report["rejects_file"], newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert (row["line"], row["email"], row["first_name"]) == ("3", "user1@example.com", "User1,Last1")
    assert "unterminated quote" in row["reason"]
    text = runner.invoke(args=["contacts", "import", str(path)])
    assert text.exit_code == 0, text.output
    assert "10002 rows, 0 created, 0 updated, 1 rejected, 10001 unchanged (10003 lines)" in text.stdout


def test_a_value_with_a_line_break_still_imports(session):
    text = (
        "email,first_name,attr:address\n"
        'ana@example.com,Ana,"Calle Mayor 1\nPiso 2, puerta B"\n'  # one row on lines 2-3
        "bob@example.com,Bob,\n"
    )
    summary, rejects = contacts_import(session, text)
    assert summary.as_dict() == counts(rows=2, lines=4, created=2, updated=0, rejected=0)
    ana = session.scalars(select(Contact).where(Contact.email == "ana@example.com")).one()
    assert ana.attributes == {"address": "Calle Mayor 1\nPiso 2, puerta B"}


def test_a_stray_quote_closed_by_another_gives_back_the_rows_between(session):
    text = (
        "email,first_name,attr:note\n"
        'a@example.com,"Ann,x\n'  # line 2: a stray quote in a one-line column
        "b@example.com,Bob,x\n"
        "c@example.com,Cy,x\n"
        'd@example.com,Dee",x\n'  # line 5: the quote that closes it
        'e@example.com,Eve,"a note\n'  # line 6: a stray in a column that allows line breaks
        "f@example.com,Fay,x\n"
        'g@example.com,Gus,note"\n'  # line 8: closes it; lines 6-8 would make a valid record
    )
    summary, rejects = contacts_import(session, text)
    assert accounted_for(summary)
    assert (summary.rows, summary.lines, summary.rejected) == (7, 8, 2)
    assert [(line, reason.split(":")[0]) for line, reason, _ in rejects] == [(2, "lines 2-5"), (6, "lines 6-8")]
    assert "swallowed the row on line 3" in rejects[0][1]
    assert "swallowed the row on line 7" in rejects[1][1]
    assert [fields for *_, fields in rejects] == [["a@example.com", "Ann,x"], ["e@example.com", "Eve", "a note"]]
    assert emails(session) == {f"{c}@example.com" for c in "bcdfg"}


def test_a_quoted_line_break_where_none_is_allowed_is_one_reject_naming_its_lines(session):
    text = 'email,first_name\na@example.com,"Ann\nMarie"\nb@example.com,Bob\n'
    summary, rejects = contacts_import(session, text)
    assert summary.as_dict() == counts(rows=2, lines=4, created=1, updated=0, rejected=1)
    assert rejects == [(2, "lines 2-3: first_name: contains a line break", ["a@example.com", "Ann\nMarie"])]


def test_an_unterminated_quote_at_the_end_of_the_file(session):
    summary, rejects = contacts_import(session, 'email,first_name\na@example.com,Ann\nb@example.com,"Bob\n')
    assert (summary.rows, summary.lines, summary.created, summary.rejected) == (2, 3, 1, 1)
    assert rejects == [(3, "line 3: unterminated quote: no closing quote before the end of the file", [
        "b@example.com", "Bob"])]  # fmt: skip


def test_a_record_past_the_character_limit_is_rejected_and_reading_goes_on(session):
    huge = "x" * (MAX_RECORD_CHARS + 10)
    half = "x" * 60_000
    text = f'email,attr:note\na@example.com,{huge}\nb@example.com,fine\nc@example.com,"{half}\n{half}"\n'
    summary, rejects = contacts_import(session, text)
    assert accounted_for(summary)
    assert (summary.rows, summary.lines, summary.created) == (4, 5, 1)
    reasons = [(line, reason) for line, reason, _ in rejects]
    assert reasons[0] == (2, f"is longer than {MAX_RECORD_CHARS:,} characters")
    # Two lines of 60,000 characters pass the limit: the first is set aside, the second read by itself.
    assert reasons[1][0] == 4 and reasons[1][1].startswith("line 4: unterminated quote: no closing quote within")
    assert reasons[2] == (5, "email: is 60001 characters long; the limit is 254")
    assert emails(session) == {"b@example.com"}


def test_a_header_with_an_unterminated_quote_stops_naming_the_line(runner, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('email,"first_name\na@example.com,Ann\n')
    result = runner.invoke(args=["contacts", "import", str(path)])
    assert result.exit_code == 1
    assert f"{path}: the header row cannot be read: lines 1-2: unterminated quote" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "header, message",
    [
        ('email,"first_name\n', "the header row cannot be read: lines 1-2: unterminated quote"),
        ('email,"first\nname"\n', "the header row cannot be read: lines 1-2: a quoted line break"),
        (
            "email," + "x" * MAX_RECORD_CHARS + "\n",
            f"the header row cannot be read: line 1: is longer than {MAX_RECORD_CHARS:,}",
        ),
    ],
)
def test_a_header_that_cannot_be_read_names_its_lines(session, header, message):
    with pytest.raises(FileProblem, match=message):
        contacts_import(session, header + "a@example.com,Ann\n")
    assert emails(session) == set()


def test_events_csv_with_a_stray_quote_loses_no_event(session):
    rows = ["id,type,occurred_at,email,prop:store"] + [
        f"E{i},purchase,2026-11-01T10:00:00Z,buyer{i % 7}@example.com,Centro" for i in range(500)
    ]
    rows[3] = 'E2,purchase,2026-11-01T10:00:00Z,buyer2@example.com,"Centro'
    rejects = RejectList()
    summary = import_events(session, io.BytesIO(("\n".join(rows) + "\n").encode()), channel="pos", rejects=rejects)
    session.commit()
    assert accounted_for(summary)
    assert summary.as_dict() == {
        "rows": 500, "lines": 501, "created": 499, "updated": 0, "rejected": 1, "duplicates": 0, "contacts_created": 7,
    }  # fmt: skip
    assert [(line, reason.startswith("lines 4-103: unterminated quote")) for line, reason, _ in rejects.rows] == [
        (4, True)
    ]
    assert session.scalar(select(func.count()).select_from(Event)) == 499


def test_events_json_lines_count_every_line(session):
    good = json.dumps({"id": "1", "type": "call", "occurred_at": "2026-11-20T10:00:00Z", "email": "a@example.com"})
    again = json.dumps({"id": "1", "type": "call", "occurred_at": "2026-11-20T10:00:00Z", "email": "a@example.com"})
    text = f'{good}\n\n{{"id": "2", "type": "call\n{again}\n' + '{"type": "' + "x" * MAX_RECORD_CHARS + '"}\n'
    rejects = RejectList()
    summary = import_events(session, io.BytesIO(text.encode()), channel="call_centre", format="jsonl", rejects=rejects)
    assert accounted_for(summary)
    assert (summary.rows, summary.lines, summary.created, summary.details["duplicates"]) == (4, 5, 1, 1)
    assert [(line, reason.split(":")[0]) for line, reason, _ in rejects.rows] == [
        (3, "is not JSON"),
        (5, f"is longer than {MAX_RECORD_CHARS:,} characters"),
    ]


# A row: valid on one line, valid with a line break in its address, a bad
# address, one field too many, or a stray quote in any cell (at its start,
# middle or end).
KINDS = st.sampled_from(["valid", "multi_line", "bad", "too_many", "stray"])


CONTACTS_HEADER = "email,first_name,attr:tier,attr:address"
EVENTS_HEADER = "email,id,type,occurred_at,prop:address"


def contact_cells(i: int) -> list[str]:
    return [f"u{i}@example.com", f"N{i}", f"t{i}", f"Road {i}"]


def event_cells(i: int) -> list[str]:
    return [f"u{i % 5}@example.com", f"E{i}", "purchase", "2026-11-01T10:00:00Z", f"Road {i}"]


@st.composite
def csv_files(draw, header: str, cells_of):
    """A CSV of random rows and, per valid row, its key (first two cells) and its address (the last cell).

    ``cells_of(i)`` gives row i's cells: an email address first, the address (an attribute or property) last.
    """
    kinds = draw(st.lists(KINDS, min_size=1, max_size=40))
    lines, valid = [header], {}
    for i, kind in enumerate(kinds):
        cells = cells_of(i)
        key = (cells[0], cells[1])
        if kind == "valid":
            cells[-1] = draw(st.sampled_from([cells[-1], f'"{cells[-1]}, flat 2"', ""]))
            valid[key] = cells[-1].strip('"')
        elif kind == "multi_line":
            cells[-1] = f"Calle {i}\n{'Piso 2' * draw(st.integers(1, 3))}"
            valid[key] = cells[-1]
            cells[-1] = f'"{cells[-1]}"'
        elif kind == "bad":
            cells[0] = f"not-an-email-{i}"
        elif kind == "too_many":
            cells.append("surplus")
        else:
            column = draw(st.integers(0, len(cells) - 1))
            at = draw(st.integers(0, len(cells[column])))
            cells[column] = cells[column][:at] + '"' + cells[column][at:]
        lines.append(",".join(cells))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    return ending.join(lines) + ending, valid


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(data=csv_files(CONTACTS_HEADER, contact_cells), batch_size=st.sampled_from([1, 3, 2000]))
def test_no_row_after_a_bad_one_is_lost(engine, data, batch_size):
    text, valid = data
    empty_tables(engine)
    with make_session_factory(engine)() as session:
        summary, rejects = contacts_import(session, text, batch_size=batch_size)
        assert accounted_for(summary)
        assert summary.lines == text.count("\n")
        assert summary.rejected == len(rejects)
        imported = dict(session.execute(select(Contact.email, Contact.attributes)).all())
    for (email, _name), address in valid.items():
        assert email in imported, (email, text)
        assert imported[email].get("address", "") == address


@PROPERTY
@given(data=csv_files(EVENTS_HEADER, event_cells), batch_size=st.sampled_from([1, 3, 2000]))
def test_no_event_after_a_bad_one_is_lost(engine, data, batch_size):
    text, valid = data
    empty_tables(engine)
    rejects = RejectList()
    with make_session_factory(engine)() as session:
        summary = import_events(
            session, io.BytesIO(text.encode()), channel="pos", rejects=rejects, batch_size=batch_size
        )
        session.commit()
        assert accounted_for(summary)
        assert summary.lines == text.count("\n")
        assert summary.rejected == len(rejects.rows)
        imported = dict(session.execute(select(Event.external_id, Event.properties)).all())
    for (_email, external_id), address in valid.items():
        assert external_id in imported, (external_id, text)
        assert imported[external_id].get("address", "") == address
