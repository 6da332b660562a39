"""A batch: claim ledger rows, assemble each recipient's message, send it, record what happened.

The worker's main thread assembles (select, render, build) while a sender
thread talks to the mail server, so the wait for each SMTP reply overlaps
with building the next message. Rows are claimed (pending -> sending, and
committed) before anything is assembled, so nothing reaches the wire without
its ledger row. Whatever stops a batch early, rows that were never handed to
the sender go back to pending: only a message in the sender's hands when the
process dies can end up "unknown".
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from queue import Queue

from campaigns.models import Run
from campaigns.pipeline import Assembly, Profile, Stats, load_profiles
from campaigns.runs import halt
from content.rendering import RenderError
from delivery import ledger
from delivery.message import HeaderError
from delivery.transports.base import DeliveryError, PermanentError, TransientError, deliver
from segments.db import utcnow

CLAIM_SIZE = 100  # rows claimed at once per worker (at most this many can become "unknown")
SEND_AHEAD = 16  # messages built and waiting for the sender thread
PAUSE_AFTER_TRANSIENT = 5  # consecutive temporary refusals that pause the run: the server is unwell


@dataclass
class _Job:
    message: bytes
    outcome: ledger.Outcome  # what to record once the server accepts it


class _Sender(threading.Thread):
    """Sends built messages one after another on the worker's transport (which is not shared)."""

    def __init__(self, transport, sender: str, seconds: dict[str, float], sleep):
        super().__init__(name="patron-sender", daemon=True)
        self.transport, self.sender, self.seconds, self.sleep = transport, sender, seconds, sleep
        self.queue: Queue[_Job | None] = Queue(maxsize=SEND_AHEAD)
        self.outcomes: list[ledger.Outcome] = []
        self.stopped: str | None = None  # why sending stopped: the transport is down or keeps refusing
        self._streak = 0

    def run(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.stopped:
                self.outcomes.append(_untried(job.outcome, self.stopped))
            else:
                started = time.perf_counter()
                self.outcomes.append(self._send(job))
                self.seconds["send"] += time.perf_counter() - started
            self.queue.task_done()
        self.queue.task_done()

    def _send(self, job: _Job) -> ledger.Outcome:
        done = job.outcome
        try:
            deliver(self.transport, self.sender, done.email, job.message, sleep=self.sleep)
        except PermanentError as exc:
            self._streak = 0
            return ledger.Outcome(done.delivery_id, "failed", f"refused: {exc}", email=done.email)
        except TransientError as exc:
            self._streak += 1
            if self._streak >= PAUSE_AFTER_TRANSIENT:
                self.stopped = f"the server keeps refusing for now: {exc}"
            return _untried(done, f"temporary failure, will retry: {exc}")
        except DeliveryError as exc:
            self.stopped = f"transport unusable: {exc}"  # a rejected login, a TLS failure, an unwritable outbox
            return _untried(done, self.stopped)
        except Exception as exc:  # noqa: BLE001  (a bug: nobody can tell whether it went out)
            return ledger.Outcome(done.delivery_id, "unknown", f"unexpected error while sending: {exc!r}")
        self._streak = 0
        done.sent_at = utcnow()
        return done

    def drain(self) -> list[ledger.Outcome]:
        """Wait until every message handed over has been dealt with; their outcomes."""
        self.queue.join()
        outcomes, self.outcomes = self.outcomes, []
        return outcomes

    def close(self) -> None:
        self.queue.put(None)
        self.join()


def send_batch(
    assembly: Assembly,
    session_factory,
    transport,
    first: int,
    last: int,
    *,
    parent_pid: int | None = None,
    sleep=time.sleep,
) -> Stats:
    """Claim, assemble and send the run's pending rows between ledger ids ``first`` and ``last``."""
    stats = Stats()
    seconds = stats.seconds
    sender = _Sender(transport, assembly.sender, seconds, sleep)
    sender.start()
    try:
        while True:
            started = time.perf_counter()
            with session_factory() as session:
                if session.get(Run, assembly.run_id).state != "sending":
                    break
                # End the read before writing: SQLite cannot turn a read that another
                # worker's commit made stale into a write.
                session.commit()
                now = utcnow()
                claimed = ledger.claim(session, assembly.run_id, first, last, CLAIM_SIZE, now)
                session.commit()
                if not claimed:
                    break
                profiles = load_profiles(session, [contact for _, contact in claimed], assembly, now)
            assembly.set_clock(now)
            seconds["db"] += time.perf_counter() - started

            outcomes: list[ledger.Outcome] = []
            orphaned = False
            for delivery_id, contact_id in claimed:
                if parent_pid is not None and os.getppid() != parent_pid:
                    orphaned = True  # whoever started us is gone: stop handing out messages
                    break
                if sender.stopped:
                    break
                result = _assemble(assembly, delivery_id, contact_id, profiles.get(contact_id), seconds)
                if isinstance(result, _Job):
                    sender.queue.put(result)
                else:
                    outcomes.append(result)
            outcomes.extend(sender.drain())
            handled = {o.delivery_id for o in outcomes}
            outcomes.extend(
                ledger.Outcome(d, "pending", "not tried: the batch stopped") for d, _ in claimed if d not in handled
            )
            for outcome in outcomes:
                stats.outcomes[outcome.status] += 1

            started = time.perf_counter()
            with session_factory() as session:
                ledger.record(session, outcomes)
                if sender.stopped:
                    halt(session, assembly.run_id, sender.stopped)
                session.execute(
                    Run.__table__.update().where(Run.__table__.c.id == assembly.run_id).values(heartbeat_at=utcnow())
                )
                session.commit()
            seconds["db"] += time.perf_counter() - started
            if orphaned or sender.stopped:
                break
    finally:
        sender.close()
    return stats


def pause_run(session_factory, run_id: int, reason: str) -> None:
    """Pause a run that cannot go on for now, saying why (shown by ``patron campaigns status``)."""
    with session_factory() as session:
        halt(session, run_id, reason)
        session.commit()


def _assemble(assembly: Assembly, delivery_id: int, contact_id: int, profile: Profile | None, seconds):
    """The recipient's message ready to send, or the outcome that says why there is none."""
    if profile is None:
        return ledger.Outcome(delivery_id, "skipped", "contact no longer exists")
    email = profile.contact["email"]
    if profile.skip:
        return ledger.Outcome(delivery_id, "skipped", profile.skip, email=email)
    try:
        t0 = time.perf_counter()
        choices = assembly.choose(profile)
        t1 = time.perf_counter()
        rendered = assembly.render(delivery_id, profile, choices)
        t2 = time.perf_counter()
        message, message_id = assembly.build(delivery_id, profile, rendered)
        seconds["select"] += t1 - t0
        seconds["render"] += t2 - t1
        seconds["build"] += time.perf_counter() - t2
    except (RenderError, HeaderError) as exc:
        return ledger.Outcome(delivery_id, "failed", f"{type(exc).__name__}: {exc}", email=email)
    except Exception as exc:  # noqa: BLE001  (nothing was sent: fail this recipient, not the run)
        return ledger.Outcome(delivery_id, "failed", f"could not build the message: {exc!r}", email=email)
    chosen = [c.candidate for c in rendered.choices.values() if c.candidate is not None]
    outcome = ledger.Outcome(
        delivery_id,
        "sent",
        email=email,
        message_id=message_id,
        locale=rendered.language,
        blocks=[c.version_id for c in chosen],
        block_ids=[c.block_id for c in chosen],
        contact_id=contact_id,
    )
    return _Job(message, outcome)


def _untried(outcome: ledger.Outcome, reason: str) -> ledger.Outcome:
    """Back to pending: the server did not take it, so sending it later cannot make a duplicate."""
    return ledger.Outcome(outcome.delivery_id, "pending", reason, email=outcome.email)
