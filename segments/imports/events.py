"""``patron events import``: events from any channel, joined to contacts by identity."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from segments.db import utcnow
from segments.imports import values
from segments.imports.batches import DEFAULT_BATCH_SIZE, ImportSummary, RejectSink, reject, run
from segments.imports.bulk import Bulk
from segments.imports.reading import FileProblem, Record, csv_records, jsonl_records
from segments.imports.resolve import EMAIL, Claim, resolve
from segments.models import SOURCE_LENGTH, Event

events = Event.__table__
JSON_KEYS = frozenset({"id", "type", "occurred_at", "email", "phone", "identities", "properties"})
CSV_COLUMNS = ("id", "type", "occurred_at", "email", "phone")


@dataclass(slots=True)
class Incoming:
    """One event as read, before we know whose it is."""

    external_id: str
    type: str
    occurred_at: datetime
    properties: dict
    claim: Claim


def _event(line: int, external_id, type_, occurred_at, keys, properties) -> Incoming:
    if type_ is None:
        raise values.BadValue("type: is required")
    if not isinstance(type_, str):
        raise values.BadValue("type: must be text")
    try:
        type_ = values.event_type(type_)
    except values.BadValue as exc:
        raise values.BadValue(f"type: {exc}") from None
    try:
        moment = values.occurred_at(occurred_at)
    except values.BadValue as exc:
        raise values.BadValue(f"occurred_at: {exc}") from None
    if not keys:
        raise values.BadValue("no email, phone or identity: an event must name the person")
    if external_id is None or external_id == "":
        # Without an id, the event's content is its identity: importing the same
        # file twice still adds nothing.
        content = json.dumps([type_, moment.isoformat(), sorted(keys), properties], sort_keys=True, default=str)
        external_id = "sha256:" + hashlib.sha256(content.encode("utf-8", "surrogateescape")).hexdigest()
    else:
        if isinstance(external_id, bool) or not isinstance(external_id, (str, int)):
            raise values.BadValue("id: must be text or a whole number")
        try:
            external_id = values.identifier(str(external_id))
        except values.BadValue as exc:
            raise values.BadValue(f"id: {exc}") from None
    return Incoming(external_id, type_, moment, properties, Claim(line, keys))


def _identity(channel: str, raw) -> tuple[str, str]:
    if not isinstance(raw, str):
        raise values.BadValue(f"{channel}: must be text")
    try:
        if channel == EMAIL:
            return EMAIL, values.email(raw)
        if channel == "phone":
            return "phone", values.phone(raw)
        return values.channel(channel), values.identifier(raw)
    except values.BadValue as exc:
        raise values.BadValue(f"{channel if channel in (EMAIL, 'phone') else 'id:' + channel}: {exc}") from None


def _csv_parser(header: list[str]) -> Callable[[Record], Incoming]:
    problems = []
    for number, column in enumerate(header, start=1):
        prefix, sep, name = column.partition(":")
        try:
            if sep and prefix == "id":
                values.channel(name)
            elif sep and prefix == "prop":
                values.key_name(name, "property")
            elif column not in CSV_COLUMNS:
                raise values.BadValue(
                    f"unknown column; the columns are {', '.join(CSV_COLUMNS)}, id:<channel>, prop:<name>"
                )
        except values.BadValue as exc:
            problems.append(f"column {number} {column!r}: {exc}")
    if len(set(header)) != len(header):
        problems.append("a column name repeats")
    if problems:
        raise FileProblem("; ".join(problems))
    width = len(header)

    def parse(record: Record) -> Incoming:
        fields = record.fields
        if len(fields) > width:
            raise values.BadValue(f"has {len(fields)} fields; the header has {width}")
        row = {column: fields[i] for i, column in enumerate(header) if i < len(fields) and fields[i].strip()}
        keys, properties = [], {}
        for column, raw in row.items():
            if column in (EMAIL, "phone"):
                keys.append(_identity(column, raw))
            elif column.startswith("id:"):
                keys.append(_identity(column[3:], raw))
            elif column.startswith("prop:"):
                try:
                    properties[column[5:]] = values.typed(raw)
                except values.BadValue as exc:
                    raise values.BadValue(f"{column}: {exc}") from None
        return _event(record.line, row.get("id"), row.get("type"), row.get("occurred_at", ""), keys, properties)

    return parse


def _json_parse(record: Record) -> Incoming:
    data = record.fields
    unknown = sorted(set(data) - JSON_KEYS)
    if unknown:
        raise values.BadValue(f"unknown keys {', '.join(unknown)}; the keys are {', '.join(sorted(JSON_KEYS))}")
    keys = [_identity(channel, data[channel]) for channel in (EMAIL, "phone") if data.get(channel)]
    identities = data.get("identities") or {}
    if not isinstance(identities, dict):
        raise values.BadValue("identities: must be an object of channel → identifier")
    keys.extend(_identity(channel, raw) for channel, raw in identities.items())
    properties = data.get("properties") or {}
    if not isinstance(properties, dict):
        raise values.BadValue("properties: must be an object")
    checked = {}
    for name, value in properties.items():
        try:
            checked[values.key_name(name, "property")] = values.json_scalar(value)
        except values.BadValue as exc:
            raise values.BadValue(f"properties.{name}: {exc}") from None
    return _event(record.line, data.get("id"), data.get("type"), data.get("occurred_at"), keys, checked)


def _insert(dialect_insert) -> Bulk:
    return Bulk(
        dialect_insert(events).on_conflict_do_nothing(index_elements=["source", "external_id"]),
        ("contact_id", "channel", "type", "occurred_at", "properties", "external_id"),
        shared=("source", "received_at"),
    )


_INSERTS = {"sqlite": _insert(sqlite.insert), "postgresql": _insert(postgresql.insert)}


def open_csv_events(text):
    """The header, records and parser of an events CSV; FileProblem for a bad header."""
    header, records = csv_records(text)
    return header, records, _csv_parser(header)


def open_jsonl_events(text):
    """The records and parser of a JSON Lines events file."""
    return ["record"], jsonl_records(text), _json_parse


OPENERS = {"csv": open_csv_events, "jsonl": open_jsonl_events}


def import_events(
    session: Session,
    file: BinaryIO | str | Path,
    *,
    channel: str,
    source: str | None = None,
    format: str = "csv",
    rejects: RejectSink | None = None,
    now: datetime | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[ImportSummary, int], None] | None = None,
) -> ImportSummary:
    """Add every good event of a CSV or JSON Lines file (a path or a binary stream) to its contact's timeline.

    Events are unique on (source, id): importing a file again adds nothing. An
    identity nobody has yet creates a new profile. Raises FileProblem for a
    file it cannot use at all.
    """
    channel = values.channel(channel)
    source = source or channel
    if len(source) > SOURCE_LENGTH:
        raise FileProblem(f"source name is longer than {SOURCE_LENGTH} characters")
    if format not in OPENERS:
        raise FileProblem(f"format must be csv or jsonl, not {format!r}")
    summary = ImportSummary(details={"duplicates": 0, "contacts_created": 0})

    def write(batch: list[tuple[int, list, Incoming]]) -> None:
        connection = session.connection()
        seen = _already_imported(connection, source, [event.external_id for *_, event in batch])
        fresh = []
        for item in batch:
            event = item[2]
            if event.external_id in seen:
                summary.details["duplicates"] += 1
            else:
                seen.add(event.external_id)
                fresh.append(item)
        moment = now or utcnow()
        outcome = resolve(connection, [event.claim for *_, event in fresh], now=moment, source=source)
        rows = []
        for index, (line, fields, event) in enumerate(fresh):
            if index in outcome.rejected:
                reject(summary, rejects, line, outcome.rejected[index], fields)
                continue
            summary.details["contacts_created"] += outcome.created[index]
            rows.append(
                (
                    outcome.contact_ids[index],
                    channel,
                    event.type,
                    event.occurred_at,
                    event.properties,
                    event.external_id,
                )
            )
        _INSERTS[connection.dialect.name].execute(connection, rows, source=source, received_at=moment)
        summary.created += len(rows)
        session.flush()

    return run(
        session,
        file,
        OPENERS[format],
        write,
        summary,
        rejects=rejects,
        on_batch=on_batch,
        batch_size=batch_size,
        tables=["contacts", "identities", "events"],
    )


def _already_imported(connection, source: str, external_ids: list[str]) -> set[str]:
    query = select(events.c.external_id).where(events.c.source == source, events.c.external_id.in_(external_ids))
    return set(connection.execute(query).scalars())
