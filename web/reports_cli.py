"""``patron campaigns report ID``: what came back from a campaign's runs, as tables or as JSON.

The figures are ``campaigns.reports.report``'s (see docs/reports.md); this
module only lays them out: counts with thousands separators, rates as
percentages and revenue in each currency's own format (Babel, English).
"""

from __future__ import annotations

import json
from decimal import Decimal

import click
from babel.numbers import format_currency, format_percent
from flask.cli import with_appcontext

from campaigns.definition import CampaignError
from campaigns.reports import report
from config import printable
from web.campaigns_format import failed_lines, when
from web.cli import ID
from web.db import get_session
from web.segments_cli import table

LANGUAGE = "en"


def _json_default(value):
    if isinstance(value, Decimal):
        return str(value)
    return value.isoformat()


def _percent(rate: float | None) -> str:
    return "-" if rate is None else format_percent(rate, format="#,##0.0%", locale=LANGUAGE)


def _money(revenue: dict[str, Decimal]) -> str:
    return ", ".join(format_currency(amount, currency, locale=LANGUAGE) for currency, amount in revenue.items()) or "-"


def _n(value: int) -> str:
    return f"{value:,}"


def _totals(run: dict) -> str:
    rates = run["rates"]
    opened, clicked, bounced = run["opened"], run["clicked"], run["bounced"]
    rows = [
        ("sent", _n(run["sent"]), "", ""),
        ("failed (not sent)", _n(run["failed"]), "", ""),
        ("delivered", _n(run["delivered"]), "", ""),
        ("opened (human)", _n(opened["human"]["unique"]), _n(opened["human"]["total"]), _percent(rates["open"])),
        ("opened (machine)", _n(opened["machine"]["unique"]), _n(opened["machine"]["total"]), ""),
        ("clicked (human)", _n(clicked["human"]["unique"]), _n(clicked["human"]["total"]), _percent(rates["click"])),
        ("clicked (machine)", _n(clicked["machine"]["unique"]), _n(clicked["machine"]["total"]), ""),
        ("unsubscribed", _n(run["unsubscribed"]), "", _percent(rates["unsubscribe"])),
        ("complained", _n(run["complained"]), "", _percent(rates["complaint"])),
        ("bounced (hard)", _n(bounced["hard"]), "", ""),
        ("bounced (soft)", _n(bounced["soft"]), "", ""),
        ("bounced", _n(bounced["total"]), "", f"{_percent(rates['bounce'])} of tried"),
        ("converted", _n(run["converted"]["unique"]), _n(run["converted"]["total"]), _percent(rates["conversion"])),
    ]
    return table(("", "unique", "total", "rate"), rows) + f"\nrevenue: {_money(run['revenue'])}"


def _block_section(run: dict, campaign_id: int, most_clicked: int | None) -> list[str]:
    """The "by block" heading and table: every block, or the ``most_clicked`` of them."""
    blocks = run["by_block"]
    if most_clicked is None:
        return ["by block", _blocks(blocks)]
    clicked = sorted((b for b in blocks if b["clicked"]["total"]), key=lambda b: -b["clicked"]["total"])
    shown = clicked[:most_clicked]
    every = f"`patron campaigns report {campaign_id}` lists every one"
    return [f"by block: the {len(shown)} most clicked of {len(blocks)} blocks shown ({every})", _blocks(shown)]


def _blocks(blocks: list[dict]) -> str:
    rows = [
        (
            printable(b["block"] or f"version {b['block_version_id']}"),
            printable(b["locale"] or "-"),
            str(b["version"] or "-"),
            _n(b["impressions"]),
            _n(b["clicked"]["unique"]),
            _n(b["clicked"]["total"]),
            _percent(b["click_rate"]),
            _n(b["converted"]["total"]),
            _money(b["revenue"]),
        )
        for b in blocks
    ]
    headers = ("block", "locale", "v", "shown", "clickers", "clicks", "click rate", "conversions", "revenue")
    return table(headers, rows)


_BREAKDOWN = ("sent", "opened", "clicked", "unsubscribed", "bounced", "complained", "conversions", "revenue")


def _breakdown(rows: list[dict], key: str, header: str) -> str:
    """The by-locale or by-day table: unique human opens and clicks, messages per response, revenue."""
    cells = [
        (
            printable(row[key]),
            _n(row["sent"]),
            _n(row["opened"]["human"]["unique"]),
            _n(row["clicked"]["human"]["unique"]),
            _n(row["unsubscribed"]),
            _n(row["bounced"]["total"]),
            _n(row["complained"]),
            _n(row["converted"]["total"]),
            _money(row["revenue"]),
        )
        for row in rows
    ]
    return table((header, *_BREAKDOWN), cells)


def text_report(result: dict, *, most_clicked: int | None = None) -> str:
    """The report as text: a header, then per run its totals and the block, locale and day tables.

    ``most_clicked``: the block table shows only that many of the clicked blocks, the most clicked first, and
    its heading says so and how many blocks there are."""
    campaign = result["campaign"]
    lines = [f"campaign {campaign['id']}: {printable(campaign['name'])} (report of {when(result['generated_at'])})"]
    if not result["runs"]:
        lines.append("never sent: nothing to report")
    for run in result["runs"]:
        started, finished = when(run["started"]), when(run["finished"])
        state = f"{run['state']}, {run['failed']:,} failed" if run["failed"] else run["state"]
        lines += ["", f"run {run['run']} ({state}; started {started}, finished {finished})", _totals(run)]
        lines += ["", *failed_lines(run)] if run["failed"] else []
        lines += ["", *_block_section(run, campaign["id"], most_clicked)]
        lines += ["", "by locale", _breakdown(run["by_locale"], "locale", "locale")]
        lines += ["", "by day", _breakdown(run["by_day"], "day", "day (UTC)")]
    return "\n".join(lines)


@click.command("report")
@click.argument("campaign_id", type=ID)
@click.option("--run", "run_id", type=ID, help="Only this run of the campaign.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (amounts as decimal strings).")
@with_appcontext
def report_command(campaign_id, run_id, as_json):
    """Opens, clicks, unsubscribes, bounces, complaints, conversions and revenue per run (see docs/reports.md)."""
    session = get_session()
    try:
        result = report(session, campaign_id, run_id=run_id)
    except CampaignError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        session.rollback()
    click.echo(json.dumps(result, default=_json_default) if as_json else text_report(result))
