"""Bounces, complaints, auto-replies and mailto unsubscribes, from real-shaped messages about a real send."""

from __future__ import annotations

import dataclasses
import mailbox
import re
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from campaigns.executors import execute_run
from campaigns.models import Campaign, Run
from campaigns.runs import start_run
from delivery.bounces import KINDS, process_message
from delivery.dsn import MAX_BYTES, read_report
from delivery.models import Delivery, Response
from delivery.tracking import LinkSigner
from segments.db import utcnow
from segments.models import Consent, Contact, Event, Suppression
from tests.campaigns.conftest import (  # noqa: F401  (pack: a fixture)
    BASE_URL,
    SECRET,
    add_campaign,
    add_contacts,
    pack,
    worker_config,
)
from tests.delivery.bounce_mail import Sent, send_to

SIGNER = LinkSigner(SECRET, BASE_URL)

# fixture → (kind, status, suppression reason or None, response kind or None, how it is matched)
EXPECTED = {
    "postfix_user_unknown.eml": ("hard", "5.1.1", "bounced", "bounce", "verp"),
    "exim_text.eml": ("hard", "5.1.1", "bounced", "bounce", "verp"),
    "exchange_ndr.eml": ("hard", "5.1.10", "bounced", "bounce", "verp"),
    "gmail_dsn.eml": ("hard", "5.1.1", "bounced", "bounce", "message-id"),
    "qmail.eml": ("hard", "5.1.1", "bounced", "bounce", "message-id"),
    "arf_complaint.eml": ("complaint", None, "complained", "complaint", "verp"),
    "soft_mailbox_full.eml": ("soft", "4.2.2", None, "bounce", "verp"),
    "postfix_delayed.eml": ("delayed", "4.4.1", None, None, "verp"),
    "out_of_office.eml": ("auto_reply", None, None, None, "verp"),
    "mailto_unsubscribe.eml": ("unsubscribe", None, "unsubscribed", "unsubscribe", "mailto"),
}


@pytest.fixture
def sent(session, engine, tmp_path, pack, smtp_server):  # noqa: F811
    """A real send over SMTP to one address per fixture, plus a bystander."""
    emails = [f"{name.split('.')[0].replace('_', '-')}@example.org" for name in EXPECTED] + ["bystander@example.org"]
    return send_to(session, engine, tmp_path, smtp_server, emails)


def _for(sent, fixture):
    return sent[f"{fixture.split('.')[0].replace('_', '-')}@example.org"]


def _changes(session):
    """What processing can change, to compare before and after."""
    return (
        session.scalars(select(Suppression.email).order_by(Suppression.email)).all(),
        session.scalar(select(func.count(Response.id))),
        session.scalar(select(func.count(Event.id))),
        session.scalars(select(Contact.status).order_by(Contact.id)).all(),
    )


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_each_fixture_is_classified_and_matched_to_its_ledger_row(session, sent, fixture):
    kind, status, suppressed, response_kind, _ = EXPECTED[fixture]
    message = _for(sent, fixture)
    before = _changes(session)
    result = process_message(session, message.fill(fixture), signer=SIGNER, source="test", name=fixture)
    session.commit()

    assert (result.kind, result.status, result.recipient) == (kind, status, message.email)
    assert result.delivery_id == message.delivery_id
    assert result.as_json()["file"] == fixture
    suppression = session.get(Suppression, message.email)
    assert (suppression.reason if suppression else None) == suppressed
    contact = session.scalar(select(Contact).where(Contact.email == message.email))
    assert contact.status == (suppressed or "active")
    responses = session.scalars(select(Response).where(Response.delivery_id == message.delivery_id)).all()
    assert [r.kind for r in responses] == ([response_kind] if response_kind else [])
    events = session.scalars(select(Event).where(Event.contact_id == contact.id)).all()
    assert [(e.channel, e.type, e.source) for e in events] == (
        [("email", response_kind, "patron")] if response_kind else []
    )
    if response_kind == "bounce":
        assert (responses[0].bounce_type, responses[0].status) == (kind, status)
        assert responses[0].run_id == session.get(Delivery, message.delivery_id).run_id
        assert events[0].properties["bounce_type"] == kind
    if response_kind:  # "bounced from this campaign" is a segment rule like "clicked in this campaign"
        run = session.get(Run, session.get(Delivery, message.delivery_id).run_id)
        assert (events[0].properties["campaign_id"], events[0].properties["run_id"]) == (run.campaign_id, run.id)
    if kind == "unsubscribe":
        assert session.get(Consent, (contact.id, "marketing")).granted is False
    if response_kind is None:
        assert _changes(session) == before  # a delay or an auto-reply changes nothing at all
    # Nobody else is touched.
    assert session.get(Suppression, "bystander@example.org") is None


