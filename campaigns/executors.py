"""Executors: who runs a run's batches. The local pool is the embedded default.

A batch task carries ids only, ``send_batch_task(run_id, first, last)``, and
finds everything else in its worker: the database, the transport, the signer,
the compiled content. So the same task runs in this process, in a local pool of
processes, or (later) on Celery workers unchanged. ``execute_run`` drives a
run from the machine that started it: it plans the ledger, hands out batches
and marks the run finished when no row is pending or sending.

Whatever stops a run's batches (content that does not compile, an error
escaping a batch, a worker process that dies, a database fault) pauses the
run with the reason in ``run.note``, for ``patron campaigns status`` to show:
a run is never left ``sending`` with nobody working on it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from jinja2 import TemplateError

from campaigns import runs
from campaigns.batches import pause_run, send_batch
from campaigns.models import Run
from campaigns.pipeline import Assembly, Stats
from content.inlining import SharedInliner
from delivery import ledger
from delivery.tracking import LinkSigner
from delivery.transports import open_transport, redact_url
from delivery.transports.base import DeliveryError
from segments.db import make_engine, make_session_factory

BATCH_SIZE = 500  # ledger rows per task
# A sender reads a few pages per batch, never scans: a small SQLite page cache
# keeps its memory flat however big the audience (32 MB per connection is for imports).
SEND_CACHE_KIB = 4_000
PARENT_POLL = 1.0  # seconds between a pool worker's checks that its parent still lives (where prctl is missing)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
RETRY_PASSES = 5  # passes over rows a server refused for now, before the run pauses
NOTE_CHARS = 500  # of an error's first line, in the run's note
_FROZEN = "; the run's content is frozen: cancel it, fix the pack or the campaign, and send again"


class ContentProblems(Exception):
    """The run's frozen templates would fail every recipient: the run pauses before claiming anyone."""


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to send, handed down by whoever reads the settings."""

    database_url: str
    delivery_url: str
    secret_key: str
    base_url: str
    instance_path: str
    half_life_days: float
    workers: int = 1
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_key_path: str | None = None
    bounce_domain: str | None = None  # VERP: where bounces come back; None: the sender's domain


class Worker:
    """One process's database, transport and compiled runs."""

    def __init__(self, config: WorkerConfig, parent_pid: int | None = None, engine=None):
        self.config = config
        self.parent_pid = parent_pid
        self._own_engine = engine is None
        self.engine = engine or make_engine(config.database_url, sqlite_cache_kib=SEND_CACHE_KIB)
        self.sessions = make_session_factory(self.engine)
        self.signer = LinkSigner(config.secret_key, config.base_url, bounce_domain=config.bounce_domain)
        self.inliner = SharedInliner(self.sessions)
        self.sign = None
        if config.dkim_key_path:
            from delivery.dkim import DkimSigner

            signer = DkimSigner.from_file(
                selector=config.dkim_selector, domain=config.dkim_domain, path=config.dkim_key_path
            )
            self.sign = signer.sign
        self._transport = None
        self._assemblies: dict[int, Assembly] = {}
        self._halted: set[int] = set()  # runs this worker paused: their remaining batches are not started
        self._assembly_session = self.sessions()

    @property
    def transport(self):
        if self._transport is None:
            self._transport = open_transport(
                self.config.delivery_url, instance_path=Path(self.config.instance_path), workers=self.config.workers
            )
        return self._transport

    def assembly(self, run_id: int) -> Assembly:
        """The run's assembly, its templates checked and its layout compiled; ContentProblems if they fail."""
        if run_id not in self._assemblies:
            session = self._assembly_session
            run = session.get(Run, run_id)
            if run is None:
                raise LookupError(f"there is no run {run_id}")
            problems = runs.content_problems(session, run.campaign.definition, run.content)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise ContentProblems(f"{problems[0]}{more}{_FROZEN}")
            try:
                assembly = Assembly(
                    session,
                    run,
                    signer=self.signer,
                    inliner=self.inliner,
                    half_life_days=self.config.half_life_days,
                    sign=self.sign,
                )
                assembly.layout()  # compiled here, where a failure stops the run rather than failing each recipient
            except TemplateError as exc:
                raise ContentProblems(f"the run's templates do not compile: {describe(exc)}{_FROZEN}") from None
            self._assemblies[run_id] = assembly
        return self._assemblies[run_id]

    def send_batch(self, run_id: int, first: int, last: int) -> Stats:
        try:
            transport = self.transport
        except (DeliveryError, ValueError, OSError) as exc:
            pause_run(self.sessions, run_id, f"cannot deliver through {redact_url(self.config.delivery_url)}: {exc}")
            return Stats()
        if run_id in self._halted:
            return Stats()
        try:
            assembly = self.assembly(run_id)
            return send_batch(assembly, self.sessions, transport, first, last, parent_pid=self.parent_pid)
        except ContentProblems as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001  (whatever it is, the run must not look as if it were sending)
            reason = f"a worker stopped on an error: {describe(exc)}; resume once it is fixed"
        self._halted.add(run_id)
        self._assembly_session.rollback()
        _halt(self.sessions, run_id, reason)
        return Stats()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._assembly_session.close()
        if self._own_engine:
            self.engine.dispose()


_worker: Worker | None = None


def configure_worker(config: WorkerConfig, parent_pid: int | None = None, engine=None) -> None:
    """Set up this process as a worker (a pool's initializer; a Celery worker's start-up hook).

    With ``parent_pid`` (a local pool's worker), the process dies with that parent: see :func:`die_with_parent`.
    """
    global _worker
    if parent_pid is not None:
        die_with_parent(parent_pid)
    _worker = Worker(config, parent_pid, engine)


