"""Campaign reports over a real send: the aggregate SQL agrees with a plain-Python count of the same rows.

Responses are written with the ORM as the tracking, bounce and conversion
parts write them, on top of the deliveries and block versions of a real run
over the real SMTP server.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from campaigns.definition import CampaignError
from campaigns.executors import execute_run
from campaigns.reports import major_units, report
from campaigns.runs import start_run
from content.models import Block, BlockVersion
from delivery.models import Delivery, Response
from tests.campaigns.conftest import add_campaign, add_contacts, worker_config

PEOPLE = [
    {"email": "ana@example.com", "first_name": "Ana", "locale": "es", "interests": {"pizza": 5}},
    {"email": "bea@example.com", "first_name": "Bea", "locale": "es", "interests": {"pasta": 5}},
    {"email": "bob@example.com", "first_name": "Bob", "locale": "en", "interests": {"pasta": 4}},
    {"email": "cy@example.com", "first_name": "Cy", "locale": "en", "interests": {"pizza": 1}},
    {"email": "dee@example.com", "first_name": "Dee", "locale": "en"},
    {"email": "gone@example.com", "first_name": "Gone", "status": "unsubscribed"},
]
DAY = datetime(2026, 11, 30, 22, 0, tzinfo=timezone.utc)


def send_run(engine, tmp_path, session, campaign_id: int, url: str):
    """Start a run of the campaign (again, if it was sent before) and send it through ``url``; the run."""
    session.commit()  # end any read snapshot: commands may have written since
    run = start_run(session, campaign_id, again=True)
    session.commit()
    execute_run(worker_config(engine, tmp_path, url), run.id)
    session.expire_all()
    return run


def send_campaign(session, engine, tmp_path, url, people=PEOPLE):
    """A campaign sent to ``people`` through ``url``; the campaign and its run."""
    add_contacts(session, [dict(p) for p in people])
    campaign = add_campaign(session)
    return campaign, send_run(engine, tmp_path, session, campaign.id, url)


def deliveries(session, run_id) -> list[Delivery]:
    return session.scalars(select(Delivery).where(Delivery.run_id == run_id).order_by(Delivery.id)).all()


def respond(session, delivery: Delivery, kind: str, **fields) -> Response:
    response = Response(
        kind=kind,
        delivery_id=delivery.id,
        run_id=delivery.run_id,
        contact_id=delivery.contact_id,
        **{"occurred_at": DAY, **fields},
    )
    session.add(response)
    return response


@pytest.fixture
def sent(session, engine, tmp_path, pack, smtp_server):
    return send_campaign(session, engine, tmp_path, smtp_server.url)


def test_a_run_reported_by_hand(session, sent):
    campaign, run = sent
    rows = {d.email: d for d in deliveries(session, run.id)}
    ana, bea, bob, cy = (rows[f"{name}@example.com"] for name in ("ana", "bea", "bob", "cy"))
    hero = ana.blocks[0]
    respond(session, ana, "open")
    respond(session, ana, "open", occurred_at=DAY + timedelta(hours=3))  # the next day, UTC
    respond(session, ana, "open", machine=True, machine_reason="apple_mpp")
    respond(session, ana, "click", block_version_id=hero)
    respond(session, ana, "click", block_version_id=hero)
    respond(session, bob, "click", machine=True, machine_reason="scanner", block_version_id=bob.blocks[0])
    respond(session, ana, "conversion", value_minor=1250, currency="EUR", block_version_id=hero, external_id="o1")
    respond(session, ana, "conversion", value_minor=500, currency="JPY", block_version_id=hero, external_id="o2")
    respond(session, bea, "bounce", bounce_type="hard", status="5.1.1")
    respond(session, cy, "bounce", bounce_type="soft", status="4.2.2")
    respond(session, bob, "unsubscribe")
    respond(session, bob, "complaint")
    session.flush()

    result = report(session, campaign.id, now=DAY)
    assert result["campaign"] == {"id": campaign.id, "name": "Weekly"}
    [only] = result["runs"]
    assert (only["run"], only["state"], only["sent"], only["delivered"]) == (run.id, "finished", 5, 3)
    assert only["opened"] == {"human": {"unique": 1, "total": 2}, "machine": {"unique": 1, "total": 1}}
    assert only["clicked"] == {"human": {"unique": 1, "total": 2}, "machine": {"unique": 1, "total": 1}}
    assert (only["unsubscribed"], only["complained"]) == (1, 1)
    assert only["bounced"] == {"hard": 1, "soft": 1, "total": 2}
    assert only["converted"] == {"unique": 1, "total": 2}
    assert only["revenue"] == {"EUR": Decimal("12.50"), "JPY": Decimal("500")}
    assert only["rates"] == {
        "open": 1 / 3,
        "click": 1 / 3,
        "unsubscribe": 1 / 3,
        "complaint": 1 / 3,
        "conversion": 1 / 3,
        "bounce": 2 / 5,
    }
    by_locale = {row["locale"]: row for row in only["by_locale"]}
    assert {locale: (row["sent"], row["delivered"]) for locale, row in by_locale.items()} == {
        "es": (2, 1),
        "en": (3, 2),
    }
    assert by_locale["es"]["revenue"] == {"EUR": Decimal("12.50"), "JPY": Decimal("500")}
    opens_by_day = {d["day"]: d["opened"]["human"]["total"] for d in only["by_day"]}
    assert (opens_by_day["2026-11-30"], opens_by_day["2026-12-01"]) == (1, 1)
    assert sum(d["sent"] for d in only["by_day"]) == 5
    block = next(b for b in only["by_block"] if b["block_version_id"] == hero)
    key, locale, version = session.execute(
        select(Block.key, Block.locale, BlockVersion.version).join(BlockVersion).where(BlockVersion.id == hero)
    ).one()
    assert (block["block"], block["locale"], block["version"]) == (key, locale, version)
    assert block["clicked"] == {"unique": 1, "total": 2}
    assert block["converted"] == {"unique": 1, "total": 2}
    assert block["impressions"] == sum(hero in (d.blocks or ()) for d in rows.values())
    # Every block version the ledger shows is in the report, clicked or not.
    shown = {v for d in rows.values() if d.status == "sent" for v in d.blocks}
    assert {b["block_version_id"] for b in only["by_block"]} == shown


def test_unknown_campaign_or_run(session, sent):
    campaign, run = sent
    with pytest.raises(CampaignError, match="there is no campaign 999"):
        report(session, 999)
    with pytest.raises(CampaignError, match=f"campaign {campaign.id} has no run 999"):
        report(session, campaign.id, run_id=999)
    assert [r["run"] for r in report(session, campaign.id, run_id=run.id)["runs"]] == [run.id]


def test_minor_units_follow_each_currency():
    assert major_units(1250, "EUR") == Decimal("12.50")
    assert major_units(1250, "JPY") == Decimal("1250")
    assert major_units(1250, "KWD") == Decimal("1.250")


# -- the property: whatever rows come back, SQL and a plain-Python count agree -------------------------

response_rows = st.lists(
    st.fixed_dictionaries(
        {
            "delivery": st.integers(0, len(PEOPLE) - 1),
            "kind": st.sampled_from(["open", "click", "unsubscribe", "bounce", "complaint", "conversion"]),
            "machine": st.booleans(),
            "bounce_type": st.sampled_from(["hard", "soft", None]),
            "block": st.integers(-1, 2),  # an index into the delivery's blocks; -1: none
            "value_minor": st.integers(0, 10**9),
            "currency": st.sampled_from(["EUR", "JPY", "KWD"]),
            "hours": st.integers(0, 72),
        }
    ),
    max_size=40,
)


def _counts(rows: list[dict]) -> dict:
    """Nested figures of the module docstring from plain dicts, with ``delivery``/``contact`` ids."""

    def unique(kind, machine=None, key="delivery"):
        return len({r[key] for r in rows if r["kind"] == kind and (machine is None or r["machine"] == machine)})

    def total(kind, machine):
        return sum(1 for r in rows if r["kind"] == kind and r["machine"] == machine)

    revenue: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["kind"] == "conversion":
            revenue[r["currency"]] += r["value_minor"]
    bounced = [r for r in rows if r["kind"] == "bounce"]
    return {
        "opened": {
            "human": {"unique": unique("open", False), "total": total("open", False)},
            "machine": {"unique": unique("open", True), "total": total("open", True)},
        },
        "clicked": {
            "human": {"unique": unique("click", False), "total": total("click", False)},
            "machine": {"unique": unique("click", True), "total": total("click", True)},
        },
        "unsubscribed": unique("unsubscribe"),
        "bounced": {
            "hard": len({r["delivery"] for r in bounced if r["bounce_type"] == "hard"}),
            "soft": len({r["delivery"] for r in bounced if r["bounce_type"] == "soft"}),
            "total": unique("bounce"),
        },
        "complained": unique("complaint"),
        "converted": {
            "unique": unique("conversion", key="contact"),
            "total": sum(r["kind"] == "conversion" for r in rows),
        },
        "revenue": {c: major_units(v, c) for c, v in sorted(revenue.items())},
    }


def _with_sent(ledger: list[Delivery], rows: list[dict]) -> dict:
    sent = sum(d.status == "sent" for d in ledger)
    statuses = {d.id: d.status for d in ledger}
    bounced_sent = len({r["delivery"] for r in rows if r["kind"] == "bounce" and statuses[r["delivery"]] == "sent"})
    refused = len({r["delivery"] for r in rows if r["kind"] == "bounce" and statuses[r["delivery"]] == "failed"})
    refused += sum(d.status == "unknown" for d in ledger)  # tried, fate unknown
    figures = {"sent": sent, "delivered": sent - bounced_sent, **_counts(rows)}
    delivered = figures["delivered"]

    def rate(n, whole):
        return n / whole if whole else None

    figures["rates"] = {
        "open": rate(figures["opened"]["human"]["unique"], delivered),
        "click": rate(figures["clicked"]["human"]["unique"], delivered),
        "unsubscribe": rate(figures["unsubscribed"], delivered),
        "complaint": rate(figures["complained"], delivered),
        "conversion": rate(figures["converted"]["unique"], delivered),
        # tried: sent, or refused while sending (a bounce on a row that was never sent)
        "bounce": rate(figures["bounced"]["total"], sent + refused),
    }
    assert figures["rates"]["bounce"] is None or 0 <= figures["rates"]["bounce"] <= 1
    return figures


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=response_rows)
def test_the_report_matches_a_plain_python_count(session, sent, specs):
    campaign, run = sent
    session.rollback()
    session.execute(delete(Response))
    ledger = deliveries(session, run.id)
    rows = []
    for n, spec in enumerate(specs):
        delivery = ledger[spec["delivery"]]
        blocks = delivery.blocks or []
        block = blocks[spec["block"]] if 0 <= spec["block"] < len(blocks) else None
        row = {
            "id": n,
            "delivery": delivery.id,
            "contact": delivery.contact_id,
            "kind": spec["kind"],
            "machine": spec["machine"] if spec["kind"] in ("open", "click") else False,
            "bounce_type": spec["bounce_type"] if spec["kind"] == "bounce" else None,
            "block": block,
            "value_minor": spec["value_minor"] if spec["kind"] == "conversion" else None,
            "currency": spec["currency"] if spec["kind"] == "conversion" else None,
            "occurred_at": DAY + timedelta(hours=spec["hours"]),
        }
        rows.append(row)
        respond(
            session,
            delivery,
            row["kind"],
            machine=row["machine"],
            bounce_type=row["bounce_type"],
            block_version_id=block,
            value_minor=row["value_minor"],
            currency=row["currency"],
            occurred_at=row["occurred_at"],
            external_id=f"r{n}",
        )
    session.flush()
    [got] = report(session, campaign.id)["runs"]

    expected = _with_sent(ledger, rows)
    assert {k: got[k] for k in expected} == expected
    # By locale: the ledger rows that have one.
    locales = sorted({d.locale for d in ledger if d.locale})
    expected_locales = []
    for locale in locales:
        mine = [d for d in ledger if d.locale == locale]
        ids = {d.id for d in mine}
        expected_locales.append({"locale": locale, **_with_sent(mine, [r for r in rows if r["delivery"] in ids])})
    assert [{k: row[k] for k in expected_locales[0]} for row in got["by_locale"]] == expected_locales
    # By day of the response (UTC), with the messages sent that day.
    sent_days = defaultdict(int)
    for d in ledger:
        if d.status == "sent":
            sent_days[d.sent_at.strftime("%Y-%m-%d")] += 1
    days = sorted({r["occurred_at"].strftime("%Y-%m-%d") for r in rows} | set(sent_days))
    expected_days = [
        {
            "day": day,
            "sent": sent_days.get(day, 0),
            **_counts([r for r in rows if r["occurred_at"].strftime("%Y-%m-%d") == day]),
        }
        for day in days
    ]
    assert got["by_day"] == expected_days
    # By block: impressions from the ledger, human clicks and conversions from the responses.
    versions = sorted({v for d in ledger if d.status == "sent" for v in d.blocks} | {r["block"] for r in rows} - {None})
    expected_blocks = []
    for version in versions:
        mine = [r for r in rows if r["block"] == version]
        counts = _counts(mine)
        shown = sum(version in d.blocks for d in ledger if d.status == "sent")
        expected_blocks.append(
            {
                "block_version_id": version,
                "impressions": shown,
                "clicked": counts["clicked"]["human"],
                "converted": counts["converted"],
                "revenue": counts["revenue"],
            }
        )
    assert [{k: b[k] for k in expected_blocks[0]} for b in got["by_block"]] == expected_blocks
    session.rollback()
