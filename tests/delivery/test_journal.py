"""The click journal on disk, no database: what ``append`` writes is what the drainer hands over, once.

It proves that a record survives the file field for field (any user agent, ids up to 2**63-1); that
threads never interleave lines; that closed segments (rotated, or their writer dead) are drained and
deleted while a live one, or another living process's, is left alone; that a damaged line is logged
with its file and byte offset and skipped; that a ``.done`` mark is where a fresh drainer resumes; that
a refused batch is offered again (and logged once by the thread); that a forked child writes its own
segment; and that a click the journal cannot take raises ``JournalError`` instead of being lost.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.journal import (
    MAX_RECORD_BYTES,
    ClickJournal,
    Drainer,
    JournalError,
    done_offset,
    mark_done,
    read_records,
    segment_name,
    segments,
)

AT = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
AGENT = "Mozilla/5.0 (X11; Linux x86_64) Firefox/124.0"
LOGGER = "delivery.journal"


class Collector:
    """A ``write`` that keeps what it is handed; raises while ``refuse`` is set."""

    def __init__(self):
        self.records = []
        self.calls = 0
        self.refuse = threading.Event()

    def __call__(self, records):
        self.calls += 1
        if self.refuse.is_set():
            raise RuntimeError("database refused the batch")
        self.records.extend(records)
        return len(records)

    @property
    def keys(self) -> list[str]:
        return [record.key for record in self.records]

    @property
    def ids(self) -> list[tuple[int, int]]:
        return [(record.delivery_id, record.link_id) for record in self.records]


def wait_until(condition, timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def closed_segment(directory: Path, lines: list[bytes], name: str = "20260101T000000-1-deadbeef") -> Path:
    """A segment nobody holds (as a dead writer leaves it), with exactly these bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"clicks-{name}.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def record(delivery_id: int, link_id: int = 7, at: datetime = AT, agent=AGENT) -> bytes:
    """One line as ``append`` writes it."""
    return json.dumps([delivery_id, link_id, at.timestamp(), agent], separators=(",", ":")).encode() + b"\n"


def journal_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR]


# -- keys and round trip ------------------------------------------------------------------------------

ids = st.integers(1, 2**63 - 1)
agents = st.one_of(
    st.none(),
    st.text(max_size=255),
    st.text(st.sampled_from('"\\\n\r\t\x00\x1b\x7f\u2028\u00e9\u4e2d\U0001f600'), max_size=255),
)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@settings(max_examples=200, deadline=None)
@given(clicks=st.lists(st.tuples(ids, ids, times, agents), min_size=1, max_size=5))
def test_what_append_writes_is_read_back_field_for_field_under_its_key(tmp_path_factory, clicks):
    journal = ClickJournal(tmp_path_factory.mktemp("journal"))
    keys = [journal.append(*click) for click in clicks]
    path = journal.live_segment
    records, end = read_records(path, 0)

    assert end == path.stat().st_size
    assert [r.key for r in records] == keys
    data = path.read_bytes()
    for key, r, (delivery_id, link_id, at, agent) in zip(keys, records, clicks, strict=True):
        segment, offset = key.rsplit(":", 1)
        assert segment == segment_name(path)
        assert data[int(offset) :].startswith(b"[%d," % delivery_id)  # the key is where its line starts
        assert (r.delivery_id, r.link_id, r.user_agent) == (delivery_id, link_id, agent)
        assert r.occurred_at == at
    assert data.count(b"\n") == len(clicks)  # a newline in a user agent never splits a record


def test_the_longest_user_agent_in_the_widest_characters_still_fits_one_record(tmp_path):
    journal = ClickJournal(tmp_path)
    agent = "\U0001f600" * 255  # the responses column keeps 255 characters; each is 12 bytes escaped
    journal.append(2**63 - 1, 2**63 - 1, AT, agent)
    (read,), _ = read_records(journal.live_segment, 0)
    assert read.user_agent == agent


# -- threads --------------------------------------------------------------------------------------------


