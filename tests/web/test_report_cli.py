"""`patron campaigns report ID [--json] [--run N]` after a real send, as a marketer reads it."""

from __future__ import annotations

import json
import re

import pytest

from tests.campaigns.conftest import pack  # noqa: F401  (a fixture)
from tests.campaigns.test_reports import deliveries, respond, send_campaign

pytestmark = pytest.mark.usefixtures("pack")


@pytest.fixture
def reported(session, engine, tmp_path, smtp_server):
    campaign, run = send_campaign(session, engine, tmp_path, smtp_server.url)
    rows = {d.email: d for d in deliveries(session, run.id)}
    ana, bob = rows["ana@example.com"], rows["bob@example.com"]
    respond(session, ana, "open")
    respond(session, ana, "open", machine=True, machine_reason="apple_mpp")
    respond(session, ana, "click", block_version_id=ana.blocks[0])
    respond(session, ana, "conversion", value_minor=123456, currency="EUR", block_version_id=ana.blocks[0])
    respond(session, bob, "conversion", value_minor=1500, currency="JPY", external_id="o-2")
    respond(session, bob, "bounce", bounce_type="hard", status="5.1.1")
    session.commit()
    return campaign, run, ana


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def _section(lines: list[str], title: str) -> list[list[str]]:
    """The rows of the table under ``title`` (headers first, the dashed rule dropped)."""
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return [_cells(line) for line in lines[start:end] if not set(line.strip()) <= {"-", " "}]


def test_text_report_shows_counts_rates_and_money(runner, reported):
    campaign, run, ana = reported
    result = runner.invoke(args=["campaigns", "report", str(campaign.id)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"campaign {campaign.id}: Weekly (report of ")
    assert lines[2].startswith(f"run {run.id} (finished; started ")
    totals = {row[0]: row[1:] for row in (_cells(line) for line in lines[3:18]) if row}
    assert totals["sent"] == ["5"]
    assert totals["failed (not sent)"] == ["0"]
    assert totals["delivered"] == ["4"]
    assert totals["opened (human)"] == ["1", "1", "25.0%"]
    assert totals["opened (machine)"] == ["1", "1"]
    assert totals["clicked (human)"] == ["1", "1", "25.0%"]
    assert totals["bounced"] == ["1", "20.0% of tried"]
    assert totals["converted"] == ["2", "2", "50.0%"]
    assert "revenue: €1,234.56, ¥1,500" in lines
    blocks = _section(lines, "by block")
    assert blocks[0] == ["block", "locale", "v", "shown", "clickers", "clicks", "click rate", "conversions", "revenue"]
    clicked = [row for row in blocks[1:] if row[4] == "1"]
    assert len(clicked) == 1 and clicked[0][7:] == ["1", "€1,234.56"]
    locales = {row[0]: row for row in _section(lines, "by locale")[1:]}
    assert (locales["es"][1], locales["en"][1]) == ("2", "3")
    days = _section(lines, "by day")
    assert days[0][0] == "day (UTC)" and sum(int(row[1]) for row in days[1:]) == 5


def test_json_report_parses_with_amounts_as_decimal_strings(runner, reported):
    campaign, run, ana = reported
    result = runner.invoke(args=["campaigns", "report", str(campaign.id), "--json", "--run", str(run.id)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    [only] = data["runs"]
    assert (only["run"], only["sent"], only["delivered"]) == (run.id, 5, 4)
    assert only["revenue"] == {"EUR": "1234.56", "JPY": "1500"}
    assert only["opened"]["machine"] == {"unique": 1, "total": 1}
    assert only["rates"]["open"] == 0.25
    assert {row["locale"] for row in only["by_locale"]} == {"en", "es"}


def test_unknown_campaign_or_run_is_one_line(runner, reported):
    campaign, run, _ = reported
    for args, message in (
        (["999"], "Error: there is no campaign 999"),
        ([str(campaign.id), "--run", "999"], f"Error: campaign {campaign.id} has no run 999"),
    ):
        result = runner.invoke(args=["campaigns", "report", *args])
        assert result.exit_code == 1
        assert result.output.strip() == message
    huge = runner.invoke(args=["campaigns", "report", str(2**63)])
    assert huge.exit_code == 2 and "CAMPAIGN_ID" in huge.output and "Traceback" not in huge.output
