"""Report benchmark: ``campaigns.reports.report`` over one run of N messages and M responses.

    python bench/reports.py --messages 100000 --responses 300000 [--database-url URL] [--json]

Writes (not timed) a campaign, N contacts, one run of N sent messages that
each show three of twelve block versions in one of three locales, and M
responses of every kind over three days (deterministic, seeded), in bulk, on
a fresh SQLite database (or --database-url, whose tables it empties). Then
times the whole report (median of three), and, the naive way in the same run,
the same totals computed in Python over every response loaded with the ORM.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from sqlalchemy import insert, select, text  # noqa: E402

from campaigns.models import Campaign, Run  # noqa: E402
from campaigns.reports import report  # noqa: E402
from delivery.models import Delivery, Response  # noqa: E402
from segments.db import Base, make_engine, make_session_factory  # noqa: E402
from segments.models import Contact  # noqa: E402
from web.db import upgrade  # noqa: E402

KINDS = ["open"] * 6 + ["click"] * 3 + ["unsubscribe", "bounce", "complaint", "conversion"]
START = datetime(2026, 11, 28, tzinfo=timezone.utc)
CHUNK = 20_000


def _bulk(session, model, rows):
    for i in range(0, len(rows), CHUNK):
        session.execute(insert(model), rows[i : i + CHUNK])


def populate(session, messages: int, responses: int) -> int:
    """The campaign, contacts, run, ledger and responses; the campaign id."""
    rng = random.Random(9)
    campaign = Campaign(name="Bench", definition={"name": "Bench"})
    session.add(campaign)
    session.flush()
    run = Run(campaign_id=campaign.id, state="finished", rules={}, content={})
    session.add(run)
    session.flush()
    _bulk(session, Contact, [{"id": i, "email": f"c{i}@example.com", "attributes": {}} for i in range(1, messages + 1)])
    _bulk(
        session,
        Delivery,
        [
            {
                "id": i,
                "run_id": run.id,
                "contact_id": i,
                "status": "sent",
                "email": f"c{i}@example.com",
                "locale": rng.choice(["en", "es", "fr"]),
                "blocks": rng.sample(range(1, 13), 3),
                "attempts": 1,
                "sent_at": START,
            }
            for i in range(1, messages + 1)
        ],
    )
    rows = []
    for n in range(responses):
        delivery = rng.randint(1, messages)
        kind = rng.choice(KINDS)
        rows.append(
            {
                "kind": kind,
                "delivery_id": delivery,
                "run_id": run.id,
                "contact_id": delivery,
                "machine": kind in ("open", "click") and rng.random() < 0.3,
                "bounce_type": rng.choice(["hard", "soft"]) if kind == "bounce" else None,
                "block_version_id": rng.randint(1, 12) if kind in ("click", "conversion") else None,
                "external_id": f"o{n}" if kind == "conversion" else None,
                "value_minor": rng.randint(100, 20_000) if kind == "conversion" else None,
                "currency": rng.choice(["EUR", "JPY"]) if kind == "conversion" else None,
                "occurred_at": START + timedelta(seconds=rng.randint(0, 3 * 86400)),
            }
        )
    _bulk(session, Response, rows)
    session.commit()
    return campaign.id


def naive(session, campaign_id: int) -> dict:
    """The totals the way one writes them first: load every response, count in Python."""
    runs = session.scalars(select(Run.id).where(Run.campaign_id == campaign_id)).all()
    opened, clicked, totals = set(), set(), {"open": 0, "click": 0}
    for response in session.scalars(select(Response).where(Response.run_id.in_(runs))):
        if response.kind in totals and not response.machine:
            totals[response.kind] += 1
            (opened if response.kind == "open" else clicked).add(response.delivery_id)
    return {"opened": len(opened), "clicked": len(clicked), **totals}


def timed(function, repeat: int = 3) -> float:
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--responses", type=int, default=300_000)
    parser.add_argument("--database-url", help="default: a new SQLite file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade(engine)
        with engine.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(text(f"DELETE FROM {table.name}"))
        with make_session_factory(engine)() as session:
            campaign_id = populate(session, args.messages, args.responses)
            figures = {
                "database": engine.dialect.name,
                "messages": args.messages,
                "responses": args.responses,
                "report_seconds": timed(lambda: (report(session, campaign_id), session.rollback())),
                "naive_totals_seconds": timed(lambda: (naive(session, campaign_id), session.expunge_all())),
            }
            [run] = report(session, campaign_id)["runs"]
            assert naive(session, campaign_id)["opened"] == run["opened"]["human"]["unique"]
        engine.dispose()
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