def test_8_threads_of_500_appends_are_each_read_back_once_on_a_line_of_their_own(tmp_path, caplog):
    journal = ClickJournal(tmp_path)
    keys: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def appender(thread: int) -> None:
        start.wait()
        for i in range(500):
            keys[thread].append(journal.append(thread + 1, i + 1, AT, f"agent {thread} {i} " + "x" * i))

    threads = [threading.Thread(target=appender, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    records, end = read_records(journal.live_segment, 0, limit=10_000)
    assert end == journal.live_segment.stat().st_size
    assert journal_errors(caplog) == []  # no line was a mix of two
    assert sorted((r.delivery_id, r.link_id) for r in records) == [(t, i) for t in range(1, 9) for i in range(1, 501)]
    assert all(r.user_agent == f"agent {r.delivery_id - 1} {r.link_id - 1} " + "x" * (r.link_id - 1) for r in records)
    all_keys = [key for thread in keys for key in thread]
    assert len(set(all_keys)) == 4000
    assert sorted(r.key for r in records) == sorted(all_keys)


# -- rotation and closed segments ---------------------------------------------------------------------


def test_a_full_segment_is_rotated_and_the_closed_one_drained_and_deleted(tmp_path):
    journal = ClickJournal(tmp_path, max_segment_bytes=300)
    keys = [journal.append(n, 1, AT, AGENT) for n in range(1, 12)]  # 72-byte records: 5, 5 and 1 live
    assert len({key.rsplit(":", 1)[0] for key in keys}) > 1  # a new segment was opened
    live = journal.live_segment
    written = segments(tmp_path)
    assert len(written) > 1

    write = Collector()
    drainer = Drainer(journal, write)
    assert drainer.drain() == 11
    assert sorted(write.keys) == sorted(keys)  # segments opened in one second have no order among them
    assert sorted(write.ids) == [(n, 1) for n in range(1, 12)]
    assert segments(tmp_path) == [live]  # the closed ones are gone, with their marks
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, live.name + ".done"]
    assert drainer.drain() == 0  # nothing is handed twice


def test_an_unterminated_last_line_of_a_closed_segment_is_logged_and_the_segment_deleted(tmp_path, caplog):
    first, second = record(1), record(2)
    path = closed_segment(tmp_path, [first, second, record(3)[:20]])
    write = Collector()

    assert Drainer(ClickJournal(tmp_path), write).drain() == 2
    assert write.ids == [(1, 7), (2, 7)]
    (error,) = journal_errors(caplog)
    assert path.name in error and f"byte {len(first) + len(second)}" in error
    assert not path.exists() and not Path(str(path) + ".done").exists()


def test_an_unterminated_last_line_of_the_live_segment_is_left_for_its_writer(tmp_path, caplog):
    journal = ClickJournal(tmp_path)
    journal.append(1, 7, AT, AGENT)
    path = journal.live_segment
    third = record(3)
    with open(path, "ab") as stream:  # the writer is in the middle of its write(2)
        stream.write(third[:20])
    write = Collector()
    drainer = Drainer(journal, write)

    assert drainer.drain() == 1
    assert journal_errors(caplog) == [] and path.exists()
    with open(path, "ab") as stream:
        stream.write(third[20:])
    assert drainer.drain() == 1
    assert write.ids == [(1, 7), (3, 7)]


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage",
        b"",
        b"\xff\xfe not utf-8",
        b"null",
        b'{"delivery": 1}',
        b"[1,2]",
        b"[true,1,0,null,null]",
        b"[9223372036854775808,1,0,null,null]",
        b"[0,1,0,null,null]",
        b"[1,1,1e400,null,null]",
        b"[1,1,-1e20,null,null]",
        b'[1,1,"yesterday",null,null]',
        b"[1,1,0,5,null]",
        b"[1,1,0,null,[]]",
        b"[1,1,0,null,null,null]",
        b"[1,1,0,null,null] trailing",
    ],
)
def test_a_line_of_garbage_is_logged_with_file_and_offset_and_the_records_after_it_still_handed_over(
    tmp_path, caplog, garbage
):
    first = record(1)
    path = closed_segment(tmp_path, [first, garbage + b"\n", record(2), record(3)])
    write = Collector()

    assert Drainer(ClickJournal(tmp_path), write).drain() == 3
    assert write.ids == [(1, 7), (2, 7), (3, 7)]
    (error,) = journal_errors(caplog)
    assert path.name in error and f"byte {len(first)}" in error
    assert not path.exists()


