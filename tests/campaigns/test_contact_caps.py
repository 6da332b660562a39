"""A contact's own frequency cap (set on the preference page) through real runs over the real SMTP server.

Planning and the send-time re-check both skip a contact who has had their
``max`` messages in the last ``days`` days, with the reason in their words,
alongside the campaign's own cap. A cap that is not numbers caps nothing.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from campaigns.executors import execute_run
from campaigns.runs import plan_run, start_run
from delivery.models import Delivery
from segments.db import make_session_factory
from segments.models import Contact
from tests.campaigns.conftest import add_campaign, add_contacts, worker_config
from tests.campaigns.test_reports import send_run


def _fates(session, run_id) -> dict[str, tuple[str, str | None]]:
    rows = session.execute(
        select(Contact.first_name, Delivery.status, Delivery.reason)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Delivery.run_id == run_id)
    )
    return {name: (status, reason) for name, status, reason in rows}


def _received(server) -> list[str]:
    return sorted(rcpt for envelope in server.messages for rcpt in envelope.rcpt_tos)


def test_planning_skips_a_contact_over_their_own_cap(session, engine, tmp_path, pack, smtp_server):
    add_contacts(
        session,
        [
            {"email": "one@example.com", "first_name": "One", "frequency_cap": {"max": 1, "days": 7}},
            {"email": "two@example.com", "first_name": "Two", "frequency_cap": {"max": 2, "days": 7}},
            {"email": "free@example.com", "first_name": "Free"},
            {"email": "odd@example.com", "first_name": "Odd", "frequency_cap": {"max": "x", "days": None}},
            {"email": "daily@example.com", "first_name": "Daily", "frequency_cap": {"max": 1, "days": 1}},
        ],
    )
    campaign = add_campaign(session)
    first = send_run(engine, tmp_path, session, campaign.id, smtp_server.url)
    assert {status for status, _ in _fates(session, first.id).values()} == {"sent"}
    # Daily's message was two days ago: outside their one-day window.
    session.execute(
        update(Delivery)
        .where(Delivery.email == "daily@example.com")
        .values(sent_at=first.created_at - timedelta(days=2))
    )
    session.commit()

    second = send_run(engine, tmp_path, session, campaign.id, smtp_server.url)
    assert _fates(session, second.id) == {
        "One": ("skipped", "your frequency cap (1 in 7 days)"),
        "Two": ("sent", None),
        "Free": ("sent", None),
        "Odd": ("sent", None),
        "Daily": ("sent", None),
    }
    third = send_run(engine, tmp_path, session, campaign.id, smtp_server.url)
    fates = _fates(session, third.id)
    assert fates["One"] == ("skipped", "your frequency cap (1 in 7 days)")
    assert fates["Two"] == ("skipped", "your frequency cap (2 in 7 days)")
    assert fates["Daily"] == ("skipped", "your frequency cap (1 in 1 day)")
    assert fates["Free"] == fates["Odd"] == ("sent", None)
    assert _received(smtp_server).count("one@example.com") == 1
    assert _received(smtp_server).count("two@example.com") == 2


def test_the_campaign_cap_is_named_first_when_both_apply(session, engine, tmp_path, pack, smtp_server):
    add_contacts(session, [{"email": "both@example.com", "first_name": "Both", "frequency_cap": {"max": 1, "days": 7}}])
    campaign = add_campaign(session, frequency_cap={"max": 1, "days": 3})
    send_run(engine, tmp_path, session, campaign.id, smtp_server.url)
    second = send_run(engine, tmp_path, session, campaign.id, smtp_server.url)
    assert _fates(session, second.id) == {"Both": ("skipped", "frequency cap (1 in 3 days)")}


def test_a_cap_set_after_planning_is_checked_again_at_send_time(session, engine, tmp_path, pack, smtp_server):
    contacts = add_contacts(
        session,
        [{"email": "late@example.com", "first_name": "Late"}, {"email": "other@example.com", "first_name": "Other"}],
    )
    campaign = add_campaign(session)
    send_run(engine, tmp_path, session, campaign.id, smtp_server.url)
    run = start_run(session, campaign.id, again=True)
    session.commit()
    plan_run(make_session_factory(engine), run.id, half_life_days=30)
    # Between planning and sending, Late asks for one message a week on the preference page.
    session.execute(update(Contact).where(Contact.id == contacts[0].id).values(frequency_cap={"max": 1, "days": 7}))
    session.commit()
    execute_run(worker_config(engine, tmp_path, smtp_server.url), run.id)
    session.expire_all()
    assert _fates(session, run.id) == {
        "Late": ("skipped", "your frequency cap (1 in 7 days)"),
        "Other": ("sent", None),
    }
    assert _received(smtp_server) == ["late@example.com", "other@example.com", "other@example.com"]
