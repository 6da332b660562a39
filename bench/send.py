"""Send benchmark: one campaign run to N generated recipients over real SMTP, then the naive way.

    python bench/send.py --recipients 20000 [--workers W] [--naive N2] [--json] [--database-url URL]

Builds, untimed, N deterministic contacts with datagen (seven locales, names
with accents, 1–4 interests scored 0.5–9, marketing consent for everyone),
imports the demo pack, creates the weekly campaign and starts a run. Then,
against a local SMTP sink that runs in a process of its own (bench/smtp_sink.py):

- the pipeline: ``campaigns.executors.execute_run`` with W workers, in a child
  process so that its memory is its own. Messages per second over the whole
  ``execute_run`` (planning included), seconds per stage, premailer calls, and
  the peak RSS (VmHWM: see ``peak_rss_kib``) of the sending process and of its
  largest pool worker. The sink must have received exactly the messages the
  ledger says were sent;
- the sink's raw capacity: a trivial smtplib loop of one pre-built message of
  the pipeline's average size, and how busy the sink was during the run, so a
  reader can see the sink was not the limit. (Every SMTP command is a round
  trip, so the pipeline's ``send`` stage still includes the sink's time per
  transaction: no single-connection sender beats ``sink_msgs_per_s``.);
- the naive way, same run, first N2 of the same recipients (default
  min(N, 1000): it is many times slower). Per recipient: ORM queries for
  the contact and its interests, the raw layout and blocks rendered with
  Jinja, premailer on the whole email, an ``email.message.EmailMessage``,
  ``smtplib.SMTP.send_message`` on one reused connection. Its blocks are the
  ones the pipeline chose for that recipient, read from the ledger before the
  clock starts: selection is not where the naive way loses time. It writes no
  ledger and tracks no clicks, so if anything it is flattered.

premailer calls are counted by wrapping ``premailer.Premailer.transform`` in
the sending process and, through this module being the spawn workers'
``__main__``, in every pool worker; each call appends a byte to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from itertools import islice
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

PACK = ROOT / "examples" / "packs" / "corner-shop"
CAMPAIGN = ROOT / "examples" / "campaigns" / "weekly.yaml"
STAGES = ("segment", "select", "render", "build", "send", "db")
INSERT_CHUNK = 5_000
SEED = 42
SECRET_KEY = "patron-bench-send-secret"
BASE_URL = "https://patron.example.com"
HALF_LIFE_DAYS = 30.0
NAIVE_DEFAULT = 1_000
SINK_SAMPLE_MESSAGES = 2_000
TARGETS = {"msgs_per_s": 600, "speedup": 10, "peak_rss_mb": 150}
PREMAILER_LOG = "PATRON_BENCH_PREMAILER_LOG"


def _count_premailer_calls(path: str) -> None:
    """Wrap premailer so that each transform appends one byte to ``path`` (safe across processes)."""
    import premailer

    transform = premailer.Premailer.transform

    def counted(self, *args, **kwargs):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b".")
        finally:
            os.close(fd)
        return transform(self, *args, **kwargs)

    premailer.Premailer.transform = counted


if os.environ.get(PREMAILER_LOG):
    # Here at import, so that spawned pool workers (which import this file as __mp_main__) count too.
    _count_premailer_calls(os.environ[PREMAILER_LOG])


class Progress:
    """A single progress line on stderr, on a terminal only; throttled."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled, self.last, self.shown = label, enabled, 0.0, False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.enabled and (now - self.last >= 0.2 or done >= total):
            self.last, self.shown = now, True
            sys.stderr.write(f"\r{self.label}: {done:,}/{total:,} ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _rss_mb(kib: int) -> float:
    return round(kib / 1024, 1)


def peak_rss_kib(pid: int | str = "self") -> int:
    """The process's peak RSS since it started its program (VmHWM), in KiB; 0 if it is gone.

    Not ``getrusage().ru_maxrss``: Linux carries the maximum across fork and
    exec, so a child reports at least its parent's RSS at the fork (measured:
    a fresh interpreter forked from a 300 MB parent says 300 MB). The pool
    workers' ``RUSAGE_CHILDREN`` has the same flaw.
    """
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if pid == "self" else 0


def _cpu_seconds(who: int) -> dict[str, float]:
    usage = resource.getrusage(who)
    return {"user": round(usage.ru_utime, 2), "system": round(usage.ru_stime, 2)}


class WorkerPeaks:
    """The largest VmHWM of this process's descendants (the pool workers), sampled until stopped.

    VmHWM only grows, so a sample taken any time after a worker's peak sees it;
    the workers sit idle between their last batch and the pool's shutdown.
    """

    def __init__(self, interval: float = 0.25):
        import threading

        self.interval, self.peak = interval, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while True:
            try:
                children = me.children(recursive=True)
            except psutil.Error:
                children = []
            for child in children:
                self.peak = max(self.peak, peak_rss_kib(child.pid))
            if self._done.wait(self.interval):
                return

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


# ---------------------------------------------------------------- data


def build_data(url: str, n: int, progress: Progress) -> dict:
    """Contacts, interests, consent, the demo pack, the weekly campaign and a started run; ids and counts."""
    import datagen
    from sqlalchemy import func, insert, select

    from campaigns.definition import load_definition
    from campaigns.runs import create_campaign, start_run
    from content.packs import import_pack
    from segments.db import make_engine, make_session_factory, utcnow
    from segments.models import Consent, Contact, Interest
    from web.db import upgrade

    engine = make_engine(url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    rng = random.Random(f"patron-bench-send:{SEED}")
    now = utcnow()
    interests = 0
    try:
        with sessions() as session:
            if session.scalar(select(func.count()).select_from(Contact)):
                raise SystemExit(f"{url} already has contacts: the benchmark needs an empty database")
            people = datagen.people(n, SEED)
            done = 0
            while done < n:
                chunk = list(islice(people, INSERT_CHUNK))
                ids = session.scalars(
                    insert(Contact).returning(Contact.id, sort_by_parameter_order=True),
                    [
                        {
                            "email": p.email,
                            "first_name": p.first_name,
                            "last_name": p.last_name,
                            "locale": p.locale,
                            "timezone": p.timezone,
                            "attributes": {"city": p.city, "tier": p.tier, "vip": p.vip, "birth_year": p.birth_year},
                            "status": "active",
                        }
                        for p in chunk
                    ],
                ).all()
                rows = [
                    {
                        "contact_id": contact_id,
                        "tag": tag,
                        "score": min(9.0, max(0.5, score)),
                        # Interests fed over the last month (ages drawn from the seed): decay moves them a little.
                        "updated_at": now - timedelta(days=30 * rng.random()),
                    }
                    for contact_id, p in zip(ids, chunk, strict=True)
                    for tag, score in p.interests
                ]
                session.execute(insert(Interest), rows)
                session.execute(
                    insert(Consent),
                    [{"contact_id": i, "purpose": "marketing", "granted": True, "source": "bench"} for i in ids],
                )
                session.commit()
                interests += len(rows)
                done += len(chunk)
                progress(done, n)
            progress.close()
            import_pack(session, PACK)
            campaign = create_campaign(session, load_definition(CAMPAIGN), str(CAMPAIGN))
            session.commit()
            run = start_run(session, campaign.id)
            session.commit()
            return {"campaign_id": campaign.id, "run_id": run.id, "contacts": n, "interests": interests}
    finally:
        engine.dispose()


def ledger_summary(url: str, run_id: int) -> dict:
    """The run's rows by status, and the distinct block versions its sent messages used."""
    from sqlalchemy import func, select

    from delivery.models import Delivery
    from segments.db import make_engine, make_session_factory

    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            statuses = dict(
                session.execute(
                    select(Delivery.status, func.count()).where(Delivery.run_id == run_id).group_by(Delivery.status)
                ).all()
            )
            versions: set[int] = set()
            query = select(Delivery.blocks).where(Delivery.run_id == run_id, Delivery.status == "sent")
            for (blocks,) in session.execute(query.execution_options(yield_per=10_000)):
                versions.update(blocks or ())
    finally:
        engine.dispose()
    return {"statuses": statuses, "block_versions": len(versions)}


# ---------------------------------------------------------------- children


def child_pipeline(params: dict) -> dict:
    """Send the run with execute_run; wall seconds, stats, premailer calls, peak RSS."""
    from campaigns.executors import WorkerConfig, execute_run

    config = WorkerConfig(**params["config"])
    progress = Progress(f"sending ({config.workers} worker{'s' if config.workers > 1 else ''})", params["progress"])
    with WorkerPeaks() as workers:
        started = time.perf_counter()
        stats = execute_run(config, params["run_id"], progress=progress)
        seconds = time.perf_counter() - started
    progress.close()
    calls = getattr(stats, "premailer_calls", None)  # once the executors report it themselves
    if calls is None:
        log = Path(os.environ[PREMAILER_LOG])
        calls = log.stat().st_size if log.exists() else 0
    return {
        "seconds": seconds,
        "stages": {stage: stats.seconds.get(stage, 0.0) for stage in STAGES},
        "outcomes": dict(stats.outcomes),
        "premailer_calls": calls,
        "rss_self_kib": peak_rss_kib(),
        # CPU of the sending process (and, with a pool, of its workers): how much of the wall time was work.
        "cpu_seconds": _cpu_seconds(resource.RUSAGE_SELF),
        "workers_cpu_seconds": _cpu_seconds(resource.RUSAGE_CHILDREN),
        "rss_children_kib": workers.peak,  # the largest pool worker (none when workers == 1)
    }


def child_naive(params: dict) -> dict:
    """The way one writes it first, for the run's first recipients; messages and seconds."""
    import smtplib
    from email.headerregistry import Address
    from email.message import EmailMessage
    from email.utils import make_msgid

    import premailer
    from jinja2 import ChainableUndefined, Undefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from lxml import html as lxml_html
    from markupsafe import Markup
    from sqlalchemy import select

    from campaigns.models import Campaign, Run
    from content.models import BlockVersion, LayoutVersion, Pack
    from content.rendering import PREMAILER_OPTIONS
    from delivery.models import Delivery
    from delivery.tracking import LinkSigner
    from segments.db import make_engine, make_session_factory, utcnow
    from segments.interests import decayed_score
    from segments.models import Contact, Interest

    def fallback(value, default=""):
        return default if value is None or isinstance(value, Undefined) or not str(value).strip() else value

    def environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
        env = ImmutableSandboxedEnvironment(autoescape=autoescape, undefined=ChainableUndefined)
        env.filters["fallback"] = fallback
        return env

    html_env, text_env = environment(True), environment(False)
    engine = make_engine(params["database_url"])
    session = make_session_factory(engine)()
    run = session.get(Run, params["run_id"])
    definition = session.get(Campaign, run.campaign_id).definition
    layout = session.get(LayoutVersion, run.content["layout_version"])
    pack = session.get(Pack, run.content["pack"])
    default = pack.default_locale
    frozen = select(BlockVersion).where(BlockVersion.id.in_(run.content["blocks"]))
    versions = {version.id: version for version in session.scalars(frozen)}
    # What the pipeline chose, in its order: a stand-in for selection, read before the clock starts.
    recipients = session.execute(
        select(Delivery.id, Delivery.contact_id, Delivery.blocks)
        .where(Delivery.run_id == run.id, Delivery.status == "sent")
        .order_by(Delivery.id)
        .limit(params["limit"])
    ).all()
    session.expunge_all()

    # Compiled once, as any app would.
    layout_html, layout_text = html_env.from_string(layout.html), text_env.from_string(layout.text or "")
    blocks_html = {i: html_env.from_string(v.html) for i, v in versions.items()}
    blocks_text = {i: text_env.from_string(v.text) if v.text else None for i, v in versions.items()}
    subjects = {k.lower(): text_env.from_string(v) for k, v in definition["subject"].items()}
    preheaders = {k.lower(): text_env.from_string(v) for k, v in (definition.get("preheader") or {}).items()}
    sender, reply_to = definition["sender"], definition.get("reply_to")
    domain = sender["email"].rpartition("@")[2]
    signer = LinkSigner(params["secret_key"], params["base_url"])
    progress = Progress("naive", params["progress"])

    smtp = smtplib.SMTP("127.0.0.1", params["port"])
    smtp.ehlo()
    started = time.perf_counter()
    sent = 0
    for delivery_id, contact_id, block_ids in recipients:
        now = utcnow()
        contact = session.get(Contact, contact_id)
        interests = session.scalars(select(Interest).where(Interest.contact_id == contact_id)).all()
        _scores = {i.tag: decayed_score(i.score, i.updated_at, now, HALF_LIFE_DAYS) for i in interests}
        language = (contact.locale or default).split("-")[0].lower()
        strings = {**pack.strings.get(default, {}), **pack.strings.get(language, {})}
        context = {
            "contact": {
                "email": contact.email,
                "first_name": contact.first_name,
                "last_name": contact.last_name,
                "locale": contact.locale,
                "timezone": contact.timezone,
                "attributes": contact.attributes or {},
            },
            "strings": strings,
            "campaign": {"name": definition["name"]},
            "unsubscribe_url": signer.unsubscribe_url(delivery_id),
        }
        slots_html, slots_text = {}, {}
        queue = list(block_ids or ())
        for slot in layout.slots:
            if queue and slot in versions[queue[0]].slots:
                version_id = queue.pop(0)
                slots_html[slot] = Markup(blocks_html[version_id].render(context))
                text = blocks_text[version_id]
                if text is None:  # no text version in the pack: the HTML's words
                    slots_text[slot] = lxml_html.fragment_fromstring(slots_html[slot], "div").text_content()
                else:
                    slots_text[slot] = text.render(context)
        subject = " ".join(subjects.get(language, subjects.get(default)).render(context).split())
        preheader = preheaders.get(language, preheaders.get(default))
        context |= {"subject": subject, "preheader": preheader.render(context) if preheader else ""}
        html = layout_html.render(context, slots=slots_html)
        html = premailer.Premailer(html, css_text=layout.css or None, **PREMAILER_OPTIONS).transform()
        text = layout_text.render(context, slots=slots_text)

        message = EmailMessage()
        message["From"] = Address(sender.get("name") or "", addr_spec=sender["email"])
        if reply_to:
            message["Reply-To"] = Address(reply_to.get("name") or "", addr_spec=reply_to["email"])
        name = " ".join(p for p in (contact.first_name, contact.last_name) if p)
        message["To"] = Address(name, addr_spec=contact.email)
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain=domain)
        message["List-Unsubscribe"] = f"<{context['unsubscribe_url']}>"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        smtp.send_message(message)
        sent += 1
        progress(sent, len(recipients))
    seconds = time.perf_counter() - started
    progress.close()
    smtp.quit()
    session.close()
    engine.dispose()
    return {"messages": sent, "seconds": seconds, "rss_kib": peak_rss_kib()}


CHILDREN = {"pipeline": child_pipeline, "naive": child_naive}


def run_child(kind: str, params: dict, work: Path, env: dict | None = None) -> dict:
    """Run one measurement in a fresh interpreter; the dict it wrote."""
    result = work / f"{kind}-result.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child", kind, json.dumps(params), str(result)]
    completed = subprocess.run(command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    if completed.returncode:
        raise SystemExit(f"the {kind} child failed with exit code {completed.returncode} (its traceback is above)")
    return json.loads(result.read_text())


# ---------------------------------------------------------------- the benchmark


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def measure(options, url: str, work: Path, say) -> dict:
    """Build the data, then send the run both ways against one sink; the report."""
    import psutil
    from smtp_sink import PostfixSink, Sink, postfix_sink_binary, raw_capacity, sample_message

    n, tty = options.recipients, sys.stderr.isatty()
    naive_n = min(n, NAIVE_DEFAULT if options.naive is None else max(options.naive, 0))
    started = time.perf_counter()
    data = build_data(url, n, Progress("building contacts", tty))
    data_seconds = time.perf_counter() - started
    say(
        f"data: {n:,} contacts, {data['interests']:,} interests, the demo pack and the weekly campaign"
        f" in {data_seconds:.1f} s (not timed)"
    )
    load = os.getloadavg()[0]  # other work on the machine skews every figure below
    if load > 0.5:
        say(f"note: the machine's load average is {load:.1f} before the run: other work shares the CPU")

    binary = postfix_sink_binary() if options.sink in ("auto", "postfix") else None
    if options.sink == "postfix" and binary is None:
        raise SystemExit("--sink postfix: no smtp-sink found; install postfix or set PATRON_BENCH_SMTP_SINK")
    with PostfixSink(binary) if binary else Sink() as sink:
        say(f"sink: {'Postfix smtp-sink ' + binary if binary else 'aiosmtpd (bench/smtp_sink.py)'}")
        sink_cpu = psutil.Process(sink.pid)
        log = work / "premailer-calls"
        log.unlink(missing_ok=True)
        config = {
            "database_url": url,
            "delivery_url": f"smtp://127.0.0.1:{sink.port}",
            "secret_key": SECRET_KEY,
            "base_url": BASE_URL,
            "instance_path": str(work),
            "half_life_days": HALF_LIFE_DAYS,
            "workers": options.workers,
        }
        before, cpu_before = sink.messages, sum(sink_cpu.cpu_times()[:2])
        pipeline = run_child(
            "pipeline",
            {"config": config, "run_id": data["run_id"], "progress": tty},
            work,
            env={PREMAILER_LOG: str(log)},
        )
        received = sink.messages - before
        sink_busy = (sum(sink_cpu.cpu_times()[:2]) - cpu_before) / pipeline["seconds"]
        average = sink.bytes // max(sink.messages, 1)
        capacity = raw_capacity(sink.port, SINK_SAMPLE_MESSAGES, sample_message(average or 16 * 1024))
        ledger = ledger_summary(url, data["run_id"])
        naive = None
        if naive_n:
            params = {"database_url": url, "run_id": data["run_id"], "limit": naive_n, "port": sink.port}
            params |= {"secret_key": SECRET_KEY, "base_url": BASE_URL, "progress": tty}
            naive = run_child("naive", params, work)

    sent = pipeline["outcomes"].get("sent", 0)
    msgs_per_s = sent / pipeline["seconds"]
    naive_rate = naive["messages"] / naive["seconds"] if naive and naive["seconds"] else None
    rss_sender, rss_worker = _rss_mb(pipeline["rss_self_kib"]), _rss_mb(pipeline["rss_children_kib"])
    peak = max(rss_sender, rss_worker)
    versions_used = ledger["block_versions"] + 1  # and the layout
    report = {
        "recipients": n,
        "workers": options.workers,
        "msgs_per_s": round(msgs_per_s, 1),
        "naive_msgs_per_s": round(naive_rate, 1) if naive_rate else None,
        "speedup": round(msgs_per_s / naive_rate, 1) if naive_rate else None,
        "peak_rss_mb": peak,
        "rss_mb": {"sender": rss_sender, "largest_worker": rss_worker or None},
        "premailer_calls": pipeline["premailer_calls"],
        "versions_used": versions_used,
        "block_versions_used": ledger["block_versions"],
        "stages": {stage: round(pipeline["stages"][stage], 3) for stage in STAGES},
        "seconds": round(pipeline["seconds"], 2),
        "cpu_seconds": {"sender": pipeline["cpu_seconds"], "workers": pipeline["workers_cpu_seconds"]},
        "sent": sent,
        "outcomes": pipeline["outcomes"],
        "ledger": ledger["statuses"],
        "sink": "postfix smtp-sink" if binary else "aiosmtpd",
        "sink_received": received,
        "sink_msgs_per_s": round(capacity["msgs_per_s"], 1),
        "sink_sample_bytes": capacity["message_bytes"],
        "sink_busy": round(sink_busy, 2),
        "average_message_bytes": average or None,  # Postfix's smtp-sink counts messages, not bytes
        "naive_recipients": naive["messages"] if naive else 0,
        "naive_seconds": round(naive["seconds"], 2) if naive else None,
        "naive_peak_rss_mb": _rss_mb(naive["rss_kib"]) if naive else None,
        "data_seconds": round(data_seconds, 2),
        "load_average": round(load, 2),
    }
    report["checks"] = {
        "sink_received_all_sent": received == sent,
        "ledger_agrees": ledger["statuses"].get("sent", 0) == sent,
        # Each worker compiles the versions it uses once: never a call per recipient.
        "premailer_once_per_version": pipeline["premailer_calls"] <= versions_used * options.workers,
    }
    report["targets_met"] = {
        "msgs_per_s": msgs_per_s >= TARGETS["msgs_per_s"] if options.workers == 1 else None,  # a one-worker target
        "speedup": report["speedup"] >= TARGETS["speedup"] if report["speedup"] else None,
        "peak_rss_mb": peak <= TARGETS["peak_rss_mb"],
    }
    return report


def print_report(report: dict) -> None:
    """The figures as lines a person reads."""
    sent, workers = report["sent"], report["workers"]
    other = ", ".join(f"{k} {v:,}" for k, v in sorted(report["outcomes"].items()) if k != "sent")
    print(
        f"pipeline ({workers} worker{'s' if workers > 1 else ''}): {sent:,} sent in {report['seconds']:.1f} s"
        f" = {report['msgs_per_s']:,.0f} msgs/s (execute_run wall time, planning included)"
        + (f"; {other}" if other else "")
    )
    stages = report["stages"]
    total = sum(stages.values())
    print(f"  where the time goes{' (summed over workers)' if workers > 1 else ''}:")
    for stage, seconds in stages.items():
        print(f"    {stage:<8} {seconds:8.2f} s  {_share(seconds, total):>4}")
    print(f"    {'total':<8} {total:8.2f} s")
    cpu = report["cpu_seconds"]
    spent = sum(cpu["sender"].values()) + sum(cpu["workers"].values())
    print(
        f"  CPU: {spent:.1f} s ({cpu['sender']['user'] + cpu['workers']['user']:.1f} user,"
        f" {cpu['sender']['system'] + cpu['workers']['system']:.1f} system) in {report['seconds']:.1f} s of wall time"
    )
    print(
        f"  premailer calls: {report['premailer_calls']} for {report['versions_used']} distinct versions used"
        f" ({report['block_versions_used']} blocks + 1 layout)"
        + ("; each worker compiles its own" if workers > 1 else "")
    )
    rss = report["rss_mb"]
    print(
        f"  peak RSS: {rss['sender']} MB sending process"
        + (f", {rss['largest_worker']} MB largest worker" if workers > 1 else "")
    )
    matches = "matches" if report["checks"]["sink_received_all_sent"] else "DOES NOT MATCH"
    size = f" (average {report['average_message_bytes'] / 1024:.1f} KB)" if report["average_message_bytes"] else ""
    print(
        f"  sink: {report['sink']}, received {report['sink_received']:,} messages{size}"
        f" — {matches} the {sent:,} sent; busy {100 * report['sink_busy']:.0f}% of one core during the run;"
        f" raw capacity {report['sink_msgs_per_s']:,.0f} msgs/s (smtplib loop, one connection)"
    )
    if report["naive_recipients"]:
        print(
            f"naive (ORM per recipient, premailer per message, EmailMessage + smtplib):"
            f" first {report['naive_recipients']:,} recipients only, since it is many times slower"
            f" — {report['naive_msgs_per_s']:,.1f} msgs/s, peak RSS {report['naive_peak_rss_mb']} MB"
        )
        print(f"speed-up: {report['speedup']}x")
    verdict = {key: {True: "met", False: "NOT met"}.get(value) for key, value in report["targets_met"].items()}
    targets = [
        f"{TARGETS['msgs_per_s']} msgs/s with one worker: {verdict['msgs_per_s']}" if verdict["msgs_per_s"] else None,
        f"{TARGETS['speedup']}x naive: {verdict['speedup']}" if verdict["speedup"] else None,
        f"peak RSS <= {TARGETS['peak_rss_mb']} MB: {verdict['peak_rss_mb']}",
    ]
    print("targets: " + "; ".join(t for t in targets if t))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000, help="contacts in the run (default %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes (default %(default)s)")
    parser.add_argument("--naive", type=int, help=f"recipients the naive way sends (default min(N, {NAIVE_DEFAULT}))")
    parser.add_argument("--database-url", help="an empty database (default: a fresh SQLite file in a temporary folder)")
    parser.add_argument("--keep", type=Path, help="keep the database in this folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--sink",
        choices=("auto", "postfix", "aiosmtpd"),
        default="auto",
        help="the SMTP sink: Postfix's smtp-sink (C, fast) when found, else aiosmtpd (default %(default)s)",
    )
    options = parser.parse_args(argv)
    if options.recipients < 1 or options.workers < 1:
        parser.error("--recipients and --workers must be at least 1")

    say = (lambda *a: None) if options.json else (lambda *a: print(*a, flush=True))
    work = options.keep or Path(tempfile.mkdtemp(prefix="patron-bench-send-"))
    work.mkdir(parents=True, exist_ok=True)
    database = work / "send.db"
    if not options.database_url:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
    try:
        report = measure(options, options.database_url or f"sqlite:///{database}", work, say)
    finally:
        if not options.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    if options.json:
        print(json.dumps(report))
    else:
        print_report(report)
    if not all(report["checks"].values()):
        failed = ", ".join(name for name, ok in report["checks"].items() if not ok)
        print(f"check failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, kind, params, out = sys.argv
        Path(out).write_text(json.dumps(CHILDREN[kind](json.loads(params))))
    else:
        sys.exit(main())
