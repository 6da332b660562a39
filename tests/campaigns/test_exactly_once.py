"""A run against a mail server that fails at every step of the transaction: nobody gets two copies,
and each ledger row says what the server has (issue #8, item 1), on SQLite and PostgreSQL.

The server is tests/delivery/faulty_smtp.py, on raw sockets; the run goes through ``execute_run``,
what ``patron campaigns send --wait`` calls.
"""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from campaigns.batches import PAUSE_AFTER_TRANSIENT
from campaigns.executors import execute_run
from campaigns.runs import start_run, status
from delivery.models import Delivery
from tests.campaigns.conftest import add_campaign, add_contacts, parse, worker_config
from tests.delivery.faulty_smtp import FaultySmtp


def audience(session, size: int) -> list[str]:
    people = [{"email": f"p{i:03d}@example.com", "first_name": f"P{i}"} for i in range(size)]
    add_contacts(session, people)
    return [person["email"] for person in people]


def run_against(server, session, engine, tmp_path) -> tuple[dict, dict[str, Delivery]]:
    """Send a campaign through ``server``; (status, ledger rows by address)."""
    campaign = add_campaign(session)
    run = start_run(session, campaign.id)
    session.commit()
    execute_run(worker_config(engine, tmp_path, f"{server.url}?timeout=1"), run.id)
    session.expire_all()
    rows = session.scalars(select(Delivery).where(Delivery.run_id == run.id)).all()
    return status(session, campaign.id), {row.email: row for row in rows}


def statuses(rows: dict[str, Delivery]) -> Counter[str]:
    return Counter(row.status for row in rows.values())


def test_a_server_that_drops_every_connection_after_the_dot_gets_one_copy_each_and_the_run_pauses(
    session, engine, tmp_path, pack
):
    # Issue #8: this server got 40 copies for one recipient, and the ledger said pending.
    addresses = audience(session, 20)
    with FaultySmtp(lambda number, recipient: "drop_after_dot") as server:
        current, rows = run_against(server, session, engine, tmp_path)
        copies = server.copies()
    assert max(copies.values()) == 1
    unknown = {address for address, row in rows.items() if row.status == "unknown"}
    assert unknown == set(copies) and len(unknown) == PAUSE_AFTER_TRANSIENT  # then the run stops trying
    assert statuses(rows) == {"unknown": PAUSE_AFTER_TRANSIENT, "pending": len(addresses) - PAUSE_AFTER_TRANSIENT}
    assert current["state"] == "paused" and "unknown fate" in current["note"]
    assert all(rows[a].attempts == 1 for a in unknown)


@pytest.mark.parametrize("fault", ["drop_after_dot", "reset_after_dot"])
def test_one_connection_in_seven_lost_after_the_dot_makes_that_row_unknown_and_nobody_gets_two(
    session, engine, tmp_path, pack, fault
):
    # Issue #8: 8 of 50 recipients got two copies, and the ledger said sent, attempts=1.
    addresses = audience(session, 50)
    with FaultySmtp(lambda number, recipient: fault if number % 7 == 6 else None) as server:
        current, rows = run_against(server, session, engine, tmp_path)
        received = list(server.messages)
    copies = Counter(recipient for recipient, _ in received)
    assert copies == dict.fromkeys(addresses, 1)  # everyone got it, once
    assert statuses(rows) == {"sent": 43, "unknown": 7}
    assert current["state"] == "finished" and current["unknown"] == 7
    assert all(row.attempts == 1 for row in rows.values())
    # An unknown row keeps the Message-ID of the copy the server got: the operator can look it up in its logs.
    message_ids = {recipient: parse(content)["Message-ID"] for recipient, content in received}
    for address, row in rows.items():
        if row.status == "unknown":
            assert row.message_id == message_ids[address] and "may have been delivered" in row.reason


def test_no_reply_within_the_timeout_after_the_dot_is_unknown(session, engine, tmp_path, pack):
    addresses = audience(session, 4)
    with FaultySmtp(lambda number, recipient: "timeout_after_dot" if number == 0 else None) as server:
        current, rows = run_against(server, session, engine, tmp_path)
        copies = server.copies()
    assert copies == dict.fromkeys(addresses, 1)
    assert rows[addresses[0]].status == "unknown" and "no reply within 1 s" in rows[addresses[0]].reason
    assert statuses(rows) == {"sent": 3, "unknown": 1} and current["state"] == "finished"


@pytest.mark.parametrize("fault", ["drop_at_rcpt", "drop_at_data"])
def test_a_drop_before_the_end_of_the_message_is_retried_and_each_gets_one_copy(session, engine, tmp_path, pack, fault):
    addresses = audience(session, 12)
    with FaultySmtp(lambda number, recipient: fault if number % 3 == 0 else None) as server:
        current, rows = run_against(server, session, engine, tmp_path)
        copies = server.copies()
    assert copies == dict.fromkeys(addresses, 1)
    assert statuses(rows) == {"sent": 12} and current["state"] == "finished"


def test_a_4xx_is_retried_and_a_5xx_fails_that_recipient_only(session, engine, tmp_path, pack):
    addresses = audience(session, 4)
    seen: Counter[str] = Counter()

    def fault(number, recipient):
        seen[recipient] += 1
        if recipient == addresses[0]:
            return "reply_550"
        return "reply_451" if recipient == addresses[1] and seen[recipient] == 1 else None

    with FaultySmtp(fault) as server:
        current, rows = run_against(server, session, engine, tmp_path)
        copies = server.copies()
    assert copies == dict.fromkeys(addresses[1:], 1)
    assert rows[addresses[0]].status == "failed" and "550" in rows[addresses[0]].reason
    assert statuses(rows) == {"sent": 3, "failed": 1} and current["state"] == "finished"


def test_send_wait_says_the_unknown_ones_may_have_arrived(app, runner, session, pack):
    audience(session, 3)
    campaign = add_campaign(session)
    with FaultySmtp(lambda number, recipient: "drop_after_dot" if number == 1 else None) as server:
        app.config["PATRON_DELIVERY_URL"] = server.url
        result = runner.invoke(args=["campaigns", "send", str(campaign.id), "--wait"])
        copies = server.copies()
    assert result.exit_code == 0, result.output
    assert sorted(copies.values()) == [1, 1, 1]
    assert "2 sent" in result.output and "1 unknown" in result.output
    assert "1 unknown: in flight when the connection was lost" in result.output
    assert "may have arrived" in result.output and f"campaigns resend-unknown {campaign.id}" in result.output
