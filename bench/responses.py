"""Responses benchmark: ``record_click`` at the service level, one process, one commit per click.

    python bench/responses.py [--clicks 5000] [--contacts 500] [--database-url URL] [--json]

Builds, untimed, a campaign run with ``--contacts`` sent deliveries (every contact with tracking and
profiling consent) and one block link with two interest weights, on a fresh SQLite file (or the
empty, migrated database ``--database-url`` names: its tables are emptied). Then times ``--clicks``
calls of ``delivery.responses.record_click`` spread over the deliveries, each in its own transaction
as the click endpoint commits it: response row, timeline event and interest upsert. Reports clicks
per second and p50/p99 latency, and checks that responses = events = clicks. This is the one-at-a-time
path the click endpoint takes with ``PATRON_CLICK_JOURNAL=off`` or when its journal fails; with the
journal, clicks are recorded in batches (``delivery.clicks``) and ``bench/clicks.py`` measures them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select, text  # noqa: E402

from campaigns.models import Campaign, Run  # noqa: E402
from delivery.models import Delivery, Response  # noqa: E402
from delivery.responses import Client, record_click  # noqa: E402
from delivery.tracking import register_links  # noqa: E402
from segments.db import Base, make_engine, make_session_factory, utcnow  # noqa: E402
from segments.models import Consent, Contact, Event  # noqa: E402
from web.db import upgrade  # noqa: E402

AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


def prepare(sessions, contacts: int) -> tuple[list[int], int]:
    """(delivery ids, link id): a finished run sent an hour ago to ``contacts`` consenting contacts."""
    with sessions() as session:
        campaign = Campaign(name="Bench", definition={"name": "Bench"})
        session.add(campaign)
        session.flush()
        run = Run(campaign_id=campaign.id, state="finished", rules={}, content={})
        session.add(run)
        session.flush()
        people = [Contact(email=f"bench{i}@example.com", status="active") for i in range(contacts)]
        session.add_all(people)
        session.flush()
        sent_at = utcnow() - timedelta(hours=1)
        for person in people:
            for purpose in ("tracking", "profiling", "marketing"):
                session.add(Consent(contact_id=person.id, purpose=purpose, granted=True, source="bench"))
        deliveries = [
            Delivery(run_id=run.id, contact_id=p.id, status="sent", email=p.email, sent_at=sent_at) for p in people
        ]
        session.add_all(deliveries)
        session.flush()
        (link_id,) = register_links(
            session, ["https://shop.example.com/pizza"], 1, interests={"pizza": 1, "family": 0.5}
        )
        session.commit()
        return [d.id for d in deliveries], link_id


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=5000)
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--database-url")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    folder = tempfile.TemporaryDirectory()
    url = args.database_url or f"sqlite:///{Path(folder.name) / 'bench.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(text(f"DELETE FROM {table.name}"))  # our own table names
    sessions = make_session_factory(engine)
    deliveries, link_id = prepare(sessions, args.contacts)
    client = Client(user_agent=AGENT, ip="203.0.113.5")
    latencies = []
    started = time.perf_counter()
    with sessions() as session:
        for i in range(args.clicks):
            begun = time.perf_counter()
            url_found = record_click(session, deliveries[i % len(deliveries)], link_id, client, half_life_days=30.0)
            session.commit()
            latencies.append(time.perf_counter() - begun)
            assert url_found == "https://shop.example.com/pizza"
    elapsed = time.perf_counter() - started
    with sessions() as session:
        responses = session.scalar(select(func.count()).select_from(Response))
        events = session.scalar(select(func.count()).select_from(Event))
    latencies.sort()
    result = {
        "database": engine.dialect.name,
        "clicks": args.clicks,
        "clicks_per_s": round(args.clicks / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 3),
        "responses": responses,
        "events": events,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
    return 0 if responses == events == args.clicks else 1


if __name__ == "__main__":
    sys.exit(main())
