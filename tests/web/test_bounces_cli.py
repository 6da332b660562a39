"""`patron bounces process` as an operator runs it, on a Maildir of bounces about a real send."""

from __future__ import annotations

import json
import mailbox
import re
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from delivery.models import Response
from segments.models import Contact, Suppression
from tests.campaigns.conftest import pack, patron_environment  # noqa: F401  (pack: a fixture)
from tests.delivery.bounce_mail import send_to
from tests.triggers import quoted, refusing_trigger

# fixture → the kind it must be reported as
FIXTURES = {
    "postfix_user_unknown.eml": "hard",
    "qmail.eml": "hard",
    "arf_complaint.eml": "complaint",
    "soft_mailbox_full.eml": "soft",
    "postfix_delayed.eml": "delayed",
    "out_of_office.eml": "auto_reply",
    "mailto_unsubscribe.eml": "unsubscribe",
}


def _address(fixture: str) -> str:
    return f"{fixture.split('.')[0].replace('_', '-')}@example.org"


@pytest.fixture
def maildir(app, session, engine, tmp_path, pack, smtp_server):  # noqa: F811
    """A bounce Maildir: one message per fixture about a real send (half in new/, half in cur/) and one of garbage."""
    sent = send_to(
        session, engine, tmp_path, smtp_server, [_address(f) for f in FIXTURES], secret=app.config["SECRET_KEY"]
    )
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    keys = {}
    for number, fixture in enumerate(sorted(FIXTURES)):
        message = mailbox.MaildirMessage(sent[_address(fixture)].fill(fixture))
        message.set_subdir("cur" if number % 2 else "new")
        keys[box.add(message)] = fixture
    keys[box.add(b"\x00\xff garbage \x89PNG")] = "garbage"
    return tmp_path / "bounces", keys, sent


def _results(output: str, keys: dict[str, str]) -> dict[str, dict]:
    """The --json lines, by fixture name."""
    results = {}
    for line in output.splitlines():
        result = json.loads(line)
        key = result["file"].split("/", 1)[1].split(":")[0]
        results[keys[key]] = result
    return results


def test_json_reports_every_message_and_a_second_run_changes_nothing(runner, session, maildir):
    path, keys, sent = maildir
    result = runner.invoke(args=["bounces", "process", "--maildir", str(path), "--json"])
    assert result.exit_code == 0, result.output
    results = _results(result.stdout, keys)
    assert set(results) == {*FIXTURES, "garbage"}
    for fixture, kind in FIXTURES.items():
        message = sent[_address(fixture)]
        assert set(results[fixture]) >= {"file", "recipient", "status", "kind", "delivery_id"}
        assert (results[fixture]["kind"], results[fixture]["delivery_id"]) == (kind, message.delivery_id)
        assert results[fixture]["recipient"] == message.email
        assert (path / results[fixture]["file"]).is_file()  # new/… or cur/…, flags and all, as on disk
    assert results["postfix_user_unknown.eml"]["status"] == "5.1.1"
    assert results["garbage"] | {"file": None, "reason": None} == {
        "file": None,
        "recipient": None,
        "status": None,
        "kind": "unrecognized",
        "delivery_id": None,
        "reason": None,
    }
    session.rollback()  # end the read snapshot taken before the command wrote
    suppressed = dict(session.execute(select(Suppression.email, Suppression.reason)).all())
    assert suppressed == {
        _address("postfix_user_unknown.eml"): "bounced",
        _address("qmail.eml"): "bounced",
        _address("arf_complaint.eml"): "complained",
        _address("mailto_unsubscribe.eml"): "unsubscribed",
    }
    responses = session.scalar(select(func.count(Response.id)))

    again = runner.invoke(args=["bounces", "process", "--maildir", str(path), "--json"])
    assert again.exit_code == 0, again.output
    assert {name: r["kind"] for name, r in _results(again.stdout, keys).items()} == {
        name: r["kind"] for name, r in results.items()
    }
    session.rollback()  # end the read snapshot taken before the command wrote
    assert session.scalar(select(func.count(Response.id))) == responses


