"""`patron contacts export` and `patron contacts erase` after a real send over the real SMTP server.

After erasure no table holds the address or the name in any column, the
runs' counts are unchanged, a re-import is rejected, and the address is
never planned nor sent to again.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text

from campaigns.executors import execute_run
from campaigns.runs import plan_run, start_run, status
from delivery.models import Delivery, Response
from segments.db import Base, make_session_factory, utcnow
from segments.models import Contact, Erasure
from segments.privacy import ERASED_REASON, email_digest
from tests.campaigns.conftest import add_campaign, add_contacts, pack, worker_config  # noqa: F401  (pack: a fixture)
from tests.campaigns.test_reports import send_run

pytestmark = pytest.mark.usefixtures("pack")  # every test sends with the campaigns' test pack

PEOPLE = [
    {"email": "ana@example.com", "first_name": "Anastasia", "locale": "es", "interests": {"pizza": 5}},
    {"email": "bob@example.com", "first_name": "Bob", "locale": "en", "interests": {"pasta": 4}},
]


def _sent_with_responses(session, engine, tmp_path, smtp_server, runner):
    """Ana and Bob got the campaign; Ana opened and clicked; Ana bought at the till (an events import)."""
    add_contacts(session, [dict(p) for p in PEOPLE])
    campaign = add_campaign(session)
    run = send_run(engine, tmp_path, session, campaign.id, smtp_server.url)
    ana = session.scalars(select(Delivery).where(Delivery.email == "ana@example.com")).one()
    for kind in ("open", "click"):
        session.add(
            Response(
                kind=kind,
                delivery_id=ana.id,
                run_id=run.id,
                contact_id=ana.contact_id,
                block_version_id=ana.blocks[0],
                user_agent="Mozilla/5.0 (Anastasia's phone)",
                occurred_at=utcnow(),
            )
        )
    session.commit()
    events = tmp_path / "pos.csv"
    events.write_text("id,type,occurred_at,email,prop:store\nT1,purchase,2026-11-01T10:00:00Z,ana@example.com,Centro\n")
    assert runner.invoke(args=["events", "import", str(events), "--channel", "pos"]).exit_code == 0
    return campaign, run


def test_export_prints_everything_held_about_the_person(session, engine, tmp_path, smtp_server, runner):
    campaign, run = _sent_with_responses(session, engine, tmp_path, smtp_server, runner)
    result = runner.invoke(args=["contacts", "export", "ANA@example.com"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["email"] == "ana@example.com" and record["erased"] is False
    assert (record["contact"]["first_name"], record["contact"]["locale"], record["contact"]["status"]) == (
        "Anastasia",
        "es",
        "active",
    )
    assert [(e["channel"], e["type"], e["properties"]) for e in record["events"]] == [
        ("pos", "purchase", {"store": "Centro"})
    ]
    [pizza] = record["interests"]
    assert pizza["tag"] == "pizza" and pizza["score"] == 5 and 0 < pizza["decayed"] <= 5
    assert sorted((c["purpose"], c["granted"]) for c in record["consents"]) == [("marketing", True), ("tracking", True)]
    [delivery] = record["deliveries"]
    assert delivery["campaign"] == {"id": campaign.id, "name": "Weekly"}
    assert (delivery["run_id"], delivery["status"], delivery["email"]) == (run.id, "sent", "ana@example.com")
    assert sorted(r["kind"] for r in record["responses"]) == ["click", "open"]
    assert record["suppressions"] == []


def test_export_of_an_unknown_or_invalid_address(runner):
    result = runner.invoke(args=["contacts", "export", "nobody@example.com"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["contact"] is None
    assert "no contact has the address nobody@example.com" in result.stderr
    bad = runner.invoke(args=["contacts", "export", "not-an-address"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output and "EMAIL" in bad.output


def _every_value(engine) -> str:
    """Every cell of every table, as one string: to prove an address or a name is nowhere."""
    cells = []
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(text(f"SELECT * FROM {table.name}")):
                cells.extend(str(value) for value in row)
    return "\n".join(cells)


def test_erase_leaves_no_trace_but_the_digest(session, engine, tmp_path, smtp_server, runner):
    campaign, run = _sent_with_responses(session, engine, tmp_path, smtp_server, runner)
    runner.invoke(args=["contacts", "suppress", "ana@example.com"])
    before = status(session, campaign.id)

    refused = runner.invoke(args=["contacts", "erase", "ana@example.com"])  # not a terminal, no --yes
    assert refused.exit_code == 1 and "--yes" in refused.output and "Traceback" not in refused.output
    assert "Anastasia" in _every_value(engine)

    result = runner.invoke(args=["contacts", "erase", "ana@example.com", "--yes", "--json"])
    assert result.exit_code == 0, result.output
    erased = json.loads(result.stdout)
    assert erased | {"contact": None} == {
        "email_digest": email_digest("ana@example.com"),
        "contact": None,
        "events": 1,
        "responses": 2,
        "deliveries_anonymized": 1,
        "suppressions": 1,
    }
    everything = _every_value(engine)
    for trace in ("ana@example.com", "Anastasia", "Anastasia's phone", "Centro"):
        assert trace not in everything
    assert "bob@example.com" in everything
    session.rollback()  # read what the command committed
    assert session.scalars(select(Erasure.email_digest)).all() == [email_digest("ana@example.com")]
    after = status(session, campaign.id)
    assert {k: after[k] for k in ("total", "sent", "skipped")} == {k: before[k] for k in ("total", "sent", "skipped")}

    # A re-import is rejected; the next run mails Bob only.
    people = tmp_path / "people.csv"
    people.write_text("email,first_name,consent:marketing\nAna@Example.com,Anastasia,yes\n")
    imported = runner.invoke(args=["contacts", "import", str(people), "--json"])
    assert json.loads(imported.stdout)["rejected"] == 1
    assert ERASED_REASON in (tmp_path / "people.csv.rejects.csv").read_text()
    # Suppressing the erased address by hand stores nothing: its digest keeps it out already.
    suppressed = runner.invoke(args=["contacts", "suppress", "Ana@Example.com"])
    assert suppressed.exit_code == 0, suppressed.output
    assert suppressed.output.splitlines() == [
        "suppressed 0 address(es): manual",
        "1 address(es) erased on request: kept out by their digest, not stored again",
    ]
    assert "ana@example.com" not in _every_value(engine)
    send_run(engine, tmp_path, session, campaign.id, smtp_server.url)
    received = sorted(rcpt for envelope in smtp_server.messages for rcpt in envelope.rcpt_tos)
    assert received == ["ana@example.com", "bob@example.com", "bob@example.com"]
    again = runner.invoke(args=["contacts", "erase", "ana@example.com", "--yes"])
    assert again.exit_code == 0 and "no contact" in again.output


def test_an_erased_address_is_never_planned_nor_sent(session, engine, tmp_path, smtp_server, runner):
    """However a contact with an erased address comes to exist (an API, a form), planning and the send-time
    re-check skip it by digest."""
    add_contacts(session, [dict(p) for p in PEOPLE])
    assert runner.invoke(args=["contacts", "erase", "ana@example.com", "--yes"]).exit_code == 0
    add_contacts(session, [{"email": "ana@example.com", "first_name": "Ana"}, {"email": "cy@example.com"}])
    campaign = add_campaign(session)
    run = start_run(session, campaign.id)
    session.commit()
    plan_run(make_session_factory(engine), run.id, half_life_days=30)
    # Cy asks to be erased too, but only the digest arrives before the send (say, from another system).
    session.add(Erasure(email_digest=email_digest("cy@example.com"), created_at=utcnow()))
    session.commit()
    execute_run(worker_config(engine, tmp_path, smtp_server.url), run.id)
    session.expire_all()
    fates = dict(
        session.execute(
            select(Contact.email, Delivery.reason)
            .join(Contact, Contact.id == Delivery.contact_id)
            .where(Delivery.run_id == run.id)
        ).all()
    )
    assert fates == {"ana@example.com": ERASED_REASON, "cy@example.com": ERASED_REASON, "bob@example.com": None}
    assert [rcpt for envelope in smtp_server.messages for rcpt in envelope.rcpt_tos] == ["bob@example.com"]
