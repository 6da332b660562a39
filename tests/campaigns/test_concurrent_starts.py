"""Several ``patron campaigns send`` started at once: one run, one message per address, a clear no for the rest.

Each sender is a real process running the ``patron`` command. They import everything first, then wait at a
start line (their stdin) so that they reach ``start_run`` together rather than a Python start-up apart.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

from sqlalchemy import func, select, text

from campaigns.models import Run
from campaigns.runs import RunError, start_run
from segments.db import make_session_factory
from tests.campaigns.conftest import add_campaign, add_contacts, patron_environment

SENDERS = 4
RECIPIENTS = 12

# Imports what the command needs, says it is ready, waits for the start line, then is `patron ARGS...`.
AT_THE_START_LINE = textwrap.dedent(
    """
    import sys
    import web, web.cli, campaigns.executors  # noqa: the work before the race, done before it
    print("ready", flush=True)
    sys.stdin.readline()
    sys.argv = ["patron", *sys.argv[1:]]
    web.cli.main()
    """
)

# What a sender that lost the race says: the run that won (still going, or already done).
REFUSED = re.compile(
    r"Error: campaign \d+ (already has run \d+, which is (planning|sending|paused): resume or cancel it"
    r"|was started by another process at the same moment: its run \d+ is \w+ already"
    r"|was sent already: its last run \d+ .*)"
)


def race(env: dict, *args: str, smtp=None) -> list[subprocess.CompletedProcess]:
    """Start SENDERS processes of ``patron ARGS``, release them together; each one's result.

    With ``smtp`` (the test server), its messages wait at DATA until all senders but one have ended: the
    winner's run is still sending while the others try, however late a busy machine lets one of them
    arrive. Without it, a sender arriving after the winner finished would legitimately start anew."""
    senders = [
        subprocess.Popen(
            [sys.executable, "-c", AT_THE_START_LINE, *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(SENDERS)
    ]
    try:
        for sender in senders:
            assert sender.stdout.readline() == "ready\n", sender.stderr.read()
        if smtp is not None:
            smtp.hold()
        for sender in senders:
            sender.stdin.write("go\n")
            sender.stdin.flush()
        if smtp is not None:
            deadline = time.monotonic() + 120
            while sum(sender.poll() is not None for sender in senders) < SENDERS - 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            smtp.release()
        results = []
        for sender in senders:
            out, err = sender.communicate(timeout=180)
            results.append(subprocess.CompletedProcess(sender.args, sender.returncode, out, err))
        return results
    finally:
        for sender in senders:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
        if smtp is not None:
            smtp.release()


def check_one_won(results: list[subprocess.CompletedProcess]) -> None:
    won = [result for result in results if result.returncode == 0]
    lost = [result for result in results if result.returncode != 0]
    assert len(won) == 1, [(r.returncode, r.stderr[-2000:]) for r in results]
    for result in lost:
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and REFUSED.fullmatch(lines[0]), result.stderr


def test_concurrent_sends_make_one_run_and_mail_each_address_once(session, engine, tmp_path, pack, smtp_server):
    add_contacts(session, [{"email": f"p{i}@example.com", "first_name": f"P{i}"} for i in range(RECIPIENTS)])
    campaign = add_campaign(session)
    env = patron_environment(engine, tmp_path, smtp_server.url)
    send = ("campaigns", "send", str(campaign.id), "--wait")

    check_one_won(race(env, *send, smtp=smtp_server))
    session.rollback()  # a fresh snapshot: the senders wrote on connections of their own
    assert session.scalar(select(func.count()).select_from(Run)) == 1
    received = Counter(rcpt for envelope in smtp_server.received() for rcpt in envelope.rcpt_tos)
    assert received == Counter({f"p{i}@example.com": 1 for i in range(RECIPIENTS)})

    # Sending again on purpose, several times at once, is still one new run: everyone gets one more message.
    check_one_won(race(env, *send, "--again", smtp=smtp_server))
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Run)) == 2
    received = Counter(rcpt for envelope in smtp_server.received() for rcpt in envelope.rcpt_tos)
    assert received == Counter({f"p{i}@example.com": 2 for i in range(RECIPIENTS)})


def test_a_start_racing_an_uncommitted_one_gets_the_same_clear_error(session, engine, pack):
    """A scheduler firing twice: two sessions start the campaign; the second waits for the first, then is refused."""
    add_contacts(session, [{"email": "p@example.com"}])
    campaign = add_campaign(session)
    sessions = make_session_factory(engine)
    with sessions() as first, sessions() as second:
        won = start_run(first, campaign.id)  # flushed, not committed: invisible to the second's check
        refused: list[str] = []

        def start_second():
            try:
                start_run(second, campaign.id)
            except RunError as exc:
                refused.append(str(exc))
            second.rollback()

        thread = threading.Thread(target=start_second)
        thread.start()
        if engine.dialect.name == "postgresql":
            # Let the second get as far as waiting for the first (the unique index makes it wait) before the commit.
            deadline = time.monotonic() + 30
            with engine.connect() as watcher:
                query = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                while not watcher.scalar(query) and time.monotonic() < deadline:
                    watcher.rollback()
                    time.sleep(0.01)
        first.commit()
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert refused == [f"campaign {campaign.id} already has run {won.id}, which is planning: resume or cancel it"]
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Run)) == 1
