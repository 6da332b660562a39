"""The click journal: a click is answered as soon as it is appended to a local file, and recorded in batches.

Recording a click in the database costs four statements and a commit; appending one line to a file costs
one ``write(2)``. So the click endpoint appends (``ClickJournal.append``) and answers its 302, and a
``Drainer`` thread in the same process reads the journal and records the clicks a few hundred at a time
(``delivery.responses.record_clicks``), typically within ``Drainer.interval`` seconds. See
docs/responses.md, "The click journal".

Layout of the directory (``PATRON_CLICK_JOURNAL``, default ``<instance>/journal``):

- ``clicks-<segment>.jsonl``: a segment, written by one process only, which holds an exclusive
  ``flock(2)`` on it while it writes (taken before the segment gets its name, so a drainer that can
  lock a segment knows its writer has closed it or died). ``<segment>`` is the UTC start time, the
  process id and 8 random hex digits, so two machines sharing the directory never collide.
- One record per line, a JSON array ``[delivery_id, link_id, unix_time, user_agent]``, written with
  one ``write(2)`` on an ``O_APPEND`` descriptor: threads of the process never interleave, and a
  process killed mid-write leaves at most one unterminated last line.
- ``clicks-<segment>.jsonl.done``: the byte offset up to which the segment's records are committed,
  replaced atomically (write, then rename) after each committed batch.

Exactly once: a record's key is ``<segment>:<byte offset>``, which ``record_clicks`` stores as the
response's ``external_id``, unique per kind. A batch committed but not yet marked done (a crash between
the two) is read again and records nothing twice; a batch not committed is read again and recorded.

A segment is closed when it reaches ``max_segment_bytes``, when its process ends, or when the process is
killed (the kernel drops the lock). Any drainer that can take a closed segment's lock drains it to its
end and deletes it, so the clicks of a killed worker are recorded by its successor. What stays lost is
what the kernel itself lost: clicks appended in the last moments before a power cut, as with the
database's own ``synchronous=NORMAL``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from segments.db import first_line

log = logging.getLogger(__name__)

PREFIX = "clicks-"
SUFFIX = ".jsonl"
DONE = ".done"
MAX_SEGMENT_BYTES = 64 * 1024 * 1024
MAX_RECORD_BYTES = 4096  # well above five fields with a 255-character user agent
BATCH = 500  # records per transaction
INTERVAL = 0.2  # seconds between two looks at the journal
MAX_BACKOFF = 5.0  # seconds between two tries while the database refuses a batch


@dataclass(frozen=True)
class ClickRecord:
    """One journalled click: its key (``<segment>:<offset>``), the ids its token signed, when, and the user agent.

    Not the client's address: no rule about clicks reads it (``delivery.machine``), so it is not kept."""

    key: str
    delivery_id: int
    link_id: int
    occurred_at: datetime
    user_agent: str | None = None


class JournalError(OSError):
    """The journal cannot take a click (a missing or read-only directory, a full disk)."""


