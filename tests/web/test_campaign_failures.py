"""A campaign that cannot render is refused when it is created; a run whose recipients failed says why."""

from __future__ import annotations

import json

import pytest
import yaml
from sqlalchemy import func, select

from campaigns.definition import parse_definition
from campaigns.models import Campaign, Run
from tests.campaigns.conftest import CAMPAIGN
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