def test_the_original_message_id_matches_when_the_bounce_has_no_verp_address(session, sent):
    message = sent["postfix-user-unknown@example.org"]
    raw = message.fill("postfix_user_unknown.eml", VERP="news@shop.example.com")
    result = process_message(session, raw, signer=SIGNER, source="test")
    assert (result.kind, result.delivery_id) == ("hard", message.delivery_id)


def test_a_forged_token_or_a_foreign_message_id_matches_nothing_and_changes_nothing(session, sent):
    message = sent["postfix-user-unknown@example.org"]
    local, _, domain = message.verp.partition("@")
    forged = local[:-1] + ("A" if local[-1] != "A" else "B") + "@" + domain
    before = _changes(session)
    raw = message.fill("postfix_user_unknown.eml", VERP=forged, MESSAGE_ID="<not-ours@elsewhere.example>")
    result = process_message(session, raw, signer=SIGNER, source="test")
    assert (result.kind, result.delivery_id, result.status) == ("hard", None, "5.1.1")
    assert "matches no message" in result.reason
    # Another deployment's signature is not ours either.
    other = LinkSigner("o" * 40, BASE_URL)
    raw = message.fill("postfix_user_unknown.eml", MESSAGE_ID="<not-ours@elsewhere.example>")
    assert process_message(session, raw, signer=other, source="test").delivery_id is None
    session.commit()
    assert _changes(session) == before


def test_processing_the_same_message_twice_changes_nothing_the_second_time(session, sent):
    message = sent["soft-mailbox-full@example.org"]
    raw = message.fill("soft_mailbox_full.eml")
    first = process_message(session, raw, signer=SIGNER, source="test")
    session.commit()
    after_first = _changes(session)
    second = process_message(session, raw, signer=SIGNER, source="test")
    session.commit()
    assert (first.kind, second.kind) == ("soft", "soft")
    assert second.reason == "already processed"
    assert _changes(session) == after_first


def test_soft_bounces_suppress_at_the_limit_within_the_window(session, sent):
    message = sent["soft-mailbox-full@example.org"]
    now = utcnow()

    def soft(day: int, when):
        raw = message.fill("soft_mailbox_full.eml").replace(b"11:00:07", f"11:00:{day:02}".encode())
        return process_message(session, raw, signer=SIGNER, source="test", now=when, soft_limit=3, soft_days=30)

    soft(1, now - timedelta(days=45))  # outside the window: does not count
    soft(2, now - timedelta(days=10))
    assert session.get(Suppression, message.email) is None
    assert soft(3, now).reason == "soft bounce 2 of 3 in 30 days"
    assert session.get(Suppression, message.email) is None
    result = soft(4, now)
    assert "3 soft bounces" in result.reason
    assert session.get(Suppression, message.email).reason == "bounced"


def test_a_5xx_at_send_time_is_a_hard_bounce_and_a_4xx_is_retried(session, engine, tmp_path, pack, smtp_server):  # noqa: F811
    smtp_server.reply_next("gone@example.org", "550 5.1.1 <gone@example.org>: no such user", times=99)
    smtp_server.reply_next("busy@example.org", "451 4.3.0 try again later", times=1)
    sent = send_to(session, engine, tmp_path, smtp_server, ["gone@example.org", "busy@example.org"])
    assert list(sent) == ["busy@example.org"]
    gone = session.scalar(select(Delivery).where(Delivery.email == "gone@example.org"))
    assert gone.status == "failed"
    assert session.get(Suppression, "gone@example.org").reason == "bounced"
    (response,) = session.scalars(select(Response).where(Response.delivery_id == gone.id)).all()
    assert (response.kind, response.bounce_type, response.status) == ("bounce", "hard", "5.1.1")
    assert session.scalar(select(Event.type).where(Event.contact_id == gone.contact_id)) == "bounce"
    assert session.get(Suppression, "busy@example.org") is None
    # The next run skips the bounced address.
    run = start_run(session, session.scalar(select(Campaign.id)), again=True)
    session.commit()
    execute_run(worker_config(engine, tmp_path, smtp_server.url), run.id)
    session.expire_all()
    second = session.scalar(select(Delivery).where(Delivery.run_id == run.id, Delivery.email == "gone@example.org"))
    assert second is None or second.status == "skipped"


def _sender(raw: bytes, edit: str) -> bytes:
    """The message with its From header removed, or emptied."""
    header = re.compile(rb"^From:[^\n]*\n(?:[ \t][^\n]*\n)*", re.IGNORECASE | re.MULTILINE)
    assert header.search(raw), "the fixture has a From header"
    return header.sub(b"" if edit == "removed" else b"From: \n", raw, count=1)


