"""``patron clicks status`` and ``patron clicks drain``: what an operator sees of a click journal a server left
behind, and getting its clicks into the database without serving, on both databases."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from delivery.journal import ClickJournal, segments
from delivery.models import Response
from segments.models import Event
from tests.web.tracking_fixtures import PATRON

ROOT = Path(__file__).resolve().parents[2]


def journal_in_a_process_that_ends(directory: Path, clicks: list[tuple[int, int]]) -> None:
    """A server that journalled ``clicks`` and was killed before recording them: its segment is closed."""
    script = (
        "import sys, os, signal; from datetime import datetime, UTC; from delivery.journal import ClickJournal\n"
        f"journal = ClickJournal({str(directory)!r})\n"
        f"for d, l in {clicks!r}: journal.append(d, l, datetime.now(UTC), 'Mozilla/5.0')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=False, timeout=60)


def patron(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PATRON, *args], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


def click_ids(mail) -> list[tuple[int, int]]:
    return [(mail.delivery_id, int(path.split("/")[3])) for path in mail.clicks]


def test_status_shows_what_a_killed_server_left_and_drain_records_it_once(engine, session, sent, tmp_path):
    journal = tmp_path / "instance" / "journal"
    bob, ana = sent["bob@example.com"], sent["ana@example.com"]
    journal_in_a_process_that_ends(journal, click_ids(bob))
    journal_in_a_process_that_ends(journal, click_ids(ana)[:1])
    env = {
        "PATH": "/usr/bin:/bin",
        "PATRON_INSTANCE_PATH": str(tmp_path / "instance"),
        "PATRON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PATRON_SECRET_KEY": "x" * 40,
    }
    status = patron(env, "clicks", "status", "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["waiting"] == len(bob.clicks) + 1
    assert sorted(s["waiting"] for s in shown["segments"]) == sorted([len(bob.clicks), 1])
    assert not any(s["busy"] for s in shown["segments"])
    table = patron(env, "clicks", "status")
    assert f"{len(bob.clicks) + 1} clicks waiting in 2 segments" in table.stdout

    drained = patron(env, "clicks", "drain")
    assert drained.returncode == 0, drained.stderr
    assert f"recorded {len(bob.clicks) + 1} clicks" in drained.stdout
    assert "Traceback" not in drained.stderr
    session.commit()
    clicked = select(func.count()).select_from(Response).where(Response.kind == "click")
    assert session.scalar(clicked) == len(bob.clicks) + 1
    assert session.scalar(select(func.count()).select_from(Event).where(Event.type == "click")) == len(bob.clicks) + 1
    assert segments(journal) == [] and json.loads(patron(env, "clicks", "status", "--json").stdout)["waiting"] == 0
    again = patron(env, "clicks", "drain")
    assert "recorded 0 clicks" in again.stdout and session.scalar(clicked) == len(bob.clicks) + 1


def test_a_segment_a_running_server_writes_is_busy_and_left_to_it(engine, sent, tmp_path, session):
    directory = tmp_path / "instance" / "journal"
    live = ClickJournal(directory)  # this process is the running server
    live.append(*click_ids(sent["bob@example.com"])[0], datetime.now(UTC), "Mozilla/5.0")
    env = {
        "PATH": "/usr/bin:/bin",
        "PATRON_INSTANCE_PATH": str(tmp_path / "instance"),
        "PATRON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PATRON_SECRET_KEY": "x" * 40,
    }
    try:
        shown = json.loads(patron(env, "clicks", "status", "--json").stdout)
        assert [(s["busy"], s["waiting"]) for s in shown["segments"]] == [(True, 1)]
        drained = patron(env, "clicks", "drain")
        assert "recorded 0 clicks" in drained.stdout and "held by another process" in drained.stdout
        session.commit()
        assert session.scalar(select(func.count()).select_from(Response)) == 0
    finally:
        live.close()


def test_drain_against_a_database_that_is_not_there_is_one_line_and_keeps_the_journal(sent, tmp_path):
    directory = tmp_path / "instance" / "journal"
    journal_in_a_process_that_ends(directory, click_ids(sent["bob@example.com"]))
    env = {
        "PATH": "/usr/bin:/bin",
        "PATRON_INSTANCE_PATH": str(tmp_path / "instance"),
        "PATRON_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere",
        "PATRON_SECRET_KEY": "x" * 40,
    }
    drained = patron(env, "clicks", "drain")
    assert drained.returncode == 1 and "Traceback" not in drained.stderr
    assert drained.stderr.strip().startswith("Error: cannot reach the database")
    assert len(segments(directory)) == 1


def test_an_unreadable_journal_is_one_line_not_a_traceback(app, runner, tmp_path, monkeypatch):
    journal = Path(app.config["PATRON_CLICK_JOURNAL"])
    journal.mkdir(parents=True)

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)  # what a directory without read permission answers
    for command in ("status", "drain"):
        result = runner.invoke(args=["clicks", command])
        assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
        assert result.output.strip() == f"Error: {journal}: cannot read the click journal (Permission denied)"
