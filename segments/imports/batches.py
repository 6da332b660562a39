"""The loop every import shares: parse records, reject the bad ones, write the rest in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from segments.imports.reading import Record
from segments.imports.values import BadValue

DEFAULT_BATCH_SIZE = 2000



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
    created: int = 0
    updated: int = 0
    rejected: int = 0
    details: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        data = asdict(self)
        return {**{k: v for k, v in data.items() if k != "details"}, **self.details}


def run(
    records: Iterable[Record],
    parse: Callable[[Record], object],
    write: Callable[[list[tuple[Record, object]]], None],
    summary: ImportSummary,
    reject: Callable[[int, str, list], None],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    after_batch: Callable[[], None] | None = None,
) -> ImportSummary:
    """Parse every record and hand the good ones to ``write`` a batch at a time."""
    batch: list[tuple[Record, object]] = []

    def flush() -> None:
        if batch:
            write(batch)
            batch.clear()
        if after_batch is not None:
            after_batch()

    for record in records:
        summary.rows += 1
        if record.problem is not None:
            reject(record.line, record.problem, original_fields(record))
            continue
        try:
            parsed = parse(record)
        except BadValue as exc:
            reject(record.line, str(exc), original_fields(record))
            continue
        batch.append((record, parsed))
        if len(batch) >= batch_size:
            flush()
    flush()
    return summary


def original_fields(record: Record) -> list:
    """The record as it was read, for the rejects file."""
    if isinstance(record.fields, list):
        return record.fields
    return [record.raw if record.raw is not None else ""]


def counting(summary: ImportSummary, sink: RejectSink | None) -> Callable[[int, str, list], None]:
    """A reject function that counts into ``summary`` and passes the record on to ``sink``."""

    def reject(line: int, reason: str, original: list) -> None:
        summary.rejected += 1
        if sink is not None:
            sink.add(line, reason, original)

    return reject
