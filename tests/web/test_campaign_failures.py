"""A campaign that cannot render is refused when it is created; a run whose recipients failed says why."""

from __future__ import annotations

import json

import pytest
import yaml
from sqlalchemy import func, select

from campaigns.definition import parse_definition
from campaigns.models import Campaign, Run
from tests.campaigns.conftest import CAMPAIGN, add_contacts
from tests.packs import block, write_pack


def _campaign_file(tmp_path, **overrides):
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump({**CAMPAIGN, "subject": "Hi", **overrides}), encoding="utf-8")
    return path


@pytest.fixture
def imported(runner, tmp_path):
    result = runner.invoke(args=["content", "import", str(write_pack(tmp_path / "pack", [block("pizza")]))])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("fields", "where", "reason"),
    [
        # The sandbox refuses it for every contact.
        (
            {"subject": {"en": "{{ contact.email.__class__ }}"}},
            "field 'subject.en': cannot be rendered:",
            "SecurityError: access to attribute '__class__' of 'str' object is unsafe",
        ),
        (
            {"subject": "Hi", "preheader": {"en": "ok", "es": "{{ ''.__class__.__mro__ }}"}},
            "field 'preheader.es': cannot be rendered:",
            "SecurityError: access to attribute '__class__' of 'str' object is unsafe",
        ),
        # It fails only for a contact without a first name (undefined for them, and called).
        (
            {"subject": "{{ contact.first_name.upper() }}, hello"},
            "field 'subject': cannot be rendered for a contact with only an email address:",
            "UndefinedError",
        ),
        # A link of no template, which the subject's link() refuses at send time.
        ({"subject": "{{ link(1) }}"}, "field 'subject': cannot be rendered:", "SecurityError: link(1)"),
    ],
)
def test_a_template_the_sandbox_cannot_render_is_refused(runner, imported, tmp_path, fields, where, reason):
    result = runner.invoke(args=["campaigns", "create", str(_campaign_file(tmp_path, **fields)), "--json"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.output.splitlines()
    assert line.startswith(f"Error: {tmp_path / 'campaign.yaml'}: {where}"), line
    assert reason in line, line
    listed = json.loads(runner.invoke(args=["campaigns", "list", "--json"]).output)
    assert listed == []


def test_a_template_that_renders_for_every_sample_contact_is_accepted(runner, imported, tmp_path):
    fields = {
        "subject": {"en": "{{ contact.first_name | fallback('Hello') }}, {{ strings.greeting }}", "es": "Hola"},
        "preheader": "{{ subject | upper }} {{ contact.attributes.city | default('') }}",
    }
    result = runner.invoke(args=["campaigns", "create", str(_campaign_file(tmp_path, **fields)), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["id"] == 1


def test_send_refuses_a_campaign_stored_before_the_check(runner, imported, session, tmp_path):
    definition = parse_definition({**CAMPAIGN, "subject": "{{ contact.email.__class__ }}"})
    session.add(Campaign(name="Old", definition=definition))  # as a database from before this check holds it
    session.commit()
    result = runner.invoke(args=["campaigns", "send", "1", "--wait"])
    assert result.exit_code == 1, result.output
    (line,) = result.output.splitlines()
    assert line.startswith("Error: campaign 1: field 'subject': cannot be rendered: SecurityError"), line
    assert session.scalar(select(func.count()).select_from(Run)) == 0


# Renders for the sample contacts (who have no attributes), fails at send time for a contact with a `vip` one.
VIP_SUBJECT = "{% if contact.attributes.vip %}{{ contact.attributes.vip.__class__ }}{% endif %}Hi"
SANDBOX_REASON = "RenderError: SecurityError: access to attribute '__class__' of 'str' object is unsafe"


def _failing_run(runner, app, session, tmp_path, smtp_server, refused: int) -> int:
    """A campaign sent to 2 VIPs (who fail to render), ``refused`` contacts the server refuses, each in its own
    words (one of them long), and 2 who get it; its id."""
    add_contacts(
        session,
        [{"email": f"vip{i}@example.com", "attributes": {"vip": "gold"}} for i in range(2)]
        + [{"email": f"gone{i}@example.com"} for i in range(refused)]
        + [{"email": f"ok{i}@example.com", "first_name": "Ok"} for i in range(2)],
    )
    for i in range(refused):
        words = "no such user here " * (20 if i == 0 else 1)
        smtp_server.reply_next(f"gone{i}@example.com", f"550 5.1.1 gone{i}: {words.strip()}")
    app.config["PATRON_DELIVERY_URL"] = smtp_server.url
    created = runner.invoke(args=["campaigns", "create", str(_campaign_file(tmp_path, subject=VIP_SUBJECT)), "--json"])
    assert created.exit_code == 0, created.output
    campaign_id = json.loads(created.output)["id"]
    sent = runner.invoke(args=["campaigns", "send", str(campaign_id), "--wait"])
    assert sent.exit_code == 0, sent.output
    return campaign_id


def test_status_show_and_report_say_why_recipients_failed(runner, app, session, imported, tmp_path, smtp_server):
    campaign_id = _failing_run(runner, app, session, tmp_path, smtp_server, refused=1)
    refusal = "refused: "  # the server's reply follows, as the transport words it

    status = json.loads(runner.invoke(args=["campaigns", "status", str(campaign_id), "--json"]).output)
    assert (status["state"], status["sent"], status["failed"]) == ("finished", 2, 3)
    reasons = status["failed_by_reason"]
    assert list(reasons.values()) == [2, 1] and list(reasons)[0] == SANDBOX_REASON, reasons
    (refused,) = [reason for reason in reasons if reason.startswith(refusal)]
    assert "gone0" in refused and len(refused) == 201 and refused.endswith("…"), refused  # cut to 200 and …

    lines = runner.invoke(args=["campaigns", "status", str(campaign_id)]).output.splitlines()
    assert lines[0].endswith("5 recipients: 2 sent, 0 pending, 0 sending, 3 failed, 0 skipped, 0 unknown"), lines
    assert lines[1:4] == ["3 failed, the most common reasons first:", f"  2 × {SANDBOX_REASON}", f"  1 × {refused}"]

    shown = json.loads(runner.invoke(args=["campaigns", "show", str(campaign_id), "--json"]).output)
    assert shown["runs"][0]["failed_by_reason"] == reasons
    text = runner.invoke(args=["campaigns", "show", str(campaign_id)]).output.splitlines()
    at = text.index("    3 failed, the most common reasons first:")
    assert text[at + 1 : at + 3] == [f"      2 × {SANDBOX_REASON}", f"      1 × {refused}"], text

    report = json.loads(runner.invoke(args=["campaigns", "report", str(campaign_id), "--json"]).output)
    (run,) = report["runs"]
    assert (run["state"], run["sent"], run["failed"], run["failed_by_reason"]) == ("finished", 2, 3, reasons)
    text = runner.invoke(args=["campaigns", "report", str(campaign_id)]).output.splitlines()
    heading = next(line for line in text if line.startswith("run "))
    assert heading.startswith("run 1 (finished, 3 failed; started "), heading
    cells = {line.split("  ")[0]: line.split()[-1] for line in text if line.startswith(("sent ", "failed "))}
    assert cells == {"sent": "2", "failed (not sent)": "3"}, text
    at = text.index("3 failed, the most common reasons first:")
    assert text[at + 1 : at + 3] == [f"  2 × {SANDBOX_REASON}", f"  1 × {refused}"]


def test_only_the_most_common_reasons_are_listed(runner, app, session, imported, tmp_path, smtp_server):
    campaign_id = _failing_run(runner, app, session, tmp_path, smtp_server, refused=7)
    status = json.loads(runner.invoke(args=["campaigns", "status", str(campaign_id), "--json"]).output)
    assert status["failed"] == 9 and len(status["failed_by_reason"]) == 5
    assert list(status["failed_by_reason"].items())[0] == (SANDBOX_REASON, 2)
    lines = runner.invoke(args=["campaigns", "status", str(campaign_id)]).output.splitlines()
    at = lines.index("9 failed, the most common reasons first:")
    assert len(lines[at + 1 : at + 6]) == 5 and lines[at + 6] == "  3 × other reasons", lines
    # The 7 refusals are hard bounces of messages never sent: the bounce rate counts them among the tried.
    (run,) = json.loads(runner.invoke(args=["campaigns", "report", str(campaign_id), "--json"]).output)["runs"]
    assert (run["sent"], run["bounced"]["hard"], run["delivered"]) == (2, 7, 2)
    assert run["rates"]["bounce"] == pytest.approx(7 / 9)
    text = runner.invoke(args=["campaigns", "report", str(campaign_id)]).output.splitlines()
    bounced = next(line for line in text if line.startswith("bounced  "))
    assert bounced.split() == ["bounced", "7", "77.8%", "of", "tried"], bounced