def test_suppressions_survive_reimporting_the_contacts(runner, session, maildir, tmp_path):
    path, _, _ = maildir
    assert runner.invoke(args=["bounces", "process", "--maildir", str(path), "--json"]).exit_code == 0
    csv = tmp_path / "customers.csv"
    bounced, complained = _address("postfix_user_unknown.eml"), _address("arf_complaint.eml")
    csv.write_text(f"email,first_name\n{bounced},Back\n{complained},Again\n")
    imported = runner.invoke(args=["contacts", "import", str(csv), "--json"])
    assert imported.exit_code == 0, imported.output
    session.rollback()  # end the read snapshot taken before the command wrote
    statuses = dict(session.execute(select(Contact.email, Contact.status)).all())
    assert (statuses[bounced], statuses[complained]) == ("bounced", "complained")
    assert session.get(Suppression, bounced).reason == "bounced"


def test_text_mode_prints_a_table_and_counts_and_move_processed_moves_all_but_unrecognized(runner, maildir):
    path, _, _ = maildir
    result = runner.invoke(args=["bounces", "process", "--maildir", str(path), "--move-processed"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["file", "kind", "status", "recipient", "delivery"]
    assert len(lines) == 1 + len(FIXTURES) + 1 + 1
    assert lines[-1] == (
        "8 messages: 2 hard, 1 soft, 1 complaint, 1 auto_reply, 1 unsubscribe, 1 delayed, 1 unrecognized"
    )
    box = mailbox.Maildir(path, create=False)
    assert [box.get_bytes(key)[:2] for key in box.keys()] == [b"\x00\xff"]  # only the garbage stays
    assert len(box.get_folder("processed")) == len(FIXTURES)


@pytest.mark.parametrize("problem", ["missing", "a file", "no cur"])
def test_a_missing_or_broken_maildir_is_one_line_and_exit_1(runner, tmp_path, problem):
    path = tmp_path / "box"
    if problem == "a file":
        path.write_text("not a maildir")
    elif problem == "no cur":
        (path / "new").mkdir(parents=True)
    result = runner.invoke(args=["bounces", "process", "--maildir", str(path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0 and str(path) in result.output


def test_a_message_that_crashes_a_bounce_detector_prints_no_traceback(engine, tmp_path):
    """flufl.bounce logs a crashing detector's traceback (a From with no address does it); a real process shows none."""
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    box.add(b"From: \x00\xff\n\ngarbage\n")
    result = subprocess.run(
        [sys.executable, "-m", "web.cli", "bounces", "process", "--maildir", str(tmp_path / "bounces"), "--json"],
        env=patron_environment(engine, tmp_path, "outbox:"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr
    assert json.loads(result.stdout)["kind"] == "unrecognized"


@pytest.fixture
def refusing_suppression(engine):
    """A real database fault for one message: a trigger refuses suppressing the Postfix fixture's address."""
    condition = f"NEW.email = {quoted(_address('postfix_user_unknown.eml'))}"
    with refusing_trigger(
        engine, "refuse_suppression", "suppressions", condition, "suppression refused", detail="a second line"
    ):
        yield


def test_a_message_the_database_refuses_is_reported_kept_and_the_rest_go_on(
    runner, session, maildir, refusing_suppression
):
    path, keys, _ = maildir
    result = runner.invoke(args=["bounces", "process", "--maildir", str(path), "--json", "--move-processed"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    results = _results(result.stdout, keys)
    failed = results["postfix_user_unknown.eml"]
    assert failed["kind"] == "error"
    # the driver's error in one line: not its detail, nor the statement and parameters SQLAlchemy appends
    assert re.fullmatch(r"not processed: \w+Error: suppression refused", failed["reason"])
    assert {name: r["kind"] for name, r in results.items() if name != "postfix_user_unknown.eml"} == {
        **{name: kind for name, kind in FIXTURES.items() if name != "postfix_user_unknown.eml"},
        "garbage": "unrecognized",
    }
    session.rollback()  # end the read snapshot taken before the command wrote
    suppressed = set(session.scalars(select(Suppression.email)))
    assert _address("postfix_user_unknown.eml") not in suppressed and _address("qmail.eml") in suppressed
    box = mailbox.Maildir(path, create=False)
    assert (path / failed["file"]).is_file()  # not moved: the next run processes it again
    assert len(box.get_folder("processed")) == len(FIXTURES) - 1
    session.rollback()  # let the fixture drop its trigger (PostgreSQL waits for this snapshot's lock)
