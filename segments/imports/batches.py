"""The loop every import shares: parse records, set the bad ones aside, write the rest in batches.

Parsing runs in this process. A second parsing process was tried and measured:
on this project's two-core machines two busy processes get about 1.3 times the
work of one done, and the writer slowed by more than the parser saved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from segments.db import refresh_statistics
from segments.imports.reading import CountingReader, Record, open_text
from segments.imports.values import BadValue

DEFAULT_BATCH_SIZE = 2000
FIRST_STATISTICS_ROWS = 20_000
STATISTICS_ROWS = 250_000

# Given the text stream: the header, the records (CsvRecords or JsonLinesRecords), and the function that parses one.
Opener = Callable[[object], tuple[list[str], object, Callable[[Record], object]]]


class RejectSink(Protocol):
    """Where rejected records go: the rejects CSV, or a list in memory."""

    def start(self, header: list[str]) -> None: ...

    def add(self, line: int, reason: str, fields: list) -> None: ...


class RejectList:
    """Rejected records kept in memory as (line, reason, fields)."""

    def __init__(self):
        self.header: list[str] = []
        self.rows: list[tuple[int, str, list]] = []

    def start(self, header: list[str]) -> None:
        self.header = header

    def add(self, line: int, reason: str, fields: list) -> None:
        self.rows.append((line, reason, fields))


@dataclass
class ImportSummary:
    """What an import did: the ``--json`` summary."""

    rows: int = 0
    lines: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # counts an importer adds (a count, or column → count)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {**{k: v for k, v in data.items() if k != "details"}, **self.details}


@dataclass(slots=True)
class Chunk:
    """A batch of parsed records: the good ones with what they parsed to, and the rejected."""

    rows: int
    good: list[tuple[int, list, object]]
    bad: list[tuple[int, str, list]]
    bytes_read: int = 0
    lines: int = 0


def original_fields(record: Record) -> list:
    """The record as it was read, for the rejects file."""
    if isinstance(record.fields, list):
        return record.fields
    return [record.raw if record.raw is not None else ""]


def _swallowed_row(records, record: Record, parse) -> int | None:
    """The line of the first good row that multi-line ``record`` swallowed, if any."""
    for inside in records.swallowed(record):
        try:
            parse(inside)
        except BadValue:
            continue
        return inside.line
    return None


def _produce(stream: BinaryIO, opener: Opener, batch_size: int) -> Iterator:
    """Yield the header, then a Chunk per ``batch_size`` good records."""
    counter = CountingReader(stream)
    header, records, parse = opener(open_text(counter))
    yield header
    chunk = Chunk(0, [], [])
    for record in records:
        chunk.rows += 1
        problem = record.problem
        if problem is None:
            try:
                parsed = parse(record)
            except BadValue as exc:
                problem = str(exc)
        if record.last_line > record.line:
            # A quoted field ran over lines: a value with line breaks, or a
            # stray quote. If a row that is good by itself starts on one of
            # the lines after the first, it was a stray: reject the first line
            # only and read the lines after it again, so no row vanishes into
            # a field.
            swallowed = _swallowed_row(records, record, parse)
            if swallowed is not None:
                why = f"unterminated quote: it swallowed the row on line {swallowed}, which is read again"
                first = records.split(record, why)
                chunk.bad.append((first.line, first.problem, original_fields(first)))
                continue
            if problem is not None:
                problem = f"{record.lines}: {problem}"
        if problem is not None:
            chunk.bad.append((record.line, problem, original_fields(record)))
            continue
        chunk.good.append((record.line, original_fields(record), parsed))
        if len(chunk.good) >= batch_size:
            chunk.bytes_read, chunk.lines = counter.bytes_read, records.lines_read
            yield chunk
            chunk = Chunk(0, [], [])
    chunk.bytes_read, chunk.lines = counter.bytes_read, records.lines_read
    yield chunk


def run(
    session,
    file: BinaryIO | str | Path,
    opener: Opener,
    write: Callable[[list[tuple[int, list, object]]], None],
    summary: ImportSummary,
    *,
    rejects: RejectSink | None,
    on_batch: Callable[[ImportSummary, int], None] | None,
    batch_size: int,
    tables: list[str],
) -> ImportSummary:
    """Read ``file`` with ``opener``; hand each batch's good records to ``write`` and its bad ones to ``rejects``.

    The planner's statistics for ``tables`` are refreshed once the import has
    written a first share of rows, then every STATISTICS_ROWS rows and at the
    end. Raises FileProblem (from the opener) before any row is written.
    """
    items = (
        _from_file(file, opener, batch_size) if isinstance(file, (str, Path)) else _produce(file, opener, batch_size)
    )
    header = next(items)
    if rejects is not None:
        rejects.start(header)
    next_refresh = FIRST_STATISTICS_ROWS
    for chunk in items:
        summary.rows += chunk.rows
        summary.lines = chunk.lines
        for line, reason, fields in chunk.bad:
            reject(summary, rejects, line, reason, fields)
        if chunk.good:
            write(chunk.good)
        if summary.rows >= next_refresh:
            refresh_statistics(session.connection(), tables)
            next_refresh = summary.rows + STATISTICS_ROWS
        if on_batch is not None:
            on_batch(summary, chunk.bytes_read)
    refresh_statistics(session.connection(), tables)
    return summary


def _from_file(path, opener: Opener, batch_size: int) -> Iterator:
    with open(path, "rb") as stream:
        yield from _produce(stream, opener, batch_size)


def reject(summary: ImportSummary, rejects: RejectSink | None, line: int, reason: str, fields: list) -> None:
    """Count a rejected record and set it aside."""
    summary.rejected += 1
    if rejects is not None:
        rejects.add(line, reason, fields)