@pytest.mark.parametrize("edit", ["removed", "empty"])
@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_a_bounce_without_a_sender_address_is_read_as_with_one(session, sent, fixture, edit):
    # flufl.bounce's Yale detector failed on such a message and stopped the detectors after it (qmail's):
    # a qmail bounce without From was "unrecognized: cannot be parsed: IndexError".
    message = _for(sent, fixture)
    raw = message.fill(fixture)
    result = process_message(session, _sender(raw, edit), signer=SIGNER, source="test", name=fixture)
    assert (result.kind, result.status, result.recipient) == (EXPECTED[fixture][0], EXPECTED[fixture][1], message.email)
    assert result.delivery_id == message.delivery_id


HOSTILE = {
    "truncated MIME": b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n"
    b"Content-Type: message/delivery-status\n\nReporting-MTA: dns; a\n\nFinal-Recipient: rfc822; a@",
    "binary garbage": bytes(range(256)) * 400,
    "no boundary": b"Content-Type: multipart/mixed\n\n--a\nb\n",
    "deep nesting": b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(5000)),
    "nested originals": b"Content-Type: message/rfc822\n\n" * 3000 + b"Subject: at the bottom\n\nhi\n",
    "broken encoded words": b"Subject: =?utf-8?b?////?= =?x-unknown?q?=ZZ?=\nTo: \xff\xfe@\x00\n\nhello\n",
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_messages_are_unrecognized_and_change_nothing(session, name):
    before = _changes(session)
    result = process_message(session, HOSTILE[name], signer=SIGNER, source="test", name=name)
    assert result.kind == "unrecognized" and result.reason
    assert result.delivery_id is None
    assert _changes(session) == before


def test_a_message_over_the_size_limit_is_unrecognized_without_being_parsed(session):
    raw = b"Subject: big\n\n" + b"x" * (50 * 1024 * 1024)
    result = process_message(session, raw, signer=SIGNER, source="test")
    assert result.kind == "unrecognized" and "larger than 10 MiB" in result.reason
    assert len(raw) > MAX_BYTES


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000) | st.text(max_size=2000).map(str.encode))
def test_whatever_the_bytes_reading_never_raises(raw):
    assert read_report(b"Content-Type: multipart/report; boundary=z\n\n--z\n" + raw).kind in KINDS
    assert read_report(raw).kind in KINDS


def test_the_outbox_writes_the_verp_return_path_on_the_bounce_domain(session, engine, tmp_path, pack):  # noqa: F811
    add_contacts(session, [{"email": "ana@example.org", "first_name": "Ana"}])
    run = start_run(session, add_campaign(session).id)
    session.commit()
    config = worker_config(engine, tmp_path, f"outbox://{tmp_path / 'outbox'}")
    execute_run(dataclasses.replace(config, bounce_domain="bounces.example.net"), run.id)
    (message,) = mailbox.Maildir(tmp_path / "outbox", factory=None, create=False)
    delivery_id = session.scalar(select(Delivery.id).where(Delivery.run_id == run.id))
    return_path = message["Return-Path"].strip("<>")
    assert return_path.endswith("@bounces.example.net")
    assert SIGNER.parse_verp(return_path) == ("bounce", delivery_id)
    mailto = re.search(r"<mailto:([^?>]+)", message["List-Unsubscribe"]).group(1)
    assert mailto.endswith("@bounces.example.net") and SIGNER.parse_verp(mailto) == ("unsubscribe", delivery_id)


FAKE = Sent(1, "ana@example.org", "bounces+1-AAAA.BBBBBBBBBBBBBBBB@shop.example.com", "<a1@shop.example.com>", "x@y.z")


@pytest.mark.parametrize(
    "fixture, edit, kind",
    [
        # A vacation responder with the user's own subject: Auto-Submitted alone says it.
        ("out_of_office.eml", lambda t: t.replace("Automatic reply: This week", "Re: This week"), "auto_reply"),
        # An Exim bounce carries Auto-Submitted too, yet its failure wins.
        ("exim_text.eml", lambda t: t, "hard"),
        # A bounce about a campaign whose subject looks like an auto-reply is still a bounce.
        ("qmail.eml", lambda t: t.replace("failure notice", "Undeliverable: Automatic reply"), "hard"),
        # A success notice is a delivery report without a failure: reported, not a bounce.
        ("postfix_user_unknown.eml", lambda t: t.replace("Action: failed", "Action: delivered"), "unrecognized"),
        ("postfix_delayed.eml", lambda t: t, "delayed"),
    ],
)
def test_auto_replies_and_reports_are_told_apart_from_bounces(fixture, edit, kind):
    raw = edit(FAKE.fill(fixture).decode()).encode()
    assert read_report(raw).kind == kind
