"""Streaming records out of CSV and JSON Lines files, and writing the rejects file.

A record is read from physical lines, and no record may hold more than
MAX_RECORD_LINES lines or MAX_RECORD_CHARS characters: a stray quote would
otherwise swallow the rest of the file into one field. The lines of the record
being read are kept (so memory is bounded by that limit, not by the file), and
when a record turns out to be a stray quote's doing, the lines after its first
are handed out again and read as records of their own.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from segments.csv_output import SafeWriter
from segments.plain_data import json_deeper_than

MAX_RECORD_LINES = 100
# Below csv's own field limit (131,072 characters), so that one never fires first.
MAX_RECORD_CHARS = 100_000
REJECTED_LINE_CHARS = 1000  # what the rejects file keeps of a line too long to import
MAX_JSON_NESTING = 20  # a JSON Lines record nests three levels; Python's parser would fail near a thousand


_READ_AGAIN = "; "  # between an unterminated quote's reason and what happens to the lines it swallowed


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
    """One record as read: its first and last line numbers, and its fields or why it can't be read."""

    line: int
    fields: list[str] | dict | None
    raw: str | None = None
    problem: str | None = None
    end: int = 0  # the last line, when the record spans several

    @property
    def last_line(self) -> int:
        return max(self.line, self.end)

    @property
    def lines(self) -> str:
        """``line 3`` or ``lines 3-5``."""
        return f"line {self.line}" if self.last_line == self.line else f"lines {self.line}-{self.last_line}"


# Byte-order marks of the encodings a spreadsheet may save "Unicode text" in; UTF-32's first, as UTF-32LE's
# starts with UTF-16LE's.
BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
SNIFFED_BYTES = 4096


def open_text(counter: CountingReader) -> io.TextIOWrapper:
    # A BOM is dropped; bytes that aren't UTF-8 survive as lone surrogates so
    # that the one row holding them is rejected, not the whole file.
    return io.TextIOWrapper(
        io.BufferedReader(counter, 1 << 16), encoding="utf-8-sig", errors="surrogateescape", newline=""
    )


def first_line_bytes(text: io.TextIOWrapper) -> bytes:
    """The first line of a text stream not yet read from, as bytes (at most SNIFFED_BYTES), without consuming it."""
    peek = getattr(getattr(text, "buffer", None), "peek", None)
    if peek is None:
        return b""
    head = peek(SNIFFED_BYTES)[:SNIFFED_BYTES]
    end = head.find(b"\n")
    return head if end < 0 else head[: end + 2]  # a UTF-16LE line break is "\n\x00"


def encoding_problem(head: bytes) -> str | None:
    """Why a file whose first line is ``head`` is not UTF-8 text, naming what it looks like; None if it may be.

    Only for a header row: a data row with odd bytes is rejected by itself, the import goes on.
    """
    for bom, name in BOMS:
        if head.startswith(bom):
            return f"the file is not UTF-8 (it looks like {name}: save it as UTF-8)"
    if b"\x00" not in head:
        return None
    # Without a BOM, text of Latin letters in UTF-32 has NULs in the middle two bytes of every four,
    # in UTF-16 in every other byte.
    zeros = [head[i::4].count(0) for i in range(4)]
    quarter = len(head) // 4
    if zeros[1] > quarter // 2 and zeros[2] > quarter // 2:
        return "the file is not UTF-8 (it looks like UTF-32: save it as UTF-8)"
    if zeros[0] + zeros[2] > quarter or zeros[1] + zeros[3] > quarter:
        return "the file is not UTF-8 (it looks like UTF-16: save it as UTF-8)"
    return "the file is not UTF-8 text (its header row holds NUL bytes: is it a spreadsheet or another binary file?)"


def not_utf8(fields: list[str]) -> str | None:
    """Why a header row read with surrogateescape held bytes that are not UTF-8, or None."""
    for field in fields:
        for char in field:
            if "\udc80" <= char <= "\udcff":
                byte = ord(char) - 0xDC00
                return f"the file is not UTF-8 (byte 0x{byte:02X} in the header row): save it as UTF-8"
    return None


class _RecordTooLong(Exception):
    """The record being read would pass MAX_RECORD_LINES or MAX_RECORD_CHARS."""


class _LineTooLong(Exception):
    """The first line of a record is longer than MAX_RECORD_CHARS by itself."""


Line = tuple[int, str]  # its number in the file, and its text with its line break