class ClickJournal:
    """The appending side: one open segment per process, shared by its threads.

    ``append`` raises JournalError when the write fails; the caller records the click another way or
    refuses it, never answers as if it were kept.
    """

    def __init__(self, directory: str | os.PathLike, *, max_segment_bytes: int = MAX_SEGMENT_BYTES):
        self.directory = Path(directory)
        self.max_segment_bytes = max_segment_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        _journals.add(self)  # closed in a forked child at once, even one that never appends

    @property
    def live_segment(self) -> Path | None:
        """The segment this process appends to now, if any."""
        return self._path

    def append(self, delivery_id: int, link_id: int, at: datetime, user_agent: str | None) -> str:
        """Append one click; its key. ``at`` is timezone-aware. Raises JournalError."""
        line = json.dumps([delivery_id, link_id, round(at.timestamp(), 6), user_agent], separators=(",", ":")).encode()
        if len(line) >= MAX_RECORD_BYTES:
            raise JournalError(f"a click record of {len(line)} bytes; the limit is {MAX_RECORD_BYTES}")
        with self._lock:
            try:
                self._check_still_listed()
                fd = self._open()
                offset = self._size
                written = os.write(fd, line + b"\n")
            except OSError as exc:
                self._close()
                raise JournalError(f"{self.directory}: {exc.strerror or exc}") from exc
            if written != len(line) + 1:  # a full disk mid-line: the partial line is left unterminated
                self._close()
                raise JournalError(f"{self.directory}: short write ({written} of {len(line) + 1} bytes)")
            self._size += written
            key = f"{segment_name(self._path)}:{offset}"
            if self._size >= self.max_segment_bytes:
                self._close()  # the next click opens a new segment; drainers take this one
            return key

    def close(self) -> None:
        """Close the open segment (its lock goes with it); the next append opens a new one."""
        with self._lock:
            self._close()

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = self.directory / f"{PREFIX}{stamp}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        # Created under a name drainers do not list, locked, then renamed: a drainer that can lock a listed
        # segment knows its writer is gone (else it could take a new segment in the moment before the
        # writer locks it, find it empty and delete it under the writer).
        hidden = path.with_name("." + path.name)
        fd = os.open(hidden, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(hidden, path)
        except OSError:
            os.close(fd)
            hidden.unlink(missing_ok=True)
            raise
        self._fd, self._path, self._size = fd, path, 0
        return fd

    def _check_still_listed(self) -> None:
        """Close the open segment when its name no longer leads to it: deleted, moved, its directory
        replaced or made unreadable. Writes to the open descriptor would still succeed, into a file no
        drainer can find; the next open makes a new segment where drainers look, or fails (JournalError)
        and the click is recorded another way. One stat(2) per click."""
        if self._fd is None:
            return
        try:
            named, open_ = os.stat(self._path), os.fstat(self._fd)
            listed = (named.st_dev, named.st_ino) == (open_.st_dev, open_.st_ino) and open_.st_nlink > 0
        except OSError:
            listed = False
        if not listed:
            log.error(
                "click journal %s: segment %s is gone from the directory; opening a new one",
                self.directory,
                self._path.name,
            )
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd, self._path, self._size = None, None, 0


_journals: weakref.WeakSet[ClickJournal] = weakref.WeakSet()


def _close_in_child() -> None:
    """In a forked child, close every journal's inherited segment descriptor. It shares the parent's lock,
    which would otherwise stay held for the child's whole life, so a dead parent's clicks would wait for
    the child; the child's first append opens a segment of its own."""
    for journal in list(_journals):
        journal._lock = threading.Lock()  # a lock held by a parent's thread at the fork is never released here
        journal._close()


os.register_at_fork(after_in_child=_close_in_child)


def segment_name(path: Path) -> str:
    """``clicks-<segment>.jsonl`` → ``<segment>``."""
    return path.name[len(PREFIX) : -len(SUFFIX)]


def segments(directory: Path) -> list[Path]:
    """The journal's segments, oldest first to the second (their names start with the UTC second they were
    opened); segments opened in the same second come in no particular order."""
    try:
        return sorted(p for p in directory.iterdir() if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX))
    except FileNotFoundError:
        return []


def done_offset(path: Path) -> int:
    """The offset up to which ``path``'s records are committed (0 when none are, or the mark is unreadable)."""
    try:
        return max(0, int(Path(str(path) + DONE).read_text().strip() or 0))
    except (OSError, ValueError):
        return 0


def mark_done(path: Path, offset: int) -> None:
    """Record that ``path``'s records up to ``offset`` are committed (atomically: a temporary file, then rename)."""
    mark = Path(str(path) + DONE)
    temporary = mark.with_name(mark.name + ".tmp")
    temporary.write_text(str(offset))
    os.replace(temporary, mark)


@dataclass(frozen=True)
class SegmentState:
    """What a segment holds: its size and committed offset (bytes), the records after that offset, and
    whether a process is writing it now (holds its lock)."""

    path: Path
    size: int
    done: int
    waiting: int
    busy: bool


def states(directory: Path) -> list[SegmentState]:
    """The journal's segments as they are now, oldest first (a read: nothing is locked for long or changed)."""
    found = []
    for path in segments(directory):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # drained and deleted meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                busy = False
            except BlockingIOError:
                busy = True
            size = os.fstat(fd).st_size
            done = min(done_offset(path), size)
            waiting = 0
            os.lseek(fd, done, os.SEEK_SET)
            while chunk := os.read(fd, 1 << 20):
                waiting += chunk.count(b"\n")
        finally:
            os.close(fd)
        found.append(SegmentState(path, size, done, waiting, busy))
    return found


def read_records(path: Path, start: int, *, limit: int = BATCH) -> tuple[list[ClickRecord], int]:
    """Up to ``limit`` complete records of ``path`` from byte ``start``: ``(records, offset after them)``.

    A line that is not a record (damage on disk, a record cut short by a full disk and later followed by
    others) is logged with its file and offset and skipped, so one bad line never stops the journal. An
    unterminated last line is left for later: its writer may still be writing it.
    """
    name = segment_name(path)
    records: list[ClickRecord] = []
    with open(path, "rb") as stream:
        stream.seek(start)
        offset = start
        for line in stream:
            if not line.endswith(b"\n"):
                break
            record = _parse(name, offset, line)
            if record is not None:
                records.append(record)
            offset += len(line)
            if len(records) >= limit:
                break
    return records, offset


