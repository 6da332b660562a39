"""``patron contacts import``: upsert contacts from a CSV file, one batch at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from segments.db import utcnow
from segments.imports import values
from segments.imports.batches import DEFAULT_BATCH_SIZE, ImportSummary, RejectSink, reject, run
from segments.imports.reading import FileProblem, Record, csv_records
from segments.imports.resolve import EMAIL, Claim, resolve
from segments.models import NAME_LENGTH

PLAIN_COLUMNS = ("email", "first_name", "last_name", "locale", "timezone", "phone")
PREFIXES = ("id:", "attr:", "interest:", "consent:")


KEPT = "kept_own_choices"  # the summary's count, per column, of values not applied over the person's choice
TARGETS = ("keys", "profile", "attributes", "interests", "consents")


def _plan(header: list[str]) -> dict[str, list[tuple[int, str, str, Callable]]]:
    """Per claim part, the columns that fill it: (index, column, key, check)."""
    problems, seen = [], {}
    plan: dict[str, list] = {target: [] for target in TARGETS}
    for index, column in enumerate(header):
        if column in seen:
            problems.append(f"column {index + 1} {column!r} repeats column {seen[column] + 1}")
            continue
        seen[column] = index
        try:
            target, key, check = _column(column)
        except values.BadValue as exc:
            problems.append(f"column {index + 1} {column!r}: {exc}")
            continue
        plan[target].append((index, column, key, check))
    if problems:
        raise FileProblem("; ".join(problems))
    if not plan["keys"]:
        raise FileProblem("no identity column: the header needs email, phone or id:<channel>")
    return plan


def _column(column: str) -> tuple[str, str, Callable]:
    """Where a column's cells go in a claim, under which key, and how each is checked."""
    if column == "email":
        return "keys", EMAIL, values.email
    if column == "phone":
        return "keys", "phone", values.phone
    if column in ("first_name", "last_name"):
        return "profile", column, values.remembered(lambda raw: values.text(raw, NAME_LENGTH))
    if column == "locale":
        return "profile", column, values.remembered(values.locale)
    if column == "timezone":
        return "profile", column, values.remembered(values.time_zone)
    prefix, _, name = column.partition(":")
    if prefix == "id":
        channel = values.channel(name)
        if channel in (EMAIL, "phone"):
            raise values.BadValue(f"use the {channel} column for {channel} identities")
        return "keys", channel, values.identifier
    if prefix == "attr":
        return "attributes", values.key_name(name, "attribute"), values.remembered(values.typed)
    if prefix == "interest":
        return "interests", values.key_name(name, "interest tag").lower(), values.remembered(values.score)
    if prefix == "consent":
        return "consents", values.key_name(name, "consent purpose"), values.remembered(values.boolean)
    known = ", ".join(PLAIN_COLUMNS) + ", " + ", ".join(f"{p}<name>" for p in PREFIXES)
    raise values.BadValue(f"unknown column; the columns are {known}")


def _filled(raw: str) -> bool:
    return bool(raw) and not raw.isspace()


def open_contacts(text) -> tuple[list[str], Iterator[Record], Callable[[Record], Claim]]:
    """The header, the records and the row parser of a contacts CSV; FileProblem for a bad header."""
    header, records = csv_records(text)
    plan = _plan(header)
    width = len(header)
    keys_plan, profile_plan, attribute_plan, interest_plan, consent_plan = (plan[target] for target in TARGETS)
    blank = [""] * width

    def explain(fields: list[str]) -> None:
        """Name the column of the first bad cell (the fast path below can't)."""
        for columns in plan.values():
            for index, column, _key, check in columns:
                if _filled(fields[index]):
                    try:
                        check(fields[index])
                    except values.BadValue as exc:
                        raise values.BadValue(f"{column}: {exc}") from None

    def parse(record: Record) -> Claim:
        fields = record.fields
        if len(fields) != width:
            if len(fields) > width:
                raise values.BadValue(f"has {len(fields)} fields; the header has {width}")
            fields = fields + blank[len(fields) :]  # missing trailing cells are empty
        # One comprehension per part, no try per cell: this runs for every row.
        try:
            keys = [(key, check(raw)) for index, _c, key, check in keys_plan if _filled(raw := fields[index])]
            claim = Claim(
                record.line,
                keys,
                {key: check(raw) for index, _c, key, check in profile_plan if _filled(raw := fields[index])},
                {key: check(raw) for index, _c, key, check in attribute_plan if _filled(raw := fields[index])},
                {key: check(raw) for index, _c, key, check in interest_plan if _filled(raw := fields[index])},
                {key: check(raw) for index, _c, key, check in consent_plan if _filled(raw := fields[index])},
            )
        except values.BadValue:
            explain(fields)
            raise
        if not keys:
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
) -> ImportSummary:
    """Create or update a contact for every good row of a contacts CSV (a path or a binary stream).

    A row is ``created``, ``updated``, ``unchanged`` (it changed nothing stored) or ``rejected``. The
    person's own choices outrank the file: a locale or interest tag they chose on the preference page, and
    a purpose they withdrew themselves, are kept; ``summary.details["kept_own_choices"]`` counts the values
    kept per column (``{"consent:tracking": 2, "locale": 1}``). An interest score is set only when the
    file's value differs from the last import's, so re-imports keep learned scores.

    Bad rows go to ``rejects`` and the import goes on. ``on_batch`` is called
    with the summary so far and the bytes read after each batch is flushed; the
    caller may commit there. Raises FileProblem for a header it cannot use.
    """
    summary = ImportSummary(details={"unchanged": 0, KEPT: {}})
    kept = summary.details[KEPT]

    def write(batch: list[tuple[int, list, Claim]]) -> None:
        outcome = resolve(session.connection(), [claim for *_, claim in batch], now=now or utcnow(), source=source)
        for index, (line, fields, _claim) in enumerate(batch):
            if index in outcome.rejected:
                reject(summary, rejects, line, outcome.rejected[index], fields)
            elif outcome.created[index]:
                summary.created += 1
            elif outcome.changed[index]:
                summary.updated += 1
            else:
                summary.details["unchanged"] += 1
        for column, count in outcome.kept.items():
            kept[column] = kept.get(column, 0) + count
        session.flush()

    return run(
        session,
        file,
        open_contacts,
        write,
        summary,
        rejects=rejects,
        on_batch=on_batch,
        batch_size=batch_size,
        tables=["contacts", "identities", "interests", "consents"],
    )
