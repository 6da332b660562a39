"""Races between a click journal's writer and another process's drainer, replayed deterministically.

A drainer deletes a segment it can lock, believing its writer gone. A new segment must therefore never be
lockable by a drainer between its creation and its writer's lock: a drainer that ran in that moment once
found the new segment empty, deleted it, and every click then appended to it was lost (a third of a
benchmark's clicks, now and then).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from delivery import journal
from delivery.journal import ClickJournal, Drainer

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_a_drainer_running_while_a_segment_is_being_created_does_not_take_it(tmp_path, monkeypatch):
    writer = ClickJournal(tmp_path)
    handed: list = []
    other = Drainer(ClickJournal(tmp_path), lambda records: handed.extend(records) or len(records))
    real_rename, real_flock, raced = os.rename, journal.fcntl.flock, []

    def drain_first(function):
        def step(*args, **kwargs):
            if not raced:  # another process's drainer runs at this very moment, once
                raced.append("draining")
                raced[0] = other.drain()
            return function(*args, **kwargs)

        return step

    # The moments of creating a segment: before its lock and before its name.
    monkeypatch.setattr(journal.fcntl, "flock", drain_first(real_flock))
    monkeypatch.setattr(journal.os, "rename", drain_first(real_rename))
    key = writer.append(7, 3, AT, "Mozilla/5.0")
    monkeypatch.undo()

    assert raced == [0]
    assert writer.live_segment is not None and writer.live_segment.exists()
    assert other.drain() == 0  # the writer is alive: its segment is not another process's to take
    writer.close()
    assert other.drain() == 1 and [record.key for record in handed] == [key]
    assert not list(tmp_path.iterdir())  # drained and deleted, mark and all


def test_a_segment_deleted_under_a_running_writer_is_left_for_a_new_one_where_drainers_look(tmp_path):
    writer = ClickJournal(tmp_path / "journal")
    writer.append(1, 3, AT, "Mozilla/5.0")
    first = writer.live_segment
    first.unlink()  # an operator empties the journal while the server runs
    key = writer.append(2, 3, AT, "Mozilla/5.0")
    assert writer.live_segment != first and writer.live_segment.exists()
    handed: list = []
    writer.close()
    Drainer(ClickJournal(tmp_path / "journal"), lambda records: handed.extend(records) or len(records)).drain()
    assert [(record.key, record.delivery_id) for record in handed] == [(key, 2)]


def test_a_journal_directory_replaced_by_a_file_under_a_running_writer_refuses_the_next_click(tmp_path):
    directory = tmp_path / "journal"
    writer = ClickJournal(directory)
    writer.append(1, 3, AT, "Mozilla/5.0")
    directory.rename(tmp_path / "moved")
    directory.write_text("not a directory")
    with pytest.raises(journal.JournalError):  # the endpoint then records the click itself
        writer.append(2, 3, AT, "Mozilla/5.0")
    directory.unlink()
    directory.mkdir()
    writer.append(3, 3, AT, "Mozilla/5.0")  # the directory is back: journalled again, where drainers look
    assert journal.segments(directory) == [writer.live_segment]