def _parse(name: str, offset: int, line: bytes) -> ClickRecord | None:
    try:
        delivery_id, link_id, at, user_agent = json.loads(line)
        if not (_is_id(delivery_id) and _is_id(link_id) and isinstance(at, (int, float))):
            raise ValueError("not a click record")
        if not (user_agent is None or isinstance(user_agent, str)):
            raise ValueError("not a click record")
        occurred_at = datetime.fromtimestamp(at, UTC)
    except (ValueError, TypeError, OverflowError, OSError):
        log.error("click journal %s%s%s, byte %d: not a click record; skipped", PREFIX, name, SUFFIX, offset)
        return None
    return ClickRecord(f"{name}:{offset}", delivery_id, link_id, occurred_at, user_agent)


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63


class Drainer:
    """The recording side: reads the journal and hands records to ``write`` in batches of at most ``batch``.

    ``write(records)`` records them durably (it commits) and returns how many were new; it raises to
    refuse the batch, which is then offered again, after a back-off, until it is taken. One drainer per
    process (``start`` runs it in a daemon thread); several processes may drain one directory.
    """

    def __init__(
        self,
        journal: ClickJournal,
        write: Callable[[list[ClickRecord]], int],
        *,
        interval: float = INTERVAL,
        batch: int = BATCH,
        progress: Callable[[int], None] | None = None,
    ):
        self.journal = journal
        self.write = write
        self.progress = progress  # called with the records of each committed batch
        self.interval = interval
        self.batch = batch
        self.recorded = 0  # clicks this drainer recorded, for tests and benchmarks
        self._offsets: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        """Run in a daemon thread of this process (again after a fork: threads do not survive one)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="patron-click-drainer", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the journal now rather than at the end of the interval."""
        self._wake.set()

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop the thread, drain what is left (within ``timeout`` seconds), close the journal.

        A fully drained segment of this process is deleted; one the database would not take stays for
        the next drainer.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.journal.close()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and self.drain() > 0:
                pass
        except Exception as exc:
            log.error(
                "click journal %s: not drained at stop (%s); the next process records the rest",
                self.journal.directory,
                first_line(exc),
            )

    def drain(self) -> int:
        """Record what the journal holds now, this process's live segment and every closed one; records
        handed to ``write``. Raises what ``write`` raises."""
        with self._lock:
            handed = 0
            live = self.journal.live_segment
            if live is not None:
                handed += self._drain_live(live)
            for path in segments(self.journal.directory):
                if path != self.journal.live_segment:
                    handed += self._drain_closed(path)
            return handed

    def _run(self) -> None:
        backoff = self.interval
        while not self._stop.is_set():
            self._wake.wait(backoff)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.drain()
            except Exception as exc:  # the database or the journal refused: keep the clicks, try again later
                if not self._failing:
                    what = "cannot be read" if isinstance(exc, OSError) else "batch not recorded"  # OSError: files
                    log.error("click journal %s: %s, will retry: %s", self.journal.directory, what, first_line(exc))
                self._failing = True
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            if self._failing:
                log.warning("click journal %s: recording again", self.journal.directory)
            self._failing = False
            backoff = self.interval

    def _drain_live(self, path: Path) -> int:
        return self._record(path)[0]

    def _drain_closed(self, path: Path) -> int:
        """Take a closed segment's lock, drain it to its end and delete it; 0 if another process holds it."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # its writer is alive, or another drainer has it
            if os.fstat(fd).st_nlink == 0:
                return 0  # drained and deleted by another drainer since we listed it
            handed, offset = self._record(path)
            self._offsets.pop(path, None)
            size = os.fstat(fd).st_size
            if offset < size:  # an unterminated last line: its writer died mid-write
                log.error(
                    "click journal %s, byte %d: %d bytes of an unfinished record; skipped",
                    path.name,
                    offset,
                    size - offset,
                )
            path.unlink(missing_ok=True)  # the segment first: a mark without its segment is only litter
            Path(str(path) + DONE).unlink(missing_ok=True)
            return handed
        finally:
            os.close(fd)

    def _record(self, path: Path) -> tuple[int, int]:
        """Read, write and mark done batch by batch from where ``path`` was left, up to the end it had when
        the last batch was read; (records handed, offset reached). Each batch is committed before the next
        is read. A batch that is not full ends the round: clicks appended meanwhile wait for the next one,
        so a busy journal is recorded a few hundred clicks per transaction, not a few at a time."""
        offset = self._offsets[path] if path in self._offsets else done_offset(path)
        handed = 0
        while True:
            records, end = read_records(path, offset, limit=self.batch)
            if end == offset:
                return handed, offset
            if records:
                self.recorded += self.write(records)
            mark_done(path, end)
            self._offsets[path] = offset = end
            handed += len(records)
            if self.progress is not None:
                self.progress(len(records))
            if len(records) < self.batch:  # read to the end (skipped lines do not stop a read early)
                return handed, offset