def test_a_fresh_drainer_resumes_after_the_done_mark(tmp_path):
    lines = [record(n) for n in range(1, 6)]
    path = closed_segment(tmp_path, lines)
    mark_done(path, len(lines[0]) + len(lines[1]))  # a batch committed by a drainer that then died

    write = Collector()
    assert Drainer(ClickJournal(tmp_path), write).drain() == 3
    assert write.ids == [(3, 7), (4, 7), (5, 7)]
    offset = len(lines[0]) + len(lines[1])
    assert write.keys[0] == f"{segment_name(path)}:{offset}"


def test_a_fresh_drainer_resumes_after_the_done_mark_of_its_own_live_segment(tmp_path):
    journal = ClickJournal(tmp_path)
    for n in range(1, 4):
        journal.append(n, 7, AT, AGENT)
    Drainer(journal, Collector()).drain()  # records 1 to 3 committed and marked
    journal.append(4, 7, AT, AGENT)

    write = Collector()
    assert Drainer(journal, write).drain() == 1
    assert write.ids == [(4, 7)]


def test_clicks_appended_while_a_batch_is_written_wait_for_the_next_round(tmp_path):
    # A busy journal: every write takes long enough for 3 more clicks to arrive. A drainer that chased
    # them would never end its round and recorded a busy server's clicks a few per transaction.
    journal = ClickJournal(tmp_path)
    for n in range(1, 6):
        journal.append(n, 7, AT, AGENT)
    arrived = iter(range(6, 10_000))
    write = Collector()

    def busy(records):
        for _ in range(3):
            journal.append(next(arrived), 7, AT, AGENT)
        return write(records)

    drainer = Drainer(journal, busy, batch=100)
    assert drainer.drain() == 5  # one transaction of what was there, then the round ends
    assert write.calls == 1 and write.ids == [(n, 7) for n in range(1, 6)]
    assert drainer.drain() == 3  # the next round takes what arrived meanwhile
    assert write.ids[5:] == [(6, 7), (7, 7), (8, 7)]


def test_a_backlog_is_recorded_in_full_batches_in_one_round(tmp_path):
    journal = ClickJournal(tmp_path)
    for n in range(1, 251):
        journal.append(n, 7, AT, AGENT)
    sizes = []
    write = Collector()

    def counted(records):
        sizes.append(len(records))
        return write(records)

    assert Drainer(journal, counted, batch=100).drain() == 250
    assert sizes == [100, 100, 50]
    assert write.ids == [(n, 7) for n in range(1, 251)]


# -- a refused batch ----------------------------------------------------------------------------------


def test_a_refused_batch_is_not_marked_done_and_is_offered_again(tmp_path):
    closed = closed_segment(tmp_path, [record(1), record(2)])
    journal = ClickJournal(tmp_path)
    journal.append(3, 7, AT, AGENT)
    live = journal.live_segment
    write = Collector()
    drainer = Drainer(journal, write, batch=10)

    write.refuse.set()
    for _ in range(2):
        with pytest.raises(RuntimeError):
            drainer.drain()
    assert write.records == []
    assert done_offset(live) == 0 and done_offset(closed) == 0
    assert closed.exists()

    write.refuse.clear()
    assert drainer.drain() == 3
    assert sorted(write.ids) == [(1, 7), (2, 7), (3, 7)]
    assert not closed.exists()
    assert drainer.drain() == 0