def die_with_parent(parent_pid: int, poll: float = PARENT_POLL, *, prctl: bool = True) -> None:
    """SIGKILL this process when its parent ``parent_pid`` dies, so a pool never outlives whoever drives it.

    Linux delivers the signal itself (prctl PR_SET_PDEATHSIG, prctl(2)); elsewhere, and as a fallback, a
    daemon thread checks ``os.getppid()`` every ``poll`` seconds. Either way it is a crash: the rows the
    worker had handed to its transport become ``unknown`` on resume, the rest of its claim pending.
    ``prctl=False`` leaves the watchdog alone, as on other systems.
    """
    if prctl and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no usable libc: the watchdog below still does it
    threading.Thread(target=_watch_parent, args=(parent_pid, poll), name="patron-parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int, poll: float) -> None:
    # Also covers a parent that died before prctl took effect: this process was reparented already.
    while os.getppid() == parent_pid:
        time.sleep(poll)
    os.kill(os.getpid(), signal.SIGKILL)


def send_batch_task(run_id: int, first: int, last: int) -> dict:
    """The batch task: ids in, plain counts and timings out."""
    inlined_before = _worker.inliner.calls
    stats = _worker.send_batch(run_id, first, last)
    return {
        "seconds": dict(stats.seconds),
        "outcomes": dict(stats.outcomes),
        "premailer_calls": _worker.inliner.calls - inlined_before,
    }


def describe(exc: BaseException) -> str:
    """An error in one line for a run's note: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= NOTE_CHARS else text[: NOTE_CHARS - 1] + "…"


def _merge(stats: Stats, result: dict) -> int:
    stats.add(Stats(seconds=result["seconds"], outcomes=result["outcomes"], premailer_calls=result["premailer_calls"]))
    return sum(result["outcomes"].values())


def execute_run(
    config: WorkerConfig,
    run_id: int,
    *,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> Stats:
    """Plan (if needed) and send the run with ``config.workers`` local workers; the summed stats.

    A fault that stops the run pauses it with the reason (RunError only if even that cannot be written).
    """
    engine = make_engine(config.database_url, sqlite_cache_kib=SEND_CACHE_KIB)
    sessions = make_session_factory(engine)
    stats = Stats()
    try:
        _drive(config, engine, sessions, run_id, stats, progress, batch_size)
    except BrokenProcessPool as exc:
        _halt(sessions, run_id, f"a worker process died ({describe(exc)}); resume carries on")
    except KeyboardInterrupt:
        _halt(sessions, run_id, "interrupted; resume carries on")
        raise
    except Exception as exc:  # noqa: BLE001  (a run is never left "sending" with nobody working on it)
        _halt(sessions, run_id, f"the send stopped on an error: {describe(exc)}; resume once it is fixed")
    finally:
        engine.dispose()
    return stats


def _drive(config: WorkerConfig, engine, sessions, run_id: int, stats: Stats, progress, batch_size: int) -> None:
    with sessions() as session:
        run = session.get(Run, run_id)
        runs.claim_ownership(session, run)
        session.commit()
    started = time.perf_counter()
    runs.plan_run(sessions, run_id, half_life_days=config.half_life_days)
    stats.seconds["segment"] += time.perf_counter() - started
    with sessions() as session:
        total = ledger.counts(session, run_id)
        done = total["total"] - total["pending"]
    if progress:
        progress(done, total["total"])
    pool = _LocalPool(config, engine)
    try:
        for _ in range(RETRY_PASSES):
            with sessions() as session:
                ranges = list(ledger.pending_ranges(session, run_id, batch_size))
                state = session.get(Run, run_id).state
            if not ranges or state != "sending":
                break
            for result in pool.run(run_id, ranges):
                done += _merge(stats, result)
                if progress:
                    progress(done, total["total"])
    finally:
        pool.close()
    with sessions() as session:
        run = session.get(Run, run_id)
        if not runs.finish_if_done(session, run) and run.state == "sending":
            run.state, run.note = "paused", "paused: some messages keep failing temporarily; resume to retry"
        session.commit()


def _halt(sessions, run_id: int, reason: str) -> None:
    """Pause the run with ``reason``; RunError (one line) if the database will not take even that."""
    try:
        pause_run(sessions, run_id, reason)
    except Exception as exc:  # noqa: BLE001
        raise runs.RunError(f"run {run_id} stopped ({reason}) and could not be paused: {describe(exc)}") from None


class _LocalPool:
    """Batches in this process (one worker) or in a pool of worker processes."""

    def __init__(self, config: WorkerConfig, engine):
        self.config = config
        self.executor = None
        if config.workers > 1:
            self.executor = ProcessPoolExecutor(
                max_workers=config.workers,
                mp_context=get_context("spawn"),
                initializer=configure_worker,
                initargs=(config, os.getpid()),
            )
        else:
            configure_worker(config, engine=engine)  # one process: one engine, one set of connections

    def run(self, run_id: int, ranges: list[tuple[int, int]]):
        """Each batch's result as it completes, with a bounded number in flight."""
        if self.executor is None:
            for first, last in ranges:
                yield send_batch_task(run_id, first, last)
            return
        pending = set()
        todo = iter(ranges)
        for first, last in todo:
            pending.add(self.executor.submit(send_batch_task, run_id, first, last))
            if len(pending) >= 2 * self.config.workers:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in finished)
        for future in pending:
            yield future.result()

    def close(self) -> None:
        global _worker
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
        elif _worker is not None:
            _worker.close()
            _worker = None
