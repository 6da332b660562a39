"""``patron contacts import``: upsert contacts from a CSV file, one batch at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from segments.db import utcnow
from segments.imports import values
from segments.imports.batches import DEFAULT_BATCH_SIZE, ImportSummary, RejectSink, read_chunks, reject, run
from segments.imports.reading import FileProblem, Record, csv_records
from segments.imports.resolve import EMAIL, Claim, resolve
from segments.models import NAME_LENGTH

PLAIN_COLUMNS = ("email", "first_name", "last_name", "locale", "timezone", "phone")
PREFIXES = ("id:", "attr:", "interest:", "consent:")


def _plan(header: list[str]) -> list[tuple[str, Callable[[Claim, str], None]]]:
    """For each column, in order: its name, and how to apply a cell to a claim."""
    problems, plan, seen = [], [], {}
    for index, column in enumerate(header):
        if column in seen:
            problems.append(f"column {index + 1} {column!r} repeats column {seen[column] + 1}")
            continue
        seen[column] = index
        try:
            plan.append((column, _applier(column)))
        except values.BadValue as exc:
            problems.append(f"column {index + 1} {column!r}: {exc}")
    if problems:
        raise FileProblem("; ".join(problems))
    if not any(column in ("email", "phone") or column.startswith("id:") for column, _ in plan):
        raise FileProblem("no identity column: the header needs email, phone or id:<channel>")
    return plan


def _applier(column: str) -> Callable[[Claim, str], None]:
    if column == "email":
        return lambda claim, raw: claim.keys.append((EMAIL, values.email(raw)))
    if column == "phone":
        return lambda claim, raw: claim.keys.append(("phone", values.phone(raw)))
    if column in ("first_name", "last_name"):
        return _profile(column, values.remembered(lambda raw: values.text(raw, NAME_LENGTH)))
    if column == "locale":
        return _profile(column, values.remembered(values.locale))
    if column == "timezone":
        return _profile(column, values.remembered(values.time_zone))
    prefix, _, name = column.partition(":")
    if prefix == "id":
        channel = values.channel(name)
        if channel in (EMAIL, "phone"):
            raise values.BadValue(f"use the {channel} column for {channel} identities")
        return lambda claim, raw: claim.keys.append((channel, values.identifier(raw)))
    if prefix == "attr":
        key = values.key_name(name, "attribute")
        typed = values.remembered(values.typed)
        return lambda claim, raw: claim.attributes.__setitem__(key, typed(raw))
    if prefix == "interest":
        tag = values.key_name(name, "interest tag")
        score = values.remembered(values.score)
        return lambda claim, raw: claim.interests.__setitem__(tag, score(raw))
    if prefix == "consent":
        purpose = values.key_name(name, "consent purpose")
        boolean = values.remembered(values.boolean)
        return lambda claim, raw: claim.consents.__setitem__(purpose, boolean(raw))
    known = ", ".join(PLAIN_COLUMNS) + ", " + ", ".join(f"{p}<name>" for p in PREFIXES)
    raise values.BadValue(f"unknown column; the columns are {known}")


def _profile(column: str, check: Callable[[str], str]) -> Callable[[Claim, str], None]:
    return lambda claim, raw: claim.profile.__setitem__(column, check(raw))


def open_contacts(text) -> tuple[list[str], Iterator[Record], Callable[[Record], Claim]]:
    """The header, the records and the row parser of a contacts CSV; FileProblem for a bad header."""
    header, records = csv_records(text)
    plan = _plan(header)
    width = len(header)

    def parse(record: Record) -> Claim:
        fields = record.fields
        if len(fields) > width:
            raise values.BadValue(f"has {len(fields)} fields; the header has {width}")
        claim = Claim(record.line, [])
        # zip stops at the shorter: missing trailing cells count as empty.
        for (column, apply), raw in zip(plan, fields):
            if raw and not raw.isspace():
                try:
                    apply(claim, raw)
                except values.BadValue as exc:
                    raise values.BadValue(f"{column}: {exc}") from None
        if not claim.keys:
            raise values.BadValue("no email, phone or id:<channel>: a row must name the person")
        return claim

    return header, records, parse


def import_contacts(
    session: Session,
    file: BinaryIO | str | Path,
    *,
    source: str = "import",
    rejects: RejectSink | None = None,
    now: datetime | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[ImportSummary, int], None] | None = None,
    parallel: bool | None = None,
) -> ImportSummary:
    """Create or update a contact for every good row of a contacts CSV (a path or a binary stream).

    Bad rows go to ``rejects`` and the import goes on. ``on_batch`` is called
    with the summary so far and the bytes read after each batch is flushed; the
    caller may commit there. Raises FileProblem for a header it cannot use.
    """
    header, chunks = read_chunks(file, open_contacts, batch_size, parallel)
    if rejects is not None:
        rejects.start(header)
    summary = ImportSummary()

    def write(batch: list[tuple[int, list, Claim]]) -> None:
        outcome = resolve(session.connection(), [claim for *_, claim in batch], now=now or utcnow(), source=source)
        for index, (line, fields, _claim) in enumerate(batch):
            if index in outcome.rejected:
                reject(summary, rejects, line, outcome.rejected[index], fields)
            elif outcome.created[index]:
                summary.created += 1
            else:
                summary.updated += 1
        session.flush()

    return run(chunks, write, summary, rejects, on_batch)
