"""A campaign end to end over a real SMTP server: the right email to each person, exactly once."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from campaigns.executors import execute_run
from campaigns.runs import start_run, status
from content.models import Block, BlockVersion
from delivery.models import Delivery, Link
from delivery.tracking import LinkSigner
from segments.suppressions import suppress
from tests.campaigns.conftest import (
    BASE_URL,
    SECRET,
    TOPICS,
    add_campaign,
    add_contacts,
    parse,
    parts,
    worker_config,
)
from tests.delivery.keys import dns_for

PEOPLE = [
    {"email": "ana@example.com", "first_name": "Ana", "locale": "es-MX", "interests": {"pizza": 5}},
    {"email": "bob@example.com", "first_name": "Bob", "locale": "en", "interests": {"pasta": 4}},
    {"email": "chloe@example.com", "first_name": "Chloé", "locale": "fr", "interests": {"pizza": 1, "pasta": 2}},
    {"email": "eve@example.com", "first_name": "Eve\r\nBcc: victim@example.org", "locale": "en"},
    {"email": "jose@example.com", "first_name": "José", "last_name": "Müller-Ñúñez", "locale": "es"},
]


def send(engine, tmp_path, campaign_id, delivery_url, session):
    run = start_run(session, campaign_id, again=True)  # some tests send the same campaign run after run
    session.commit()
    stats = execute_run(worker_config(engine, tmp_path, delivery_url), run.id)
    session.expire_all()  # the run was sent through connections of its own
    return run, stats


def by_recipient(server) -> dict[str, list]:
    received: dict[str, list] = {}
    for envelope in server.messages:
        for rcpt in envelope.rcpt_tos:
            received.setdefault(rcpt, []).append(parse(envelope.content))
    return received


def block_keys(session, run_id) -> dict[str, set[str]]:
    keys = dict(
        session.execute(select(BlockVersion.id, Block.key).join(Block, Block.id == BlockVersion.block_id)).all()
    )
    rows = session.execute(select(Delivery.email, Delivery.blocks).where(Delivery.run_id == run_id)).all()
    return {address: {keys[b] for b in blocks or ()} for address, blocks in rows}


def test_every_recipient_gets_their_own_email_over_smtp(session, engine, tmp_path, pack, smtp_server):
    add_contacts(session, [dict(p) for p in PEOPLE])
    campaign = add_campaign(session)
    run, _ = send(engine, tmp_path, campaign.id, smtp_server.url, session)

    assert status(session, campaign.id) | {"note": None} == {
        "campaign": campaign.id,
        "run": run.id,
        "state": "finished",
        "note": None,
        "total": 5,
        "pending": 0,
        "sending": 0,
        "sent": 5,
        "failed": 0,
        "skipped": 0,
        "unknown": 0,
        "skipped_by_reason": {},
        "failed_by_reason": {},
        "started": run.created_at,
        "finished": run.finished_at,
    }
    received = by_recipient(smtp_server)
    assert sorted(received) == sorted(p["email"] for p in PEOPLE)
    assert all(len(messages) == 1 for messages in received.values())
    shown = block_keys(session, run.id)
    for person in PEOPLE:
        (message,) = received[person["email"]]
        text, html = parts(message)
        first = person["first_name"].replace("\r\n", " ")
        assert message["To"].addresses[0].addr_spec == person["email"]
        assert first.split(" ")[0] in message["To"].addresses[0].display_name
        # Greeted by first name in both parts, in their language (es-MX falls back to es; fr to en).
        spanish = person["locale"].startswith("es")
        greeting = "Hola" if spanish else "Hi"
        assert f"{greeting} {first.split(' ')[0]}" in text
        assert message["Subject"].endswith("esta semana" if spanish else "this week")
        assert message["Content-Language"] == ("es" if spanish else "en")
        assert f"({'es' if spanish else 'en'})" in html
        # Every required header.
        assert re.fullmatch(r"<[^@>]+@shop\.example\.com>", message["Message-ID"])
        unsubscribe = message["List-Unsubscribe"]
        assert unsubscribe.startswith(f"<{BASE_URL}/u/")
        # The mailto is the delivery's own signed address, and so is the envelope sender (VERP).
        mailto = re.search(r"<mailto:([^?>]+@shop\.example\.com)\?subject=unsubscribe>", unsubscribe).group(1)
        delivery_id = session.scalar(select(Delivery.id).where(Delivery.email == person["email"]))
        assert LinkSigner(SECRET, BASE_URL).parse_verp(mailto) == ("unsubscribe", delivery_id)
        envelope = next(m.mail_from for m in smtp_server.messages if m.rcpt_tos == (person["email"],))
        assert LinkSigner(SECRET, BASE_URL).parse_verp(envelope) == ("bounce", delivery_id)
        assert envelope.endswith("@shop.example.com")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["Feedback-ID"].endswith(":campaign:patron")
        assert message.get_all("Bcc") is None
        # Links are signed tracking links under the base URL; the shop's own URLs are never exposed.
        links = re.findall(r'href="([^"]+)"', html)
        assert links and all(link.startswith(BASE_URL) for link in links)
        assert f"{BASE_URL}/o/" in html
        # Interests choose the hero: pizza lovers get a pizza block, pasta lovers a pasta block.
        if person["email"] == "ana@example.com":
            assert shown[person["email"]] & set(TOPICS["pizza"])
        if person["email"] == "bob@example.com":
            assert shown[person["email"]] & set(TOPICS["pasta"])
    # Each link is registered in the block it appears in, so a click will tell which block it was.
    links = session.execute(select(Link.url, Link.block_version_id)).all()
    about = [version for url, version in links if url == "https://shop.example.com/about"]
    assert about == [None]  # the layout's own link
    assert all(version is not None for url, version in links if url != "https://shop.example.com/about")


def test_a_second_run_never_repeats_a_block_until_only_defaults_are_left(session, engine, tmp_path, pack, smtp_server):
    add_contacts(session, [dict(p) for p in PEOPLE[:2]])
    campaign = add_campaign(session)
    history: dict[str, set[str]] = {p["email"]: set() for p in PEOPLE[:2]}
    for week in range(5):
        run, _ = send(engine, tmp_path, campaign.id, smtp_server.url, session)
        for address, keys in block_keys(session, run.id).items():
            fresh = keys - {"this-week", "card"}
            assert not fresh & history[address], f"week {week}: {address} got {fresh & history[address]} again"
            history[address] |= keys
    # Eight blocks per locale, two slots a week: by week five only the slots' defaults are left.
    assert keys == {"this-week", "card"}
    received = by_recipient(smtp_server)
    assert all(len(messages) == 5 for messages in received.values())


def test_suppressed_unsubscribed_and_capped_contacts_are_skipped_with_the_reason(
    session, engine, tmp_path, pack, smtp_server
):
    contacts = add_contacts(
        session,
        [
            {"email": "ok@example.com", "first_name": "Ok"},
            {"email": "gone@example.com", "first_name": "Gone", "status": "unsubscribed"},
            {"email": "bounced@example.com", "first_name": "Bounced"},
            {"email": "late@example.com", "first_name": "Late"},
        ],
    )
    suppress(session, "bounced@example.com", "bounced", source="test")
    session.commit()
    campaign = add_campaign(session, frequency_cap={"max": 1, "days": 7})
    run = start_run(session, campaign.id)
    session.commit()
    # Suppressed after planning, before sending: the claim re-checks.
    from campaigns.runs import plan_run
    from segments.db import make_session_factory

    plan_run(make_session_factory(engine), run.id, half_life_days=30)
    suppress(session, "late@example.com", "complained", source="test")
    session.commit()
    execute_run(worker_config(engine, tmp_path, smtp_server.url), run.id)
    session.expire_all()
    reasons = dict(session.execute(select(Delivery.email, Delivery.reason).where(Delivery.status == "skipped")).all())
    assert reasons == {
        "gone@example.com": "contact status: unsubscribed",
        "bounced@example.com": "contact status: bounced",
        "late@example.com": "contact status: complained",
    }
    assert sorted(by_recipient(smtp_server)) == ["ok@example.com"]
    # The cap: one message in seven days, so the next run skips the one who got one.
    second, _ = send(engine, tmp_path, campaign.id, smtp_server.url, session)
    ok = session.scalar(select(Delivery).where(Delivery.run_id == second.id, Delivery.contact_id == contacts[0].id))
    assert ok.status == "skipped" and ok.reason.startswith("frequency cap")


def test_a_sandbox_escape_fails_that_recipient_only(session, engine, tmp_path, smtp_server):
    from content.packs import import_pack
    from tests.packs import block, write_pack

    evil = block("evil", interests={"evil": 1.0}, body="<p>{{ ''.__class__.__mro__ }}</p>")
    fmt = block("fmt", interests={"fmt": 1.0}, body="<p>{{ '{0.__class__}'.format(contact) }}</p>")
    plain = block("plain", interests={"plain": 1.0})
    import_pack(session, write_pack(tmp_path / "pack", [evil, fmt, plain], slots=("hero",), layout=_ONE_SLOT))
    session.commit()
    add_contacts(
        session,
        [
            {"email": "evil@example.com", "first_name": "E", "interests": {"evil": 9}},
            {"email": "fmt@example.com", "first_name": "F", "interests": {"fmt": 9}},
            {"email": "fine@example.com", "first_name": "G", "interests": {"plain": 9}},
        ],
    )
    campaign = add_campaign(session)
    send(engine, tmp_path, campaign.id, smtp_server.url, session)
    rows = dict(session.execute(select(Delivery.email, Delivery.status)).all())
    assert rows == {"evil@example.com": "failed", "fmt@example.com": "failed", "fine@example.com": "sent"}
    errors = session.scalars(select(Delivery.reason).where(Delivery.status == "failed")).all()
    assert all("SecurityError" in e and "unsafe" in e for e in errors)
    assert sorted(by_recipient(smtp_server)) == ["fine@example.com"]


_ONE_SLOT = (
    "<html><body><p>Hi {{ contact.first_name }}</p>{{ slots.hero }}<a href='{{ unsubscribe_url }}'>x</a></body></html>"
)


def test_premailer_runs_once_per_version_used_not_per_recipient(session, engine, tmp_path, pack, monkeypatch):
    import premailer

    calls = []
    original = premailer.Premailer.transform
    monkeypatch.setattr(
        premailer.Premailer, "transform", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    add_contacts(
        session,
        [
            {"email": f"p{i}@example.com", "first_name": f"P{i}", "locale": "en", "interests": {"pizza": i}}
            for i in range(60)
        ],
    )
    campaign = add_campaign(session)
    run, stats = send(engine, tmp_path, campaign.id, f"outbox://{tmp_path / 'outbox'}", session)
    assert stats.premailer_calls == len(calls)
    versions = {
        v for blocks in session.scalars(select(Delivery.blocks).where(Delivery.run_id == run.id)) for v in blocks
    }
    assert len(calls) == len(versions) + 1  # and one for the layout
    assert len(list((tmp_path / "outbox" / "new").iterdir())) == 60
    # Next week's run reuses what was inlined: premailer only for versions never inlined before.
    second, stats = send(engine, tmp_path, campaign.id, f"outbox://{tmp_path / 'outbox'}", session)
    new_versions = {
        v for blocks in session.scalars(select(Delivery.blocks).where(Delivery.run_id == second.id)) for v in blocks
    } - versions
    assert stats.premailer_calls == len(new_versions) == len(calls) - len(versions) - 1


def test_a_pool_of_workers_runs_premailer_once_per_version_too(session, engine, tmp_path, pack):
    add_contacts(
        session,
        [
            {
                "email": f"w{i}@example.com",
                "first_name": f"W{i}",
                "locale": ("en", "es")[i % 2],
                "interests": {"pizza": i},
            }
            for i in range(1200)
        ],
    )
    campaign = add_campaign(session)
    run = start_run(session, campaign.id)
    session.commit()
    stats = execute_run(worker_config(engine, tmp_path, f"outbox://{tmp_path / 'outbox'}", workers=2), run.id)
    session.expire_all()
    assert status(session, campaign.id)["sent"] == 1200
    versions = {
        v for blocks in session.scalars(select(Delivery.blocks).where(Delivery.run_id == run.id)) for v in blocks
    }
    assert stats.premailer_calls == len(versions) + 1


def test_a_temporary_refusal_is_retried_and_a_permanent_one_fails_that_row_alone(
    session, engine, tmp_path, pack, smtp_server
):
    add_contacts(session, [{"email": f"r{i}@example.com", "first_name": f"R{i}"} for i in range(4)])
    smtp_server.reply_next("r1@example.com", "451 4.3.0 try again later", times=1)
    smtp_server.reply_next("r2@example.com", "550 5.1.1 no such user", times=99)
    campaign = add_campaign(session)
    run, _ = send(engine, tmp_path, campaign.id, smtp_server.url, session)
    rows = dict(session.execute(select(Delivery.email, Delivery.status)).all())
    assert rows == {
        "r0@example.com": "sent",
        "r1@example.com": "sent",
        "r2@example.com": "failed",
        "r3@example.com": "sent",
    }
    reason = session.scalar(select(Delivery.reason).where(Delivery.email == "r2@example.com"))
    assert "550" in reason
    assert sorted(by_recipient(smtp_server)) == ["r0@example.com", "r1@example.com", "r3@example.com"]


def test_an_unusable_transport_pauses_the_run_and_loses_nothing(session, engine, tmp_path, pack, smtp_server):
    add_contacts(session, [{"email": f"u{i}@example.com", "first_name": f"U{i}"} for i in range(3)])
    campaign = add_campaign(session)
    (tmp_path / "a-file").write_text("not a folder")
    run, _ = send(engine, tmp_path, campaign.id, f"outbox://{tmp_path / 'a-file' / 'outbox'}", session)
    current = status(session, campaign.id)
    assert current["state"] == "paused" and current["pending"] == 3 and current["sent"] == 0
    assert "cannot deliver through outbox://" in current["note"]

    from campaigns.runs import prepare_resume

    prepare_resume(session, campaign.id)
    session.commit()
    execute_run(worker_config(engine, tmp_path, smtp_server.url), run.id)
    session.expire_all()
    assert status(session, campaign.id)["sent"] == 3


def test_with_a_dkim_key_every_message_is_signed_over_both_unsubscribe_headers(
    session, engine, tmp_path, pack, smtp_server, rsa_key
):
    import dataclasses

    import dkim

    private_key, public_key = rsa_key
    (tmp_path / "dkim.pem").write_bytes(private_key)
    add_contacts(session, [dict(p) for p in PEOPLE[:2]])
    campaign = add_campaign(session)
    run = start_run(session, campaign.id)
    session.commit()
    config = dataclasses.replace(
        worker_config(engine, tmp_path, smtp_server.url),
        dkim_selector="p1",
        dkim_domain="shop.example.com",
        dkim_key_path=str(tmp_path / "dkim.pem"),
    )
    execute_run(config, run.id)
    assert len(smtp_server.messages) == 2
    for envelope in smtp_server.messages:
        raw = envelope.content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        assert dkim.verify(raw, dnsfunc=dns_for(public_key))
        signature = parse(raw)["DKIM-Signature"].lower().replace(" ", "").replace("\r\n", "")
        assert "list-unsubscribe:" in signature and "list-unsubscribe-post" in signature
        tampered = raw.replace(b"List-Unsubscribe: <", b"List-Unsubscribe: <https://evil.example/>, <", 1)
        assert not dkim.verify(tampered, dnsfunc=dns_for(public_key))


def test_resume_refuses_while_the_driver_lives_and_recovers_after_it_died(session, engine, tmp_path, pack):
    import socket
    import subprocess
    import sys
    from datetime import timedelta

    from campaigns.runs import RunError, prepare_resume
    from segments.db import utcnow

    add_contacts(session, [{"email": "x@example.com", "first_name": "X"}])
    campaign = add_campaign(session)
    run = start_run(session, campaign.id)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        run.state, run.owner = "sending", f"{socket.gethostname()}:{alive.pid}"
        session.commit()
        with pytest.raises(RunError, match="still running"):
            prepare_resume(session, campaign.id)
    finally:
        alive.kill()
        alive.wait()
    prepare_resume(session, campaign.id)  # its process is gone: resume may go on
    # A driver on another machine is alive while it beats, and presumed dead after the lease.
    run.state, run.owner, run.heartbeat_at = "sending", "elsewhere:1", utcnow()
    session.commit()
    with pytest.raises(RunError, match="still running"):
        prepare_resume(session, campaign.id)
    run.heartbeat_at = utcnow() - timedelta(minutes=10)
    session.commit()
    assert prepare_resume(session, campaign.id)[0].state == "sending"


def test_a_server_that_keeps_refusing_for_now_pauses_the_run_and_nothing_is_failed(
    session, engine, tmp_path, pack, smtp_server
):
    from campaigns.batches import PAUSE_AFTER_TRANSIENT, send_batch
    from campaigns.executors import Worker
    from campaigns.runs import plan_run, prepare_resume
    from delivery import ledger
    from segments.db import make_session_factory

    people = [{"email": f"t{i}@example.com", "first_name": f"T{i}"} for i in range(PAUSE_AFTER_TRANSIENT + 3)]
    add_contacts(session, people)
    for person in people[:PAUSE_AFTER_TRANSIENT]:
        smtp_server.reply_next(person["email"], "451 4.7.1 greylisted, try later", times=4)  # every retry too
    campaign = add_campaign(session)
    run = start_run(session, campaign.id)
    session.commit()
    plan_run(make_session_factory(engine), run.id, half_life_days=30)
    worker = Worker(worker_config(engine, tmp_path, smtp_server.url))
    try:
        ((first, last),) = ledger.pending_ranges(worker.sessions(), run.id, 500)
        send_batch(worker.assembly(run.id), worker.sessions, worker.transport, first, last, sleep=lambda _: None)
    finally:
        worker.close()
    session.expire_all()
    current = status(session, campaign.id)
    assert current["state"] == "paused" and "keeps refusing" in current["note"] and "451" in current["note"]
    assert current["pending"] == len(people) and current["failed"] == current["sent"] == 0
    assert smtp_server.messages == []

    # Later the server takes mail again: resuming sends everyone, once.
    prepare_resume(session, campaign.id)
    session.commit()
    execute_run(worker_config(engine, tmp_path, smtp_server.url), run.id)
    session.expire_all()
    assert status(session, campaign.id)["sent"] == len(people)
    assert sorted(by_recipient(smtp_server)) == sorted(p["email"] for p in people)


def test_a_long_send_stops_using_a_block_when_its_validity_window_closes(session, tmp_path):
    from datetime import timedelta

    from campaigns.models import Run
    from campaigns.pipeline import Assembly, load_profiles
    from content.packs import import_pack
    from content.rendering import Inliner
    from delivery.tracking import LinkSigner
    from segments.db import utcnow
    from tests.packs import block, write_pack

    now = utcnow().replace(microsecond=0)
    flash = block("flash-sale", interests={"pizza": 1.0}, valid_until=(now + timedelta(minutes=5)).isoformat())
    fallback = block("this-week", interests={"news": 0.1}, default=True)
    import_pack(session, write_pack(tmp_path / "pack", [flash, fallback], slots=("hero",), layout=_ONE_SLOT))
    (contact,) = add_contacts(session, [{"email": "p@example.com", "first_name": "P", "interests": {"pizza": 5}}])
    campaign = add_campaign(session)
    run = start_run(session, campaign.id)
    session.commit()
    assembly = Assembly(
        session, session.get(Run, run.id), signer=LinkSigner(SECRET, BASE_URL), inliner=Inliner(), half_life_days=30
    )
    profile = load_profiles(session, [contact.id], assembly, now)[contact.id]
    assert assembly.choose(profile)["hero"].candidate.key == "flash-sale"
    assembly.set_clock(now + timedelta(minutes=6))
    assert assembly.choose(profile)["hero"].candidate.key == "this-week"
