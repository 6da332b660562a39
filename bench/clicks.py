"""Click benchmark: tracked click redirects served by ``patron serve`` (gunicorn) and by Flask's development server.

    python bench/clicks.py [--requests N] [--database sqlite|postgresql|both] [--servers LIST] [--threads T] [--json]

For each database, untimed: migrate an empty database, add CONTACTS contacts (marketing, tracking and
profiling consent), import the demo pack and send the weekly campaign through the real pipeline into a
maildir outbox; read every click URL from the sent messages (email parser + lxml), and date the sends an
hour back so no click counts as a prefetch (every click is a human one: it writes a response, an event and
the interest upsert, the full path). Then, for each server in turn: ``gunicorn`` is ``patron serve
--workers 2 --threads T`` with the click journal, ``gunicorn-direct`` the same with
``PATRON_CLICK_JOURNAL=off`` (each click recorded before its answer), ``flask`` is ``flask run``
(threaded, the naive way) with the journal. From this process over loopback: WARMUP requests, then N
requests of those URLs in a seeded random order from CONCURRENCY threads, each on one keep-alive
connection spoken directly on a socket (``KeepAlive``; reopened only when the server closes it).

A click counts when its response is in the database, not when it is answered: the clock runs from the
first timed request until the database holds a click response for every 302 answered (polled every
20 ms, at most DRAIN_TIMEOUT seconds). Reported per server and database: recorded clicks per second,
answered per second, how long after the last answer the last click was stored, p50 and p99 latency of
the answers, the 302s answered, the click responses and events stored, and lost clicks (302s answered
minus responses stored: must be 0). The PostgreSQL database (``--postgresql-url``, default
$PATRON_BENCH_POSTGRES_URL or a local ``patron_bench_clicks``) is created if missing and its public
schema is dropped and recreated.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import itertools
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

PACK = ROOT / "examples" / "packs" / "corner-shop"
CAMPAIGN = ROOT / "examples" / "campaigns" / "weekly.yaml"
SECRET_KEY = "patron-bench-clicks-secret-key-0123456789"
CONTACTS = 400
CONCURRENCY = 8
THREADS = 4  # per gunicorn worker (--threads)
WARMUP = 200
SEED = 9
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
DRAIN_TIMEOUT = 120.0  # seconds to wait for the journal's drainers after the last answer
DEFAULT_POSTGRES = os.environ.get(
    "PATRON_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/patron_bench_clicks"
)


def reset_postgres(url: str) -> str:
    """Create the database if missing and empty its public schema; the SQLAlchemy URL (psycopg 3)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def seed(url: str, work: Path) -> list[str]:
    """A migrated database with one sent campaign; the click paths of the sent messages."""
    import lxml.html
    from sqlalchemy import insert, update

    from campaigns.definition import load_definition
    from campaigns.executors import WorkerConfig, execute_run
    from campaigns.runs import create_campaign, start_run
    from content.packs import import_pack
    from delivery.models import Delivery
    from segments.db import make_engine, make_session_factory, utcnow
    from segments.models import Consent, Contact
    from web.db import upgrade

    engine = make_engine(url)
    upgrade(engine)
    with make_session_factory(engine)() as session:
        ids = session.scalars(
            insert(Contact).returning(Contact.id),
            [
                {"email": f"c{i}@bench.example.com", "first_name": f"C{i}", "locale": ("en", "es")[i % 2]}
                for i in range(CONTACTS)
            ],
        ).all()
        session.execute(
            insert(Consent),
            [
                {"contact_id": i, "purpose": purpose, "granted": True, "source": "bench"}
                for i in ids
                for purpose in ("marketing", "tracking", "profiling")
            ],
        )
        import_pack(session, PACK)
        campaign = create_campaign(session, load_definition(CAMPAIGN), str(CAMPAIGN))
        run = start_run(session, campaign.id)
        session.commit()
        outbox = work / "outbox"
        config = WorkerConfig(
            database_url=url,
            delivery_url=f"outbox://{outbox}",
            secret_key=SECRET_KEY,
            base_url="http://127.0.0.1",
            instance_path=str(work / "instance"),
            half_life_days=30.0,
            workers=1,
        )
        execute_run(config, run.id)
        # Sent an hour ago: a click seconds after sending would be flagged as a prefetch.
        session.execute(update(Delivery).values(sent_at=utcnow() - timedelta(hours=1)))
        session.commit()
    engine.dispose()
    paths = []
    for path in sorted((outbox / "new").iterdir()):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        html = lxml.html.fromstring(message.get_body(("html",)).get_content())
        paths += [urlsplit(href).path for href in html.xpath("//a/@href") if urlsplit(href).path.startswith("/r/")]
    if not paths:
        raise SystemExit("the sent messages carry no click links: nothing to benchmark")
    return paths


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(kind: str, url: str, work: Path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PATRON_DATABASE_URL": url,
        "PATRON_SECRET_KEY": SECRET_KEY,
        "PATRON_INSTANCE_PATH": str(work / "instance"),
        "PATRON_BASE_URL": f"http://127.0.0.1:{port}",
        "PATRON_CLICK_JOURNAL": "off" if kind.endswith("-direct") else str(work / "journal"),
    }
    if kind.startswith("gunicorn"):
        command = [str(Path(sys.executable).with_name("patron")), "serve", "--port", str(port), "--workers", "2"]
        command += ["--threads", str(THREADS)]
    else:
        command = [sys.executable, "-m", "flask", "--app", "web:create_app", "run", "--port", str(port)]
    log = open(work / f"{kind}.log", "w")  # noqa: SIM115  (the child writes it until stopped)
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{kind} exited with {process.returncode}; see {work / f'{kind}.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{kind} did not listen on {port} within 30 s")


class KeepAlive:
    """One HTTP/1.1 keep-alive connection spoken directly on a socket, the way a load generator such as wrk
    does: a request is one send of prebuilt bytes, an answer is read to the end of its headers and then
    its Content-Length (or to the end of the connection when it has none). ``http.client`` spends about
    0.3 ms of CPU per request, which on this 2-core machine is taken from the server being measured."""

    def __init__(self, port: int):
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def get(self, request: bytes) -> tuple[int, bool]:
        """Send ``request``; (status, whether the server closes the connection after it)."""
        self.socket.sendall(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self.buffer += self._receive()
        head, rest = self.buffer[:end].decode("latin-1").split("\r\n"), self.buffer[end + 4 :]
        version, status = head[0].split(" ", 2)[:2]
        fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in head[1:])}
        closes = fields.get("connection", "").lower() == "close" or (
            version == "HTTP/1.0" and fields.get("connection", "").lower() != "keep-alive"
        )
        if "content-length" in fields:
            length = int(fields["content-length"])
            while len(rest) < length:
                rest += self._receive()
            self.buffer = rest[length:]
        else:  # no length: the body ends with the connection
            while chunk := self.socket.recv(65536):
                rest += chunk
            closes, self.buffer = True, b""
        return int(status), closes

    def _receive(self) -> bytes:
        chunk = self.socket.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-answer")
        return chunk

    def close(self) -> None:
        self.socket.close()