def test_the_thread_logs_a_refusing_database_once_and_records_again_when_it_is_back(tmp_path, caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    journal = ClickJournal(tmp_path)
    write = Collector()
    write.refuse.set()
    drainer = Drainer(journal, write, interval=0.005)
    journal.append(1, 7, AT, AGENT)
    drainer.start()
    try:
        assert wait_until(lambda: write.calls >= 5)  # it kept trying
        journal.append(2, 7, AT, AGENT)
        write.refuse.clear()
        drainer.wake()
        assert wait_until(lambda: len(write.records) == 2)
    finally:
        drainer.stop()
    assert write.ids == [(1, 7), (2, 7)]
    errors = journal_errors(caplog)
    assert len(errors) == 1 and "will retry" in errors[0] and "database refused the batch" in errors[0]
    assert any("recording again" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert segments(tmp_path) == []  # stop drained and deleted its own segment


# -- other processes ----------------------------------------------------------------------------------

WRITER = """
import sys, time
from datetime import UTC, datetime
from delivery.journal import ClickJournal
journal = ClickJournal(sys.argv[1])
journal.append(41, 7, datetime.now(UTC), "writer")
print(journal.live_segment, flush=True)
time.sleep(120)
"""


def test_another_living_process_s_segment_is_left_alone_until_it_is_killed(tmp_path):
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([writer.stdout], [], [], 30)
        assert ready, "the writer did not append within 30 s"
        theirs = Path(writer.stdout.readline().strip())
        assert theirs.exists(), writer.stderr.read()

        write = Collector()
        drainer = Drainer(ClickJournal(tmp_path), write)
        assert drainer.drain() == 0
        assert theirs.exists() and write.records == []

        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(10)
        assert drainer.drain() == 1
        assert write.ids == [(41, 7)] and write.records[0].user_agent == "writer"
        assert not theirs.exists()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def test_a_forked_child_appends_to_a_segment_of_its_own_and_both_are_drained(tmp_path):
    journal = ClickJournal(tmp_path)
    journal.append(1, 7, AT, AGENT)
    parents = journal.live_segment
    read, written = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: append, say where, and leave without running the parent's pytest
        status = 1
        try:
            os.close(read)
            journal.append(2, 7, AT, AGENT)
            os.write(written, str(journal.live_segment).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(written)
    with os.fdopen(read) as stream:
        childs = Path(stream.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    assert childs != parents and childs.exists()
    assert read_records(parents, 0)[0][0].delivery_id == 1  # the parent's segment holds the parent's click only
    assert [r.delivery_id for r in read_records(childs, 0)[0]] == [2]
    write = Collector()
    assert Drainer(journal, write).drain() == 2
    assert sorted(write.ids) == [(1, 7), (2, 7)]
    assert not childs.exists()  # the child is gone: its segment was closed, drained, deleted


# -- what the journal cannot take ---------------------------------------------------------------------


def test_a_directory_that_is_a_file_raises_journal_error(tmp_path):
    path = tmp_path / "journal"
    path.write_text("not a directory")
    with pytest.raises(JournalError, match="journal"):
        ClickJournal(path).append(1, 7, AT, AGENT)


def test_a_record_over_the_limit_raises_journal_error_and_writes_nothing(tmp_path):
    journal = ClickJournal(tmp_path)
    journal.append(1, 7, AT, AGENT)
    with pytest.raises(JournalError, match=str(MAX_RECORD_BYTES)):
        journal.append(2, 7, AT, "x" * MAX_RECORD_BYTES)
    journal.append(3, 7, AT + timedelta(seconds=1), AGENT)  # the journal still takes the next click
    records, _ = read_records(journal.live_segment, 0)
    assert [r.delivery_id for r in records] == [1, 3]


FORKING_WRITER = """
import os, sys, time
from datetime import UTC, datetime
from delivery.journal import ClickJournal
journal = ClickJournal(sys.argv[1])
journal.append(51, 7, datetime.now(UTC), "parent")
parents = journal.live_segment
child = os.fork()
if child == 0:
    if sys.argv[2] == "appends":
        journal.append(52, 7, datetime.now(UTC), "child")  # a segment of its own, as it should
    time.sleep(120)
    os._exit(0)
print(child, parents, flush=True)
os._exit(0)  # the parent ends; its child, a long-lived worker, goes on
"""


@pytest.mark.parametrize("child_does", ["appends", "never appends"])
def test_a_dead_writer_s_segment_is_drained_while_a_child_it_forked_lives_on(tmp_path, child_does):
    writer = subprocess.Popen(
        [sys.executable, "-c", FORKING_WRITER, str(tmp_path), child_does],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child = None
    try:
        ready, _, _ = select.select([writer.stdout], [], [], 30)
        assert ready, "the writer did not append within 30 s"
        pid, parents = writer.stdout.readline().split()
        child, parents = int(pid), Path(parents)
        writer.wait(10)
        if child_does == "appends":
            assert wait_until(lambda: len(segments(tmp_path)) == 2)  # the child has appended too

        write = Collector()
        drainer = Drainer(ClickJournal(tmp_path), write)
        # The child closes its copy of the parent's segment in its at-fork hook, which a busy machine may run
        # after the parent has exited: until then the segment is still locked, and a round passes it by.
        assert wait_until(lambda: drainer.drain() > 0 or write.ids)
        assert write.ids == [(51, 7)]  # the parent's click; the living child's segment is its own
        assert not parents.exists()
    finally:
        if child is not None:
            os.kill(child, signal.SIGKILL)
        if writer.poll() is None:
            writer.kill()
            writer.wait()
