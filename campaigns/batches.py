"""A batch: claim ledger rows, assemble each recipient's message, send it, record what happened.

Three threads per worker. The main thread claims rows (pending -> sending,
committed before anything is assembled) and assembles each message (select,
render, build); a sender thread talks to the mail server, so the wait for each
SMTP reply overlaps with building the next message; a recorder thread writes
each outcome to the ledger as soon as it is known, committing whatever has
arrived meanwhile as one group (so under load a commit covers many messages,
and at rest one).

Before a message goes to the sender, its row gets its Message-ID, committed
(``ledger.mark_handed``): a row still without one was never handed over and
goes back to pending whatever stops the batch, even a SIGKILL (recovery tells
them apart). At most ``SEND_AHEAD`` messages are handed over and not yet
recorded at any moment, so that is all a crash can leave ``unknown``, per
worker. A message whose outcome the server left ambiguous (the connection lost
after the final "." of DATA) is recorded ``unknown`` at once and never retried.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue

from campaigns.models import Run
from campaigns.pipeline import Assembly, Profile, Stats, load_profiles
from campaigns.runs import halt
from content.rendering import RenderError
from delivery import ledger
from delivery.bounces import record_refusals
from delivery.message import HeaderError
from delivery.transports.base import AmbiguousError, DeliveryError, PermanentError, TransientError, deliver
from segments.db import utcnow

CLAIM_SIZE = 100  # rows claimed and profiled at once per worker
SEND_AHEAD = 10  # messages handed to the sender and not yet recorded: the most a crash can leave "unknown"
HAND_OVER = 4  # messages built before their Message-IDs are committed together (fewer when the sender waits)
RECORD_GROUP = 4  # outcomes a commit waits for, at most RECORD_WAIT seconds after the first
RECORD_WAIT = 0.005
RECORD_MAX = 500  # outcomes one commit writes at most
# Consecutive messages the server refused for now or left ambiguous that pause the run: it is unwell,
# and each ambiguous one is a message of unknown fate.
PAUSE_AFTER_TRANSIENT = 5


@dataclass
class _Job:
    message: bytes
    outcome: ledger.Outcome  # what to record once the server accepts it
    envelope: str  # MAIL FROM: the delivery's own VERP address, where its bounce comes back


class _Recorder(threading.Thread):
    """Writes outcomes to the ledger as they come, one commit per group of whatever is waiting."""

    def __init__(self, session_factory, stats: Stats, slots: threading.Semaphore):
        super().__init__(name="patron-recorder", daemon=True)
        self.session_factory, self.stats, self.slots = session_factory, stats, slots
        self.queue: SimpleQueue[tuple[ledger.Outcome, bool] | None] = SimpleQueue()
        self.failure: Exception | None = None  # why outcomes can no longer be written
        self.seconds = 0.0

    def put(self, outcome: ledger.Outcome, handed: bool = False) -> None:
        """Record ``outcome``; ``handed``: of a message the sender had, whose slot frees once it is written."""
        self.queue.put((outcome, handed))

    def run(self) -> None:
        with self.session_factory() as session:
            closing = False
            while not closing:
                group = [self.queue.get()]
                deadline = time.monotonic() + RECORD_WAIT
                while group[-1] is not None and len(group) < RECORD_MAX:
                    if len(group) >= RECORD_GROUP and self.queue.empty():
                        break
                    try:  # a few outcomes per commit: one each would cost a commit per message
                        group.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                    except Empty:
                        break
                closing = group[-1] is None
                items = [item for item in group if item is not None]
                if items and self.failure is None:
                    self._write(session, [outcome for outcome, _ in items])
                for outcome, handed in items:
                    self.stats.outcomes[outcome.status] += 1
                    if handed:
                        self.slots.release()

    def _write(self, session, outcomes: list[ledger.Outcome]) -> None:
        started = time.perf_counter()
        try:
            ledger.record(session, outcomes)
            refusals = [(o.delivery_id, o.reason) for o in outcomes if o.refused]
            if refusals:  # a 5xx at send time is a hard bounce: the address is suppressed with the row
                record_refusals(session, refusals)
            session.commit()
        except Exception as exc:  # noqa: BLE001  (the main thread stops the batch and says why)
            session.rollback()
            self.failure = exc
        self.seconds += time.perf_counter() - started

    def close(self) -> None:
        self.queue.put(None)
        self.join()
        self.stats.seconds["db"] += self.seconds


class _Sender(threading.Thread):
    """Sends handed-over messages one after another on the worker's transport (which is not shared)."""

    def __init__(self, transport, seconds: dict[str, float], sleep, recorder: _Recorder):
        super().__init__(name="patron-sender", daemon=True)
        self.transport, self.sleep, self.recorder = transport, sleep, recorder
        self.seconds = 0.0
        self._stats_seconds = seconds
        self.queue: SimpleQueue[_Job | None] = SimpleQueue()  # bounded by the recorder's slots
        self.stopped: str | None = None  # why sending stopped: the transport is down or keeps refusing
        self._streak = 0

    def run(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.recorder.failure is not None and not self.stopped:
                self.stopped = f"outcomes cannot be written to the ledger: {self.recorder.failure!r}"
            if self.stopped:
                self.recorder.put(_untried(job.outcome, self.stopped), handed=True)
                continue
            started = time.perf_counter()
            outcome = self._send(job)
            self.seconds += time.perf_counter() - started
            self.recorder.put(outcome, handed=True)

    def _send(self, job: _Job) -> ledger.Outcome:
        done = job.outcome
        try:
            deliver(self.transport, job.envelope, done.email, job.message, sleep=self.sleep)
        except PermanentError as exc:
            self._streak = 0
            refused = exc.code is not None and 500 <= exc.code < 600  # the server's own 5xx, not our own check
            return ledger.Outcome(done.delivery_id, "failed", f"refused: {exc}", email=done.email, refused=refused)
        except TransientError as exc:
            self._unwell(f"the server keeps refusing for now: {exc}")
            return _untried(done, f"temporary failure, will retry: {exc}")
        except AmbiguousError as exc:
            self._unwell(f"the server keeps leaving messages of unknown fate: {exc}")
            return _unknown(done, f"unknown: {exc}; not sent again unless asked (resend-unknown)")
        except DeliveryError as exc:
            self.stopped = f"transport unusable: {exc}"  # a rejected login, a TLS failure, an unwritable outbox
            return _untried(done, self.stopped)
        except Exception as exc:  # noqa: BLE001  (a bug: nobody can tell whether it went out)
            return _unknown(done, f"unexpected error while sending: {exc!r}")
        self._streak = 0
        done.sent_at = utcnow()
        return done

    def _unwell(self, why: str) -> None:
        self._streak += 1
        if self._streak >= PAUSE_AFTER_TRANSIENT:
            self.stopped = why

    def close(self) -> None:
        """Send (or, once stopped, give back) whatever was handed over, then end."""
        self.queue.put(None)
        self.join()
        self._stats_seconds["send"] += self.seconds


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
    """Claim, assemble and send the run's pending rows between ledger ids ``first`` and ``last``.

    Pauses the run, saying why, when the transport is unusable or the server keeps refusing. Whatever
    stops the batch, even an exception (re-raised), claimed rows never handed to the sender go back to
    pending; the handed ones are sent and recorded before it returns.
    """
    batch = _Batch(assembly, first, last, parent_pid, Stats())
    batch.recorder = _Recorder(session_factory, batch.stats, batch.slots)
    batch.sender = _Sender(transport, batch.stats.seconds, sleep, batch.recorder)
    batch.recorder.start()
    batch.sender.start()
    try:
        with session_factory() as session:
            while batch.claim_and_send(session):
                pass
    finally:
        batch.sender.close()
        batch.recorder.close()
        with session_factory() as session:  # the rows of a batch that stopped early
            ledger.release(session, [row for row in batch.claimed if row not in batch.given])
            session.commit()
    if batch.sender.stopped:
        pause_run(session_factory, assembly.run_id, batch.sender.stopped)
    elif batch.recorder.failure is not None:
        raise batch.recorder.failure
    return batch.stats


@dataclass
class _Batch:
    """One batch's state, as its main thread sees it."""

    assembly: Assembly
    first: int
    last: int
    parent_pid: int | None
    stats: Stats
    slots: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(SEND_AHEAD))
    recorder: _Recorder | None = None
    sender: _Sender | None = None
    claimed: list[int] = field(default_factory=list)  # the current claim's ledger ids
    given: set[int] = field(default_factory=set)  # those of them given to the sender (perhaps, if interrupted)
    ready: list[_Job] = field(default_factory=list)  # built, each holding a slot, not yet handed over

    def stopping(self) -> bool:
        return bool(self.sender.stopped or self.recorder.failure is not None)

    def claim_and_send(self, session) -> bool:
        """Claim the next rows and hand each message over, their Message-IDs committed first; whether to go on."""
        assembly, seconds = self.assembly, self.stats.seconds
        if self.stopping():
            return False
        started = time.perf_counter()
        if session.get(Run, assembly.run_id).state != "sending":
            session.commit()
            return False
        # End the read before writing: SQLite cannot turn a read that another worker's commit made stale into a write.
        session.commit()
        now = utcnow()
        rows = ledger.claim(session, assembly.run_id, self.first, self.last, CLAIM_SIZE, now)
        self.claimed, self.given = [delivery_id for delivery_id, _ in rows], set()  # known before they are ours
        session.commit()
        if not rows:
            return False
        profiles = load_profiles(session, [contact for _, contact in rows], assembly, now)
        session.commit()
        assembly.set_clock(now)
        seconds["db"] += time.perf_counter() - started

        for delivery_id, contact_id in rows:
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                break  # whoever started us is gone: stop handing out messages
            if self.stopping():
                break
            result = _assemble(assembly, delivery_id, contact_id, profiles.get(contact_id), seconds)
            if not isinstance(result, _Job):
                self.recorder.put(result)
                continue
            if not self.slots.acquire(blocking=False):
                self.hand_over(session)  # what is built goes first, then wait for the sender to catch up
                self.slots.acquire()
            self.ready.append(result)
            if len(self.ready) >= HAND_OVER:
                self.hand_over(session)
        else:
            self.hand_over(session)
            session.execute(
                Run.__table__.update().where(Run.__table__.c.id == assembly.run_id).values(heartbeat_at=utcnow())
            )
            session.commit()
            return True
        self.ready.clear()  # stopped early: send_batch gives back what was never handed over
        return False

    def hand_over(self, session) -> None:
        """Commit the built messages' Message-IDs, then give them to the sender."""
        if not self.ready:
            return
        started = time.perf_counter()
        ledger.mark_handed(session, [(job.outcome.delivery_id, job.outcome.message_id) for job in self.ready])
        session.commit()  # before the first of them can reach the wire
        self.stats.seconds["db"] += time.perf_counter() - started
        for job in self.ready:
            self.given.add(job.outcome.delivery_id)  # first: if a Ctrl-C falls in between, it is never released
            self.sender.queue.put(job)
        self.ready.clear()


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
    return _Job(message, outcome, assembly.signer.return_path(delivery_id, assembly.domain))


def _unknown(outcome: ledger.Outcome, reason: str) -> ledger.Outcome:
    """Unknown: the server may have it. Its Message-ID stays, for finding it in the server's logs."""
    return ledger.Outcome(outcome.delivery_id, "unknown", reason, email=outcome.email, message_id=outcome.message_id)


def _untried(outcome: ledger.Outcome, reason: str) -> ledger.Outcome:
    """Back to pending: the server did not take it, so sending it later cannot make a duplicate."""
    return ledger.Outcome(outcome.delivery_id, "pending", reason, email=outcome.email)