class PhysicalLines:
    """The numbered lines of a text stream, each cut at ``max_chars``; ``overlong`` holds the numbers of those cut."""

    def __init__(self, text: io.TextIOBase, max_chars: int = MAX_RECORD_CHARS):
        self._readline = text.readline
        self.max_chars = max_chars
        self.read = 0
        self.overlong: set[int] = set()

    def take(self) -> Line | None:
        """The next line, or None at the end of the stream."""
        line = self._readline(self.max_chars)
        if not line:
            return None
        self.read += 1
        if len(line) == self.max_chars and line[-1] not in "\r\n" and self._skip_rest():
            self.overlong.add(self.read)
            line = line[:REJECTED_LINE_CHARS]
        return self.read, line

    def _skip_rest(self) -> bool:
        """Read past the rest of a line longer than the limit; False if there was no rest."""
        skipped = False
        while (rest := self._readline(self.max_chars)) and rest[-1] not in "\r\n":
            skipped = True
        return skipped or bool(rest)


class Lines:
    """Lines for ``csv.reader``, one record at a time, within the limits.

    Remembers the lines of the record being read (``record``), refuses to make
    it longer than ``max_lines`` lines or ``max_chars`` characters, and hands
    out lines given ``back`` before taking new ones from ``source``.
    """

    def __init__(
        self, source, overlong: set[int], max_lines: int = MAX_RECORD_LINES, max_chars: int = MAX_RECORD_CHARS
    ):
        self._source = source  # () -> Line | None
        self._overlong = overlong
        self.max_lines = max_lines
        self.max_chars = max_chars
        self.record: list[Line] = []
        self.ran_out = False  # the lines ended inside the record being read
        self._chars = 0
        self._again: deque[Line] = deque()

    def start(self) -> None:
        """Begin a new record."""
        self.record = []
        self.ran_out = False
        self._chars = 0

    def back(self, lines: list[Line]) -> None:
        """Hand ``lines`` out again, before anything else."""
        self._again.extendleft(reversed(lines))

    def take(self) -> Line | None:
        """The next line, outside any record: one given back, else a new one."""
        return self._again.popleft() if self._again else self._source()

    def __iter__(self) -> Lines:
        return self

    def __next__(self) -> str:
        item = self._again.popleft() if self._again else self._source()
        if item is None:
            self.ran_out = bool(self.record)
            raise StopIteration
        number, line = item
        record = self.record
        overlong = number in self._overlong if self._overlong else False
        if record and (overlong or len(record) >= self.max_lines or self._chars + len(line) > self.max_chars):
            self._again.appendleft(item)
            raise _RecordTooLong
        record.append(item)
        if overlong:
            raise _LineTooLong
        self._chars += len(line)
        return line


def _alone(line: str) -> list[str]:
    """The fields of one line read by itself; an open quote runs to the end of the line."""
    return next(csv.reader([line.rstrip("\r\n")]), [])


class CsvRecords:
    """The records of a CSV file; see the module docstring for the limits."""

    def __init__(self, source, overlong: set[int], lines_read=lambda: 0):
        self._lines = Lines(source, overlong)
        self._overlong = overlong
        self._reader = csv.reader(self._lines)
        self._last: list[Line] = []
        self._lines_read = lines_read

    @classmethod
    def of(cls, text: io.TextIOBase) -> CsvRecords:
        lines = PhysicalLines(text)
        return cls(lines.take, lines.overlong, lambda: lines.read)

    @property
    def lines_read(self) -> int:
        """Physical lines read from the file so far, the header's included."""
        return self._lines_read()

    def __iter__(self) -> Iterator[Record]:
        while (record := self.next_record()) is not None:
            yield record

    def next_record(self) -> Record | None:
        """The next record (blank lines are none), or None at the end of the file."""
        lines = self._lines
        while True:
            lines.start()
            try:
                fields = next(self._reader)
            except StopIteration:
                return None
            except _RecordTooLong:
                limit = f"within {lines.max_lines} lines or {lines.max_chars:,} characters"
                return self._unclosed(f"no closing quote {limit}", end=lines.record[-1][0])
            except _LineTooLong:
                number, line = lines.record[0]
                self._last = []
                return Record(number, [line], problem=f"is longer than {lines.max_chars:,} characters")
            except csv.Error as exc:
                self._last = lines.record
                return Record(lines.record[0][0], None, problem=f"cannot be read as CSV: {exc}")
            if lines.ran_out:
                return self._unclosed("no closing quote before the end of the file", end=lines.record[-1][0])
            if fields:  # csv yields [] for a blank line
                self._last = lines.record
                return Record(lines.record[0][0], fields, end=lines.record[-1][0])

    def _unclosed(self, why: str, end: int) -> Record:
        """The first line of an unterminated record, rejected; the lines after it are read again."""
        first, *rest = self._lines.record
        self._lines.back(rest)
        self._last = []
        if end == first[0]:
            return Record(first[0], _alone(first[1]), problem=f"line {first[0]}: unterminated quote: {why}")
        again = f"only line {first[0]} is rejected; lines {first[0] + 1}-{end} are read again as rows of their own"
        problem = f"lines {first[0]}-{end}: unterminated quote: {why}{_READ_AGAIN}{again}"
        return Record(first[0], _alone(first[1]), problem=problem)

    def swallowed(self, record: Record) -> list[Record]:
        """The records that would start inside the multi-line ``record`` just read, were its first line not there.

        Reads ahead of ``record`` as far as those records need, and gives
        every line it read back, so the next record is still the one after
        ``record``.
        """
        pending: deque[Line] = deque(self._last[1:])
        fetched: list[Line] = []

        def source() -> Line | None:
            if pending:
                return pending.popleft()
            item = self._lines.take()
            if item is not None:
                fetched.append(item)
            return item

        trial = CsvRecords(source, self._overlong)
        found = []
        while (inside := trial.next_record()) is not None and inside.line <= record.last_line:
            if inside.problem is None:
                found.append(inside)
        self._lines.back(fetched)
        return found

    def split(self, record: Record, problem: str) -> Record:
        """Reject only the first line of ``record`` (just read) and read the lines after it again."""
        first, *rest = self._last
        self._lines.back(rest)
        self._last = []
        return Record(first[0], _alone(first[1]), problem=f"{record.lines}: {problem}")


