"""The click journal under a real ``patron serve`` (gunicorn, 2 workers) on both databases.

It proves what an operator relies on: a click answered with its 302 is recorded exactly once even when
the whole server is killed with SIGKILL right after answering (the next server records what the dead
one journalled, and leaves no segment behind); a SIGTERM stops the server with every answered click
recorded and the journal empty; and while the responses table is gone, clicks are still answered and
are all recorded, once, when it is back.
"""

from __future__ import annotations

import os
import signal
from contextlib import nullcontext

import pytest
from sqlalchemy import select, text

from delivery.models import Response
from tests.campaigns.conftest import BASE_URL, patron_environment
from tests.web.test_tracking_e2e import fresh, request
from tests.web.tracking_fixtures import eventually, serving, table_away

CLICKS = 40


@pytest.fixture
def env(engine, tmp_path, sent):
    """The environment of a server that verifies the links ``sent`` carries, journalling to tmp_path/journal."""
    return {
        **patron_environment(engine, tmp_path, f"outbox://{tmp_path / 'outbox'}"),
        "PATRON_BASE_URL": BASE_URL,
        "PATRON_CLICK_JOURNAL": str(tmp_path / "journal"),
    }


def click_everything(base: str, sent, n: int = CLICKS) -> list[str]:
    """Follow the mails' tracked links ``n`` times, each with a user agent of its own; those user agents.

    Every answer must be the 302 of a kept click (its attribution cookie is set only then).
    """
    paths = [path for mail in sent.values() for path in mail.clicks]
    agents = []
    for i in range(n):
        agent = f"journal-e2e/{i}"
        status, headers, _ = request(base, "GET", paths[i % len(paths)], headers={"User-Agent": agent})
        assert status == 302 and headers["Location"].startswith("https://"), (i, status)
        assert "patron_click=" in headers.get("Set-Cookie", ""), i
        agents.append(agent)
    return agents


def recorded(session) -> list[str]:
    """The user agents of the recorded clicks, sorted: each answered click appears once, or it is wrong."""
    query = select(Response.user_agent).where(Response.kind == "click")
    return sorted(fresh(session).scalars(query))


def journal_files(env) -> list[str]:
    return sorted(os.listdir(env["PATRON_CLICK_JOURNAL"]))


@pytest.mark.parametrize("database_down", [False, True], ids=["drained-as-it-goes", "responses-table-away"])
def test_a_server_killed_right_after_answering_loses_no_click_and_records_none_twice(
    session, engine, env, sent, database_down
):
    # With the responses table away nothing can be recorded before the kill: all is left in the dead journal.
    with table_away(engine, "responses") if database_down else nullcontext():
        with serving(env, "--workers", "2", own_session=True) as (base, process):
            agents = click_everything(base, sent)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(20)
    assert process.returncode == -signal.SIGKILL
    left_behind = [name for name in journal_files(env) if name.endswith(".jsonl")]
    assert left_behind, "the killed server's segments are on disk"
    if database_down:
        assert recorded(session) == []

    with serving(env, "--workers", "2") as (_base, _process):
        assert eventually(lambda: recorded(session), sorted(agents), timeout=30) == sorted(agents)
        assert eventually(lambda: journal_files(env), [], timeout=30) == []  # drained segments are deleted
    assert recorded(session) == sorted(agents)
    keys = fresh(session).scalars(select(Response.external_id).where(Response.kind == "click")).all()
    assert len(set(keys)) == CLICKS and all(":" in key for key in keys)  # each by its journal position


def test_sigterm_stops_the_server_with_every_answered_click_recorded_and_the_journal_empty(session, env, sent):
    with serving(env, "--workers", "2") as (base, process):
        agents = click_everything(base, sent)
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert process.returncode == 0
    assert recorded(session) == sorted(agents)  # no waiting: it was recorded before the server exited
    assert journal_files(env) == []


def test_while_the_responses_table_is_away_clicks_are_answered_and_recorded_once_it_is_back(session, engine, env, sent):
    with serving(env, "--workers", "2") as (base, process):
        assert request(base, "GET", sent["bob@example.com"].unsubscribe)[0] == 200  # the workers are up
        with table_away(engine, "responses"):
            agents = click_everything(base, sent)
            assert recorded_away(engine) == 0
        assert eventually(lambda: recorded(session), sorted(agents), timeout=30) == sorted(agents)
    assert process.returncode == 0
    assert recorded(session) == sorted(agents)
    assert journal_files(env) == []


def recorded_away(engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(text("SELECT count(*) FROM responses_away WHERE kind = 'click'"))
