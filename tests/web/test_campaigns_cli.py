"""The campaigns and content commands as a marketer types them."""

from __future__ import annotations

import json

import yaml

from tests.campaigns.conftest import CAMPAIGN, add_contacts
from tests.packs import block, write_pack


def campaign_file(tmp_path, **overrides):
    definition = {**CAMPAIGN, "subject": "Hi {{ contact.first_name }}", **overrides}
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(definition), encoding="utf-8")
    return path


def test_import_create_send_status_preview(runner, session, tmp_path):
    pack = write_pack(
        tmp_path / "pack",
        [
            block("pizza", interests={"pizza": 1}),
            block("card", slots=("offer",), default=True),
            block("broken", body="{% if %}"),
        ],
    )
    imported = runner.invoke(args=["content", "import", str(pack), "--json"])
    assert imported.exit_code == 0, imported.output
    report = json.loads(imported.output)
    assert report["blocks"]["created"] == 2 and report["problems"][0]["path"].endswith("broken.html")
    add_contacts(session, [{"email": "ana@example.com", "first_name": "Ana", "interests": {"pizza": 3}}])

    created = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path)), "--json"])
    assert created.exit_code == 0, created.output
    campaign_id = json.loads(created.output)["id"]

    preview = runner.invoke(args=["campaigns", "preview", str(campaign_id), "--contact", "ANA@example.com"])
    assert preview.exit_code == 0, preview.output
    assert "to: ana@example.com (in the audience)" in preview.output
    assert "subject: Hi Ana" in preview.output
    assert "hero: pizza v1 (en) score 3.00 = pizza 1.0×3.00 + priority 0.00 — best match" in preview.output

    sent = runner.invoke(args=["campaigns", "send", str(campaign_id), "--wait"])
    assert sent.exit_code == 0, sent.output
    status = json.loads(runner.invoke(args=["campaigns", "status", str(campaign_id), "--json"]).output)
    assert status["state"] == "finished" and status["sent"] == status["total"] == 1

    paused = runner.invoke(args=["campaigns", "pause", str(campaign_id)])
    assert paused.exit_code == 1 and "no run in progress" in paused.output


def test_a_bad_campaign_file_names_the_field(runner, tmp_path):
    result = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path, **{"from": "Corner Shop"}))])
    assert result.exit_code == 1
    assert "campaign.yaml: field 'from': is not an email address" in result.output
    result = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path, subject="{{ oops"))])
    assert "field 'subject': template error" in result.output
    result = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path, layout="nope"))])
    assert "field 'layout': there is no layout 'nope'" in result.output
    result = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path, segment="vips"))])
    assert "give exactly one of `segment`" in result.output


def test_pause_resume_and_cancel_a_run(runner, session, tmp_path):
    from campaigns.runs import start_run

    runner.invoke(args=["content", "import", str(write_pack(tmp_path / "pack", [block("pizza")]))])
    add_contacts(session, [{"email": f"p{i}@example.com", "first_name": f"P{i}"} for i in range(5)])
    campaign_id = json.loads(
        runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path)), "--json"]).output
    )["id"]
    run = start_run(session, campaign_id)
    run.state, run.planned_at = "sending", None
    session.commit()
    assert runner.invoke(args=["campaigns", "pause", str(campaign_id)]).exit_code == 0
    status = json.loads(runner.invoke(args=["campaigns", "status", str(campaign_id), "--json"]).output)
    assert status["state"] == "paused" and status["note"] == "paused by request"

    resumed = runner.invoke(args=["campaigns", "resume", str(campaign_id), "--wait"])
    assert resumed.exit_code == 0, resumed.output
    status = json.loads(runner.invoke(args=["campaigns", "status", str(campaign_id), "--json"]).output)
    assert status["state"] == "finished" and status["sent"] == 5

    again = runner.invoke(args=["campaigns", "send", str(campaign_id), "--again", "--wait"])
    assert again.exit_code == 0
    cancelled = runner.invoke(args=["campaigns", "cancel", str(campaign_id)])
    assert cancelled.exit_code == 1 and "its last run 2 is finished" in cancelled.output


def test_send_without_wait_sends_from_a_background_process(runner, session, tmp_path):
    import time

    runner.invoke(args=["content", "import", str(write_pack(tmp_path / "pack", [block("pizza")]))])
    add_contacts(session, [{"email": f"b{i}@example.com", "first_name": f"B{i}"} for i in range(20)])
    campaign_id = json.loads(
        runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path)), "--json"]).output
    )["id"]
    started = runner.invoke(args=["campaigns", "send", str(campaign_id)])
    assert started.exit_code == 0, started.output
    assert "is sending in the background" in started.output
    deadline = time.monotonic() + 60
    while True:
        status = json.loads(runner.invoke(args=["campaigns", "status", str(campaign_id), "--json"]).output)
        if status["state"] == "finished" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status["state"] == "finished" and status["sent"] == 20