def drive(port: int, paths: list[str], total: int) -> dict:
    """``total`` GETs of ``paths`` from CONCURRENCY keep-alive connections: statuses, latencies, seconds."""
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {USER_AGENT}\r\n\r\n".encode() for path in paths
    ]
    counter = itertools.count()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    lock = threading.Lock()

    def load() -> None:
        nonlocal errors
        mine, seen, failed = [], {}, 0
        connection = KeepAlive(port)
        while (index := next(counter)) < total:
            started = time.perf_counter()
            try:
                status, closes = connection.get(requests[index % len(requests)])
            except (OSError, ValueError, IndexError):
                failed += 1  # never retried: a retry could record a click twice
                connection.close()
                connection = KeepAlive(port)
                continue
            mine.append(time.perf_counter() - started)
            seen[status] = seen.get(status, 0) + 1
            if closes:
                connection.close()
                connection = KeepAlive(port)
        connection.close()
        with lock:
            latencies.extend(mine)
            errors += failed
            for status, count in seen.items():
                statuses[status] = statuses.get(status, 0) + count

    threads = [threading.Thread(target=load) for _ in range(CONCURRENCY)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"seconds": time.perf_counter() - started, "latencies": latencies, "statuses": statuses, "errors": errors}


def stored_clicks(url: str) -> tuple[int, int]:
    """(click responses, click events) in the database."""
    from sqlalchemy import func, select

    from delivery.models import Response
    from segments.db import make_engine
    from segments.models import Event

    engine = make_engine(url)
    with engine.connect() as connection:
        responses = connection.scalar(select(func.count()).select_from(Response).where(Response.kind == "click"))
        events = connection.scalar(select(func.count()).select_from(Event).where(Event.type == "click"))
    engine.dispose()
    return responses, events


