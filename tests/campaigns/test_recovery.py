"""Recovery tells rows that were handed to the transport from rows only claimed (issue #8, item 3)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from campaigns.runs import plan_run, prepare_resume, resend_unknown, start_run
from delivery import ledger
from delivery.models import Delivery
from segments.db import make_session_factory, utcnow
from tests.campaigns.conftest import add_campaign, add_contacts


def test_resume_makes_only_handed_rows_unknown_and_gives_back_the_rest(session, engine, pack):
    add_contacts(session, [{"email": f"r{i}@example.com", "first_name": f"R{i}"} for i in range(12)])
    campaign = add_campaign(session)
    run = start_run(session, campaign.id)
    session.commit()
    plan_run(make_session_factory(engine), run.id, half_life_days=30)
    ((first, last),) = ledger.pending_ranges(session, run.id, 100)
    claimed = ledger.claim(session, run.id, first, last, 10, utcnow())
    ledger.mark_handed(session, [(row, f"<m{row}@shop.example>") for row, _ in claimed[:3]])
    ledger.record(session, [ledger.Outcome(claimed[0][0], "sent", email="r0@example.com", sent_at=utcnow())])
    session.commit()
    # The process dies here: 2 rows handed over without an outcome, 7 claimed and never handed over.

    run, unknown = prepare_resume(session, campaign.id)
    session.commit()
    rows = {row.id: row for row in session.scalars(select(Delivery).where(Delivery.run_id == run.id))}
    assert unknown == 2
    assert Counter(row.status for row in rows.values()) == {"sent": 1, "unknown": 2, "pending": 9}
    assert {rows[row].message_id for row, _ in claimed[1:3]} == {f"<m{row}@shop.example>" for row, _ in claimed[1:3]}
    assert all("never sent" in rows[row].reason for row, _ in claimed[3:])

    # resend-unknown puts back only the unknown ones, never the one whose 250 was recorded.
    _, count = resend_unknown(session, campaign.id)
    session.commit()
    assert count == 2
    again = ledger.claim(session, run.id, first, last, 100, utcnow())
    assert claimed[0][0] not in {row for row, _ in again} and len(again) == 11
    session.commit()
    session.expire_all()
    assert all(row.message_id is None for row in session.scalars(select(Delivery).where(Delivery.status == "sending")))
