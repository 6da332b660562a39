"""Audience benchmark: imports and segment counts over N generated contacts.

    python bench/audience.py --contacts 1000000 [--events-per-contact 5] [--json]

Generates a deterministic audience with datagen (not timed), then measures on
a fresh SQLite database (or --database-url):

- contacts import with the real ``patron contacts import``: rows/s (wall
  time, start-up included) and peak memory (PSS, sampled), first as new
  contacts, then the same file again (every row unchanged), then a copy in
  which every interest score changed (the rows with interests updated);
- the naive way in the same run: the SQLAlchemy ORM, one row at a time with a
  lookup per identity, on a slice of the same file;
- events import (point of sale, call centre): rows/s;
- seconds to count typical segments (median of three), and for the
  three-condition segment the naive way: every active contact loaded and
  tested in Python.

Each measurement runs in a child process so that its memory is its own.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

SEGMENTS = {
    "three conditions (locale, attribute, interest)": {
        "all": [
            {"field": "locale", "op": "eq", "value": "es"},
            {"attr": "tier", "op": "eq", "value": "gold"},
            {"interest": "pizza", "op": "gte", "value": 3},
        ]
    },
    "event condition (2+ pos purchases in 30 days)": {
        "event": {"type": "purchase", "channel": "pos", "within_days": 30},
        "op": "gte",
        "value": 2,
    },
    "lapsed (no purchase in 60 days, had one before)": {
        "all": [
            {"event": {"type": "purchase"}, "op": "gte", "value": 1},
            {"event": {"type": "purchase", "within_days": 60}, "op": "eq", "value": 0},
        ]
    },
    "everyone active": {"all": []},
    "consented vegans in Spanish or French": {
        "all": [
            {"consent": "marketing", "op": "eq", "value": True},
            {"interest": "vegan", "op": "gte", "value": 2},
            {
                "any": [
                    {"field": "locale", "op": "startswith", "value": "es"},
                    {"field": "locale", "op": "eq", "value": "fr"},
                ]
            },
        ]
    },
}
NAIVE_IMPORT_ROWS = 20_000
HALF_LIFE_DAYS = 30.0


def _pss_kib(pid: int) -> int:
    """Proportional set size of one process: shared pages split among their sharers."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as fh:
                    todo.extend(int(child) for child in fh.read().split())
        except OSError:
            pass
    return pids