def wait_stored(url: str, expected: int, timeout: float = DRAIN_TIMEOUT) -> float:
    """Poll until ``expected`` click responses are stored (or ``timeout`` seconds pass); the moment seen."""
    from sqlalchemy import func, select

    from delivery.models import Response
    from segments.db import make_engine

    engine = make_engine(url)
    deadline = time.perf_counter() + timeout
    try:
        while True:
            with engine.connect() as connection:
                count = connection.scalar(select(func.count()).select_from(Response).where(Response.kind == "click"))
            now = time.perf_counter()
            if count >= expected or now > deadline:
                return now
            time.sleep(0.02)
    finally:
        engine.dispose()


def measure(kind: str, url: str, work: Path, paths: list[str], requests: int) -> dict:
    port = free_port()
    server = start_server(kind, url, work, port)
    try:
        before = stored_clicks(url)
        warm = drive(port, paths, WARMUP)
        wait_stored(url, before[0] + warm["statuses"].get(302, 0))
        started = time.perf_counter()
        timed = drive(port, paths, requests)
        answered = warm["statuses"].get(302, 0) + timed["statuses"].get(302, 0)
        stored_at = wait_stored(url, before[0] + answered)
        after = stored_clicks(url)
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies = sorted(timed["latencies"]) or [0.0]
    timed_302 = timed["statuses"].get(302, 0)
    return {
        "server": kind,
        "requests": requests,
        "clicks_per_s": round(timed_302 / (stored_at - started), 1),
        "answered_per_s": round(timed_302 / timed["seconds"], 1),
        "recorded_lag_ms": round(max(0.0, stored_at - started - timed["seconds"]) * 1000, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
        "answered_302": answered,
        "other_statuses": {str(s): n for s, n in timed["statuses"].items() if s != 302},
        "errors": warm["errors"] + timed["errors"],
        "responses_stored": after[0] - before[0],
        "events_stored": after[1] - before[1],
        "lost_clicks": answered - (after[0] - before[0]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="timed requests per server (default %(default)s)")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--postgresql-url", default=DEFAULT_POSTGRES, help="reset by the benchmark (default %(default)s)"
    )
    parser.add_argument(
        "--servers",
        default="gunicorn,gunicorn-direct,flask",
        help="comma-separated: gunicorn and flask journal clicks; gunicorn-direct and flask-direct record each"
        " click before answering (PATRON_CLICK_JOURNAL=off). Default %(default)s",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--threads", type=int, default=THREADS, help="threads per gunicorn worker (default %(default)s)"
    )
    options = parser.parse_args(argv)
    globals()["THREADS"] = options.threads
    databases = ("sqlite", "postgresql") if options.database == "both" else (options.database,)
    results = []
    for database in databases:
        with tempfile.TemporaryDirectory(prefix="patron-bench-clicks-") as folder:
            work = Path(folder)
            url = f"sqlite:///{work / 'bench.db'}" if database == "sqlite" else reset_postgres(options.postgresql_url)
            paths = seed(url, work)
            random.Random(SEED).shuffle(paths)
            for kind in options.servers.split(","):
                result = {
                    "database": database,
                    "click_urls": len(paths),
                    **measure(kind, url, work, paths, options.requests),
                }
                results.append(result)
                if not options.json:
                    print(
                        f"{database:10} {kind:15} {result['clicks_per_s']:7.1f} recorded/s"
                        f" ({result['answered_per_s']:7.1f} answered/s, stored +{result['recorded_lag_ms']:.0f} ms)"
                        f"  p50 {result['p50_ms']:6.2f} ms"
                        f"  p99 {result['p99_ms']:7.2f} ms  302s {result['answered_302']}"
                        f"  stored {result['responses_stored']}/{result['events_stored']}  lost {result['lost_clicks']}"
                        f"  errors {result['errors']} {result['other_statuses'] or ''}",
                        flush=True,
                    )
    if options.json:
        print(json.dumps({"concurrency": CONCURRENCY, "contacts": CONTACTS, "results": results}, indent=2))
    return 1 if any(r["lost_clicks"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
