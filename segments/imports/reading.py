"""Streaming records out of CSV and JSON Lines files, and writing the rejects file."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class FileProblem(ValueError):
    """The file as a whole cannot be imported (a bad header, an unknown column)."""


class CountingReader(io.RawIOBase):
    """A binary stream that counts the bytes read through it, for progress bars."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._raw.readinto(buffer)
        self.bytes_read += count or 0
        return count


@dataclass(slots=True)
class Record:
    """One record as read: its first line number, and its fields or why it can't be read."""

    line: int
    fields: list[str] | dict | None
    raw: str | None = None
    problem: str | None = None


def open_text(counter: CountingReader) -> io.TextIOWrapper:
    # A BOM is dropped; bytes that aren't UTF-8 survive as lone surrogates so
    # that the one row holding them is rejected, not the whole file.
    return io.TextIOWrapper(
        io.BufferedReader(counter, 1 << 16), encoding="utf-8-sig", errors="surrogateescape", newline=""
    )


def csv_records(text: io.TextIOWrapper) -> tuple[list[str], Iterator[Record]]:
    """The header row and an iterator over the data records after it."""
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise FileProblem("the file is empty: a header row is required") from None
    except csv.Error as exc:
        raise FileProblem(f"line 1: the header row cannot be read: {exc}") from None
    return [name.strip() for name in header], _data_records(reader)


def _data_records(reader) -> Iterator[Record]:
    last_line = reader.line_num
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Record(last_line + 1, None, problem=f"cannot be read as CSV: {exc}")
        else:
            if fields:  # csv yields [] for a blank line
                yield Record(last_line + 1, fields)
        last_line = reader.line_num


def jsonl_records(text: io.TextIOWrapper) -> Iterator[Record]:
    """One record per non-blank line, each a JSON object."""
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            # A lone surrogate means bytes that weren't UTF-8; json reports it oddly.
            problem = "is not valid UTF-8" if any("\udc80" <= c <= "\udcff" for c in line) else f"is not JSON: {exc}"
            yield Record(number, None, raw=line.rstrip("\r\n"), problem=problem)
            continue
        if not isinstance(value, dict):
            yield Record(number, None, raw=line.rstrip("\r\n"), problem="is not a JSON object")
            continue
        yield Record(number, value, raw=line.rstrip("\r\n"))


class RejectsFile:
    """The CSV of rejected rows: line, reason, then the row as it was. Created on first use."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.header: list[str] = []
        self.count = 0
        self._file = None
        self._writer = None

    def start(self, header: list[str]) -> None:
        self.header = header

    def add(self, line: int, reason: str, fields: list[str]) -> None:
        if self._writer is None:
            self._file = open(self.path, "w", newline="", encoding="utf-8", errors="surrogateescape")
            self._writer = csv.writer(self._file)
            self._writer.writerow(["line", "reason", *self.header])
        self._writer.writerow([line, reason, *fields])
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> RejectsFile:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