def run_measured(command: list[str], env: dict | None = None) -> tuple[dict, float, float]:
    """Run a command that prints one JSON object; return it, its wall seconds, and the peak PSS (MB) of its tree."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_pss_kib(pid) for pid in _tree(process.pid)))
            time.sleep(0.5)  # reading smaps_rollup is not free: sample gently

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode:
        raise SystemExit(f"{' '.join(command[:6])} failed with exit code {process.returncode}")
    return json.loads(out), seconds, round(peak / 1024, 1)


def worker(*args: str) -> list[str]:
    return [sys.executable, __file__, "--worker", *args]


def patron(*args: str) -> list[str]:
    """The real ``patron`` command, as an operator runs it."""
    return [sys.executable, "-c", "from web.cli import main; main()", *args]


def with_changed_interests(source: Path, target: Path) -> None:
    """Copy a customers file with every interest score one higher: a CRM export in which they all changed."""
    with open(source, newline="", encoding="utf-8") as fh, open(target, "w", newline="", encoding="utf-8") as out:
        rows, writer = csv.reader(fh), csv.writer(out)
        header = next(rows)
        writer.writerow(header)
        scores = [i for i, name in enumerate(header) if name.startswith("interest:")]
        for row in rows:
            for i in scores:
                if row[i]:
                    row[i] = f"{float(row[i]) + 1:g}"
            writer.writerow(row)


def import_with_cli(url: str, *args: str) -> dict:
    result, seconds, peak = run_measured(patron(*args, "--json"), env={"PATRON_DATABASE_URL": url})
    return {**result, "seconds": round(seconds, 2), "rows_per_s": round(result["rows"] / seconds), "peak_pss_mb": peak}


# ---------------------------------------------------------------- workers (child processes)


def _session(url: str):
    from segments.db import make_engine, make_session_factory

    return make_session_factory(make_engine(url))()


def worker_naive_import(url: str, path: str, limit: str) -> dict:
    """The way one writes it first: the ORM, a lookup per identity, an object per row."""
    import csv

    from sqlalchemy import select

    from segments.db import utcnow
    from segments.imports import values
    from segments.models import Consent, Contact, Identity, Interest

    session = _session(url)
    started = time.perf_counter()
    rows = 0
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if rows >= int(limit):
                break
            rows += 1
            email = values.email(row["email"])
            contact = session.scalar(select(Contact).where(Contact.email == email))
            if contact is None and row["id:pos"]:
                identity = session.scalar(
                    select(Identity).where(Identity.channel == "pos", Identity.value == row["id:pos"])
                )
                contact = identity.contact if identity else None
            if contact is None:
                contact = Contact(email=email, attributes={})
                session.add(contact)
            contact.first_name, contact.last_name = row["first_name"], row["last_name"]
            contact.locale, contact.timezone = values.locale(row["locale"]), values.time_zone(row["timezone"])
            contact.attributes = {k[5:]: values.typed(v) for k, v in row.items() if k.startswith("attr:") and v}
            session.flush()
            for channel, column in (("phone", "phone"), ("pos", "id:pos")):
                if row[column] and not session.scalar(
                    select(Identity).where(Identity.channel == channel, Identity.value == row[column])
                ):
                    session.add(Identity(contact=contact, channel=channel, value=row[column]))
            for key, value in row.items():
                if key.startswith("interest:") and value:
                    session.merge(Interest(contact_id=contact.id, tag=key[9:], score=float(value), updated_at=utcnow()))
                if key.startswith("consent:") and value:
                    session.merge(Consent(contact_id=contact.id, purpose=key[8:], granted=values.boolean(value)))
            if rows % 1000 == 0:
                session.commit()
    session.commit()
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds)}


def worker_counts(url: str) -> dict:
    from segments.compiler import count_contacts
    from segments.db import utcnow
    from segments.rules import parse_rules

    session = _session(url)
    results = {}
    for name, data in SEGMENTS.items():
        rule = parse_rules(data)
        timings, count = [], None
        for _ in range(3):
            started = time.perf_counter()
            count = count_contacts(session, rule, now=utcnow(), half_life_days=HALF_LIFE_DAYS)
            timings.append(time.perf_counter() - started)
        results[name] = {
            "count": count,
            "seconds": round(statistics.median(timings), 3),
            "cold_seconds": round(timings[0], 3),
        }
    return results


def worker_naive_count(url: str) -> dict:
    """The three-condition segment the naive way: every active contact through Python."""
    from sqlalchemy import select

    from segments.db import utcnow
    from segments.interests import decayed_score
    from segments.models import Contact, Interest

    session = _session(url)
    now = utcnow()
    started = time.perf_counter()
    pizza = dict(session.execute(select(Interest.contact_id, Interest).where(Interest.tag == "pizza")).all())
    count = 0
    query = select(Contact.id, Contact.locale, Contact.attributes).where(Contact.status == "active")
    for contact_id, locale, attributes in session.execute(query.execution_options(yield_per=10_000)):
        interest = pizza.get(contact_id)
        if locale == "es" and attributes.get("tier") == "gold" and interest is not None:
            if decayed_score(interest.score, interest.updated_at, now, HALF_LIFE_DAYS) >= 3:
                count += 1
    return {"count": count, "seconds": round(time.perf_counter() - started, 3)}


WORKERS = {"naive-import": worker_naive_import, "counts": worker_counts, "naive-count": worker_naive_count}


# ---------------------------------------------------------------- the benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--events-per-contact", type=float, default=5.0)
    parser.add_argument("--database-url", help="default: a fresh SQLite file in a temporary folder")
    parser.add_argument("--keep", type=Path, help="keep the generated files and database in this folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    options = parser.parse_args(argv)

    import datagen

    from segments.db import make_engine
    from web.db import upgrade

    say = (lambda *a, **k: None) if options.json else (lambda *a, **k: print(*a, **k, flush=True))
    work = options.keep or Path(tempfile.mkdtemp(prefix="patron-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    url = options.database_url or f"sqlite:///{work / 'audience.db'}"
    os.environ["PATRON_INSTANCE_PATH"] = str(work)  # the secret key the CLI makes goes there
    naive_url = f"sqlite:///{work / 'naive.db'}"
    for database in (work / "audience.db", work / "naive.db"):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
    # Events end today, so that "within 30 days" selects what it would in production.
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)

    started = time.perf_counter()
    n = options.contacts
    customers = work / "customers.csv"
    pos = work / "pos_events.csv"
    calls = work / "call_centre_events.jsonl"
    datagen.write_customers(customers, n, reference=today)
    pos_rows = datagen.write_pos_events(pos, n, options.events_per_contact, reference=today)
    call_rows = datagen.write_call_centre_events(calls, n, reference=today)
    say(
        f"generated {n:,} contacts, {pos_rows:,} purchases, {call_rows:,} calls"
        f" in {time.perf_counter() - started:.1f} s"
    )

    for database in (url, naive_url):
        engine = make_engine(database)
        upgrade(engine)
        engine.dispose()

    report: dict = {"contacts": n, "database": "postgresql" if url.startswith("postgresql") else "sqlite"}
    first = report["contacts_import"] = import_with_cli(url, "contacts", "import", str(customers))
    say(
        f"contacts import: {first['rows_per_s']:,} rows/s ({first['rows']:,} rows in {first['seconds']} s),"
        f" peak memory {first['peak_pss_mb']} MB"
    )
    again = report["contacts_reimport"] = import_with_cli(url, "contacts", "import", str(customers))
    say(f"contacts re-import (unchanged): {again['rows_per_s']:,} rows/s, peak memory {again['peak_pss_mb']} MB")
    changed = work / "customers_changed.csv"
    with_changed_interests(customers, changed)
    updates = report["contacts_reimport_changed"] = import_with_cli(url, "contacts", "import", str(changed))
    say(
        f"contacts re-import (the CRM changed every interest score): {updates['rows_per_s']:,} rows/s,"
        f" {updates['updated']:,} updated, peak memory {updates['peak_pss_mb']} MB"
    )
    limit = min(n, NAIVE_IMPORT_ROWS)
    naive, seconds, naive_mb = run_measured(worker("naive-import", naive_url, str(customers), str(limit)))
    report["naive_contacts_import"] = {**naive, "peak_pss_mb": naive_mb}
    say(
        f"naive import (ORM, row at a time, first {limit:,} rows): {naive['rows_per_s']:,} rows/s"
        f" — Patron is {first['rows_per_s'] / naive['rows_per_s']:.1f}x faster"
    )

    for channel, path, key in (("pos", pos, "pos_events_import"), ("call_centre", calls, "call_centre_events_import")):
        result = report[key] = import_with_cli(url, "events", "import", str(path), "--channel", channel)
        say(
            f"{channel} events import: {result['rows_per_s']:,} rows/s ({result['rows']:,} rows),"
            f" peak memory {result['peak_pss_mb']} MB"
        )

    counts, _, _ = run_measured(worker("counts", url))
    report["segment_counts"] = counts
    say("segment counts (median of 3):")
    for name, result in counts.items():
        say(f"  {name:<50} {result['count']:>9,}  {result['seconds']:.3f} s (cold {result['cold_seconds']:.3f} s)")
    naive_count, _, _ = run_measured(worker("naive-count", url))
    report["naive_three_condition_count"] = naive_count
    three = counts["three conditions (locale, attribute, interest)"]
    say(
        f"  naive three-condition count (every contact through Python): {naive_count['seconds']:.3f} s,"
        f" count {naive_count['count']:,}"
        f" — {naive_count['seconds'] / max(three['seconds'], 1e-6):.0f}x slower"
    )
    if naive_count["count"] != three["count"]:
        raise SystemExit("the naive count disagrees with the compiled segment")
    if options.json:
        print(json.dumps(report))
    if not options.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        print(json.dumps(WORKERS[sys.argv[2]](*sys.argv[3:])))
    else:
        sys.exit(main())
