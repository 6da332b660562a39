"""`patron contacts import` and `patron events import` as an operator runs them."""

import csv
import json

from sqlalchemy import select

from segments.models import Contact


def test_contacts_import_json_summary_and_rejects_file(runner, tmp_path, session):
    path = tmp_path / "customers.csv"
    path.write_text("email,first_name,locale\nana@example.com,Ana,es\nnope,Bob,en\ncarl@example.com,Carl,xx-invalid-\n")
    result = runner.invoke(args=["contacts", "import", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == {
        "rows": 3,
        "lines": 4,
        "created": 1,
        "updated": 0,
        "rejected": 2,
        "unchanged": 0,
        "kept_own_choices": {},
        "rejects_file": str(path) + ".rejects.csv",
    }
    with open(report["rejects_file"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(row["line"], row["email"]) for row in rows] == [("3", "nope"), ("4", "carl@example.com")]
    assert "email" in rows[0]["reason"] and "locale" in rows[1]["reason"]
    assert session.scalars(select(Contact.email)).all() == ["ana@example.com"]


def test_contacts_import_unknown_column_fails_naming_file_and_column(runner, tmp_path):
    path = tmp_path / "typo.csv"
    path.write_text("emial,first_name\nana@example.com,Ana\n")
    result = runner.invoke(args=["contacts", "import", str(path)])
    assert result.exit_code == 1
    assert str(path) in result.output and "'emial': unknown column" in result.output


def test_events_import_picks_jsonl_by_extension_and_custom_rejects_path(runner, tmp_path, session):
    path = tmp_path / "calls.jsonl"
    path.write_text(
        json.dumps({"id": "1", "type": "call", "occurred_at": "2026-11-20T10:00:00Z", "email": "ana@example.com"})
        + "\nnot json\n"
    )
    rejects = tmp_path / "bad-calls.csv"
    result = runner.invoke(
        args=["events", "import", str(path), "--channel", "call_centre", "--rejects", str(rejects), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["created"] == 1
    assert rejects.read_text().splitlines()[1].startswith("2,is not JSON")
    again = runner.invoke(args=["events", "import", str(path), "--channel", "call_centre", "--json"])
    assert json.loads(again.stdout)["duplicates"] == 1


def test_events_import_rejects_a_bad_channel_name(runner, tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("type,occurred_at,email\n")
    result = runner.invoke(args=["events", "import", str(path), "--channel", "Point Of Sale"])
    assert result.exit_code == 2 and "--channel" in result.output


def test_suppress_then_import_keeps_the_address_suppressed(runner, tmp_path, session):
    assert runner.invoke(args=["contacts", "suppress", "Ana@Example.com", "--reason", "complained"]).exit_code == 0
    path = tmp_path / "c.csv"
    path.write_text("email\nana@example.com\n")
    runner.invoke(args=["contacts", "import", str(path)])
    assert session.scalars(select(Contact.status)).one() == "complained"


def test_a_rejects_file_that_cannot_be_written_stops_before_any_row(runner, tmp_path, session):
    path = tmp_path / "customers.csv"
    path.write_text("email,first_name\nana@example.com,Ana\nnope,Bob\n")
    events = tmp_path / "events.csv"
    events.write_text("email,type,occurred_at\nana@example.com,purchase,2026-11-01T10:00:00Z\n")
    nowhere = tmp_path / "no-such-folder" / "rejects.csv"
    for args in (
        ["contacts", "import", str(path), "--rejects", str(nowhere)],
        ["events", "import", str(events), "--channel", "pos", "--rejects", str(nowhere)],
    ):
        result = runner.invoke(args=args)
        assert result.exit_code == 1, result.output
        assert result.output.count("\n") == 1 and "rejects file" in result.output and "Traceback" not in result.output
    assert session.scalars(select(Contact.email)).all() == []