def csv_records(text: io.TextIOWrapper) -> tuple[list[str], CsvRecords]:
    """The header row and the data records after it; FileProblem for a header that can't be one (see
    :func:`encoding_problem`)."""
    if (problem := encoding_problem(first_line_bytes(text))) is not None:
        raise FileProblem(problem)
    records = CsvRecords.of(text)
    header = records.next_record()
    if header is None:
        raise FileProblem("the file is empty: a header row is required")
    if header.problem or header.last_line > 1:
        # A header is never read again: it stops the import, so its reason ends before "only line 1 is rejected".
        problem = (header.problem or "a quoted line break").partition(_READ_AGAIN)[0]
        where = "" if problem.startswith("line") else f"{header.lines}: "
        raise FileProblem(f"the header row cannot be read: {where}{problem}")
    if (problem := not_utf8(header.fields)) is not None:
        raise FileProblem(problem)
    return [name.strip() for name in header.fields], records


class JsonLinesRecords:
    """One record per non-blank line, each a JSON object."""

    def __init__(self, text: io.TextIOBase):
        self._physical = PhysicalLines(text)
        self._lines = Lines(self._physical.take, self._physical.overlong, max_lines=1)

    @property
    def lines_read(self) -> int:
        return self._physical.read

    def __iter__(self) -> Iterator[Record]:
        lines = self._lines
        while True:
            lines.start()
            try:
                line = next(lines)
            except StopIteration:
                return
            except _LineTooLong:
                number, line = lines.record[0]
                yield Record(number, None, raw=line, problem=f"is longer than {lines.max_chars:,} characters")
                continue
            if line.strip():
                yield self._record(lines.record[0][0], line.rstrip("\r\n"))

    @staticmethod
    def _record(number: int, line: str) -> Record:
        if json_deeper_than(line, MAX_JSON_NESTING):  # json.loads recurses once per level
            return Record(number, None, raw=line, problem=f"nests JSON more than {MAX_JSON_NESTING} levels deep")
        try:
            value = json.loads(line)
        except ValueError as exc:
            # A lone surrogate means bytes that weren't UTF-8; json reports it oddly.
            problem = "is not valid UTF-8" if any("\udc80" <= c <= "\udcff" for c in line) else f"is not JSON: {exc}"
            return Record(number, None, raw=line, problem=problem)
        if not isinstance(value, dict):
            return Record(number, None, raw=line, problem="is not a JSON object")
        return Record(number, value, raw=line)


def jsonl_records(text: io.TextIOWrapper) -> JsonLinesRecords:
    """One record per non-blank line, each a JSON object."""
    return JsonLinesRecords(text)


class RejectsFile:
    """The CSV of rejected rows: line, reason, then the row as it was. Created on first use.

    Cells a spreadsheet would run as formulas are written with a ``'`` in
    front (see :mod:`segments.csv_output`).
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.header: list[str] = []
        self.count = 0
        self._file = None
        self._writer = None
        # Found out before the first row is imported, not at the first reject halfway through the file.
        folder = self.path.parent
        if self.path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise FileProblem(f"the rejects file {self.path} cannot be written: no such folder, or not writable")

    def start(self, header: list[str]) -> None:
        self.header = header

    def add(self, line: int, reason: str, fields: list[str]) -> None:
        if self._writer is None:
            try:
                self._file = open(self.path, "w", newline="", encoding="utf-8", errors="surrogateescape")
            except OSError as exc:
                raise FileProblem(f"the rejects file {self.path} cannot be written: {exc.strerror}") from None
            self._writer = SafeWriter(self._file)
            self._writer.writerow(["line", "reason", *self.header])
        # A reason may quote a value that came from a JSON escape, such as a
        # lone "\ud800", that no encoding can write: it is written escaped.
        reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
        self._writer.writerow([line, reason, *fields])
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> RejectsFile:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
