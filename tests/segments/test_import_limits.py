"""Hostile import files (issue #8, item 7): a huge line, deep JSON, NUL and lone surrogates.

The huge line is read by the real `patron` script in a child process whose
peak memory (``ru_maxrss`` from ``os.wait4``, for that child alone) is compared
with the same import of a file whose bad line is short.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from segments.imports import RejectList, RejectsFile, import_contacts, import_events
from segments.imports.reading import MAX_JSON_NESTING
from segments.models import Contact, Event
from tests.conftest import empty_tables

SCRIPT = Path(sys.executable).parent / "patron"
HUGE = 200 * 1024 * 1024  # characters in the long line
MEMORY_BOUND = 40 * 1024 * 1024  # bytes a long line may add to the import's peak, a fifth of the line
CHUNK = "x" * (1024 * 1024)

# Per file kind: the command, the text before the long value, the long value's line end, and the lines around it.
KINDS = {
    "contacts.csv": (
        ["contacts", "import"],
        "email,first_name\nana@example.com,Ana\nbig@example.com,",
        "\ncarl@example.com,Carl\n",
    ),
    "events.csv": (
        ["events", "import", "--channel", "pos"],
        "type,occurred_at,email\nvisit,2026-11-01T10:00:00Z,ana@example.com\nvisit,2026-11-01T10:00:00Z,",
        "\nvisit,2026-11-02T10:00:00Z,carl@example.com\n",
    ),
    "events.jsonl": (
        ["events", "import", "--channel", "web"],
        '{"type": "visit", "occurred_at": "2026-11-01T10:00:00Z", "email": "ana@example.com"}\n'
        '{"type": "visit", "occurred_at": "2026-11-01T10:00:00Z", "email": "big@example.com", "properties": {"p": "',
        '"}}\n{"type": "visit", "occurred_at": "2026-11-02T10:00:00Z", "email": "carl@example.com"}\n',
    ),
}


@pytest.fixture(scope="module")
def huge_files(tmp_path_factory):
    """Per kind, a file with a HUGE-character line between good lines, and the same file with that line short."""
    folder = tmp_path_factory.mktemp("huge")
    files = {}
    for name, (_command, head, tail) in KINDS.items():
        huge, short = folder / f"huge-{name}", folder / f"short-{name}"
        with open(huge, "w") as file:
            file.write(head)
            for _ in range(HUGE // len(CHUNK)):
                file.write(CHUNK)
            file.write(tail)
        short.write_text(head + "x" * 200_000 + tail)
        files[name] = (huge, short)
    yield files
    for pair in files.values():
        for path in pair:
            path.unlink()


def run_measured(engine, tmp_path: Path, args: list[str]) -> tuple[int, int, str, str]:
    """Run `patron ARGS`; its exit code, peak resident memory in bytes, stdout and stderr."""
    env = {
        **os.environ,
        "PATRON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PATRON_INSTANCE_PATH": str(tmp_path / "instance"),
    }
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        child = subprocess.Popen([str(SCRIPT), *args], env=env, stdout=stdout, stderr=stderr)
        _pid, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_maxrss * 1024, out.read_text(), err.read_text()


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_200_mb_line_is_a_reject_naming_its_line_read_in_bounded_memory(engine, tmp_path, huge_files, kind):
    command = KINDS[kind][0]
    huge, short = huge_files[kind]
    peaks, rejected = {}, {}
    for label, path in (("short", short), ("huge", huge)):
        empty_tables(engine)
        rejects = tmp_path / f"{label}.rejects.csv"
        code, peaks[label], stdout, stderr = run_measured(
            engine, tmp_path, [*command, str(path), "--rejects", str(rejects), "--json"]
        )
        assert code == 0, stderr
        assert "Traceback" not in stderr
        summary = json.loads(stdout)
        assert (summary["rows"], summary["created"], summary["rejected"]) == (3, 2, 1), summary
        with open(rejects, newline="") as file:
            (rejected[label],) = list(csv.DictReader(file))
    assert peaks["huge"] - peaks["short"] < MEMORY_BOUND, {label: peak // 2**20 for label, peak in peaks.items()}
    first_line = 2 if kind.endswith(".jsonl") else 3
    assert rejected["short"]["line"] == rejected["huge"]["line"] == str(first_line)
    assert rejected["huge"]["reason"] == "is longer than 100,000 characters"
    assert max(len(cell or "") for cell in rejected["huge"].values()) <= 1000
    with engine.connect() as connection:
        emails = set(connection.scalars(select(Contact.email)))
        assert {"ana@example.com", "carl@example.com"} <= emails and "big@example.com" not in emails
        if kind.startswith("events"):
            assert connection.scalar(select(func.count()).select_from(Event)) == 2


# --- JSON nested too deep ------------------------------------------------------------


def test_json_nested_a_thousand_levels_is_a_reject_not_a_recursion_error(session):
    deep = "[" * 1000 + "]" * 1000
    lines = [
        '{"type": "visit", "occurred_at": "2026-11-01T10:00:00Z", "email": "ana@example.com"}',
        '{"type": "visit", "occurred_at": "2026-11-01T10:00:00Z", "email": "b@example.com", "properties": '
        + deep
        + "}",
        '{"type": "visit", "occurred_at": "2026-11-01T10:00:00Z", "email": "c@example.com", "id": "x[[[]]"}',
    ]
    rejects = RejectList()
    summary = import_events(
        session, io.BytesIO("\n".join(lines).encode()), channel="web", format="jsonl", rejects=rejects
    )
    session.commit()
    assert (summary.created, summary.rejected) == (2, 1)
    assert [(line, reason) for line, reason, _ in rejects.rows] == [
        (2, f"nests JSON more than {MAX_JSON_NESTING} levels deep")
    ]


# --- values PostgreSQL refuses ----------------------------------------------------------


def test_nul_in_a_contacts_csv_rejects_that_row_naming_the_column(session):
    text = (
        "email,first_name,attr:note\n"
        "ana@example.com,Ana,ok\n"
        "nul@example.com,N\x00l,ok\n"
        "attr@example.com,Attr,a\x00b\n"
        "carl@example.com,Carl,-5\n"
    )
    rejects = RejectList()
    summary = import_contacts(session, io.BytesIO(text.encode()), rejects=rejects)
    session.commit()
    assert (summary.created, summary.rejected) == (2, 2)
    assert [(line, reason) for line, reason, _ in rejects.rows] == [
        (3, "first_name: contains the control character U+0000"),
        (4, "attr:note: contains the control character U+0000"),
    ]
    assert session.scalar(select(Contact.attributes).where(Contact.email == "carl@example.com")) == {"note": -5}


def test_nul_and_lone_surrogates_in_events_reject_that_event_naming_the_field(session, tmp_path):
    def event(email: str, **extra) -> str:
        return json.dumps({"type": "visit", "occurred_at": "2026-11-01T10:00:00Z", "email": email, **extra})

    lines = [
        event("ana@example.com"),
        event("b@example.com", properties={"note": "a\x00b"}),
        event("c@example.com", properties={"note": "a\ud800b"}),
        event("d@example.com", identities={"loyalty": "\udfff"}),
        json.dumps({"type": "vi\x00sit", "occurred_at": "2026-11-01T10:00:00Z", "email": "e@example.com"}),
        event("f@example.com", properties={"\ud800": 1}),
        event("carl@example.com"),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with RejectsFile(tmp_path / "rejects.csv") as rejects:
        summary = import_events(session, path, channel="web", format="jsonl", rejects=rejects)
    session.commit()
    assert (summary.created, summary.rejected) == (2, 5)
    with open(tmp_path / "rejects.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [(row["line"], row["reason"]) for row in rows] == [
        ("2", "properties.note: contains the control character U+0000"),
        ("3", "properties.note: contains a lone surrogate (U+D800), which is not Unicode text"),
        ("4", "id:loyalty: contains a lone surrogate (U+DFFF), which is not Unicode text"),
        ("5", "type: contains the control character U+0000"),
        ("6", "properties.\\ud800: property '\\ud800' must be 1 to 64 letters, digits, '_', '.' or '-'"),
    ]
    assert [row["record"] for row in rows] == lines[1:6]
    assert session.scalar(select(func.count()).select_from(Event)) == 2


def test_nul_in_an_events_csv_property_rejects_that_row(session):
    text = "type,occurred_at,email,prop:note\nvisit,2026-11-01,ana@example.com,ok\nvisit,2026-11-01,b@x.io,a\x00\n"
    rejects = RejectList()
    summary = import_events(session, io.BytesIO(text.encode()), channel="pos", rejects=rejects)
    session.commit()
    assert (summary.created, summary.rejected) == (1, 1)
    assert [(line, reason) for line, reason, _ in rejects.rows] == [
        (3, "prop:note: contains the control character U+0000")
    ]


# --- any line at all ---------------------------------------------------------------

hostile_text = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        ["\x00", "a\x00", "\ud800", "x\udfffy", "=1+1", "-5", "\r", "\n", '"', "a,b", "é", "[[[", "0" * 5000]
    ),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_text),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(hostile_text, children, max_size=3)),
    max_leaves=10,
)
emails = st.one_of(st.sampled_from(["ann@example.com", "ANN@example.com", "bob@x.io"]), hostile_text)
event_objects = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.just("visit"), json_values),
        "occurred_at": st.one_of(st.just("2026-11-01T10:00:00Z"), json_values),
        "email": st.one_of(emails, json_values),
        "id": json_values,
        "identities": st.one_of(st.dictionaries(hostile_text, json_values, max_size=2), json_values),
        "properties": st.one_of(st.dictionaries(hostile_text, json_values, max_size=3), json_values),
    },
)
raw_lines = st.one_of(
    st.binary(max_size=30),
    st.builds(lambda value: json.dumps(value).encode(), st.one_of(event_objects, json_values)),
    st.builds(lambda value: json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"), event_objects),
)
GOOD_FIRST = json.dumps({"type": "visit", "occurred_at": "2026-11-01T10:00:00Z", "email": "first@example.com"})
GOOD_LAST = json.dumps({"type": "visit", "occurred_at": "2026-11-01T10:00:00Z", "email": "last@example.com"})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(raw_lines, max_size=6))
def test_any_jsonl_line_is_imported_or_rejected_and_never_stops_the_import(session, lines):
    data = b"\n".join([GOOD_FIRST.encode(), *lines, GOOD_LAST.encode()]) + b"\n"
    rejects = RejectList()
    summary = import_events(session, io.BytesIO(data), channel="web", format="jsonl", rejects=rejects)
    details = summary.as_dict()
    assert summary.rows == summary.created + summary.rejected + details["duplicates"]
    assert summary.rejected == len(rejects.rows)
    assert {"first@example.com", "last@example.com"} <= set(session.scalars(select(Contact.email)))
    session.rollback()


cells = st.one_of(hostile_text, st.sampled_from(["ann@example.com", "es", "Europe/Madrid", "3", "yes"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.one_of(st.lists(cells, max_size=7), st.binary(max_size=30)), max_size=6))
def test_any_contacts_csv_row_is_imported_or_rejected_and_never_stops_the_import(session, rows):
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["email", "first_name", "locale", "timezone", "attr:note", "interest:x", "consent:news"])
    writer.writerow(["first@example.com", "First"])
    data = buffer.getvalue().encode()
    for row in rows:
        if isinstance(row, bytes):
            data += row + b"\n"
        else:
            buffer = io.StringIO(newline="")
            csv.writer(buffer).writerow(row)
            data += buffer.getvalue().encode("utf-8", "surrogatepass")
    data += b"last@example.com,Last\n"
    rejects = RejectList()
    summary = import_contacts(session, io.BytesIO(data), rejects=rejects)
    assert summary.rows == summary.created + summary.updated + summary.details["unchanged"] + summary.rejected
    assert summary.rejected == len(rejects.rows)
    assert {"first@example.com", "last@example.com"} <= set(session.scalars(select(Contact.email)))
    session.rollback()


def test_a_type_or_id_that_is_not_text_rejects_that_event_only(session):
    good = {"occurred_at": "2026-11-01T10:00:00Z", "email": "ana@example.com"}
    lines = [
        {**good, "type": "visit"},
        {**good, "type": []},
        {**good, "type": "visit", "id": {"a": 1}},
        {**good, "type": "visit", "id": True},
        {**good, "type": "visit", "id": 7},
    ]
    rejects = RejectList()
    data = "\n".join(json.dumps(line) for line in lines).encode()
    summary = import_events(session, io.BytesIO(data), channel="web", format="jsonl", rejects=rejects)
    assert (summary.created, summary.rejected) == (2, 3)
    assert [(line, reason) for line, reason, _ in rejects.rows] == [
        (2, "type: must be text"),
        (3, "id: must be text or a whole number"),
        (4, "id: must be text or a whole number"),
    ]
