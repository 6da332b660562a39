"""Kill the sender with SIGKILL mid-campaign, resume: nobody gets two messages, nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from sqlalchemy import insert, select

from delivery.models import Delivery
from segments.models import Consent, Contact
from tests.campaigns.conftest import SECRET, add_campaign

RECIPIENTS = 3000


def patron(env, *args, **kwargs):
    return subprocess.run([sys.executable, "-m", "web.cli", *args], env=env, capture_output=True, text=True, **kwargs)


def test_sigkill_then_resume_sends_each_address_at_most_once(session, engine, tmp_path, pack, smtp_server):
    session.execute(
        insert(Contact),
        [
            {"email": f"c{i:05d}@example.com", "first_name": f"C{i}", "status": "active", "attributes": {}}
            for i in range(RECIPIENTS)
        ],
    )
    ids = session.scalars(select(Contact.id)).all()
    session.execute(insert(Consent), [{"contact_id": i, "purpose": "marketing", "granted": True} for i in ids])
    session.commit()
    campaign = add_campaign(session)
    env = {
        **os.environ,
        "PATRON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PATRON_INSTANCE_PATH": str(tmp_path / "instance"),
        "PATRON_DELIVERY_URL": smtp_server.url,
        "PATRON_SECRET_KEY": SECRET,
    }
    sender = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "campaigns", "send", str(campaign.id), "--wait"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(smtp_server.messages) < RECIPIENTS // 4:
        assert sender.poll() is None, sender.stderr.read().decode()
        if time.monotonic() > deadline:
            sender.kill()
            raise AssertionError(f"the sender never got a quarter of the way: {sender.stderr.read().decode()[-3000:]}")
        time.sleep(0.01)
    sender.send_signal(signal.SIGKILL)
    sender.wait()
    at_kill = len(smtp_server.messages)
    assert at_kill < RECIPIENTS, "the campaign finished before it could be killed"

    resumed = patron(env, "campaigns", "resume", str(campaign.id), "--wait", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    state = json.loads(patron(env, "campaigns", "status", str(campaign.id), "--json").stdout)
    assert state["state"] == "finished"
    assert state["pending"] == state["sending"] == 0
    assert state["sent"] + state["unknown"] + state["skipped"] + state["failed"] == state["total"] == RECIPIENTS

    received = Counter(rcpt for envelope in smtp_server.messages for rcpt in envelope.rcpt_tos)
    assert max(received.values()) == 1, [a for a, n in received.items() if n > 1][:5]
    rows = dict(session.execute(select(Delivery.email, Delivery.status)).all())
    sent = {address for address, status in rows.items() if status == "sent"}
    unknown = {address for address, status in rows.items() if status == "unknown"}
    assert sent <= set(received)  # every row marked sent really arrived
    assert set(received) <= sent | unknown  # and nothing arrived that the ledger does not account for
    if state["unknown"]:
        assert f"{state['unknown']} message(s) were in flight" in resumed.stdout

    # Resending the unknown ones is a deliberate act, and it leaves nothing unknown.
    again = patron(env, "campaigns", "resend-unknown", str(campaign.id), "--wait", timeout=300)
    assert again.returncode == 0, again.stderr
    state = json.loads(patron(env, "campaigns", "status", str(campaign.id), "--json").stdout)
    assert state["unknown"] == 0 and state["sent"] == RECIPIENTS and state["state"] == "finished"
