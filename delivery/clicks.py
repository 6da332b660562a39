"""Clicks the fast way: one read to answer the redirect, then many clicks recorded per transaction.

The click endpoint reads the link's URL and whether the contact allows tracking with one SELECT
(``TargetReader``), appends the click to the journal (``delivery.journal``) and answers. The journal's
drainer hands the clicks to ``record_clicks``, which records a batch with a few statements whatever its
size: what ``delivery.responses.click`` does for one click (a response and a timeline event each; a human
click by a contact with ``profiling`` consent raises their interests), judged the same way:

- a click is recorded only for a sent (or unknown) delivery, a registered link and a contact who grants
  ``tracking`` at recording time;
- it is machine-made by ``delivery.machine.machine_reason`` against the time it was clicked, not the
  time it is recorded;
- its key (the journal position) is the response's ``external_id``: a key recorded before is not
  recorded again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from sqlalchemy import and_, bindparam, delete, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from delivery import learning
from delivery.journal import ClickRecord
from delivery.machine import machine_reason
from delivery.models import Delivery, Link, Response
from delivery.responses import (
    Client,
    _recorded,
    _runs,
    event_properties,
    kept_user_agent,
    timeline_event_row,
)
from segments.db import as_recordset, recordset_insert, utcnow
from segments.models import ERASED, PROFILING, TRACKING, Consent, Contact, Event


@dataclass(frozen=True)
class Target:
    """Where a click goes (the URL registered at send time), and whether the contact allows tracking it."""

    url: str
    tracked: bool


class TargetReader:
    """The click endpoint's one read: the redirect for link ``link_id`` of ``delivery_id`` (a ``Target``), or
    None when the link or the sent delivery is unknown. One indexed SELECT, compiled once for ``engine`` and
    run on a pooled DBAPI connection directly, which costs a click a third of what SQLAlchemy's execution
    machinery does.

    ``engine`` should be a ``segments.db.make_reader`` engine: each SELECT runs on its own, and the
    connection goes back to the pool without a ROLLBACK. Raises what the driver raises, wrapped by
    SQLAlchemy as ``sqlalchemy.exc.DBAPIError``.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        compiled = _target_query().compile(dialect=engine.dialect)
        self.sql = str(compiled)
        self.positions = compiled.positiontup  # the bind names in order, for the qmark style; None for named
        self.defaults = dict(compiled.params)

    def __call__(self, delivery_id: int, link_id: int) -> Target | None:
        values = {**self.defaults, "delivery_id": delivery_id, "link_id": link_id}
        params = tuple(values[name] for name in self.positions) if self.positions else values
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(self.sql, params)
                row = cursor.fetchone()
            finally:
                cursor.close()
        except self.engine.dialect.loaded_dbapi.Error as exc:
            raw.invalidate()  # a broken connection is not handed to the next click
            raise DBAPIError.instance(self.sql, params, exc, self.engine.dialect.loaded_dbapi.Error) from exc
        finally:
            raw.close()  # back to the pool
        return None if row is None else Target(row[0], bool(row[1]))


@cache
def _target_query():
    deliveries, links, consents = Delivery.__table__, Link.__table__, Consent.__table__
    tracking = and_(
        consents.c.contact_id == deliveries.c.contact_id,
        consents.c.purpose == TRACKING,
        consents.c.granted.is_(True),
    )
    return (
        select(links.c.url, consents.c.contact_id.is_not(None).label("tracked"))
        .select_from(deliveries)
        .join(links, links.c.id == bindparam("link_id"))
        .outerjoin(consents, tracking)
        .where(deliveries.c.id == bindparam("delivery_id"), _recorded(deliveries))
    )


def _event_properties(delivery, link, reason: str | None) -> dict:
    """A click event's properties: ``responses.event_properties`` for ``link`` of ``delivery``, plus the URL."""
    row = {**delivery._asdict(), "link_id": link.id, "block_version_id": link.block_version_id}
    return {**event_properties(row, reason, link.interests), "url": link.url}


@dataclass(frozen=True)
class ClickBatch:
    """What recording a batch needs to know, read before the batch's write transaction begins."""

    clicks: Sequence[ClickRecord]
    deliveries: dict[int, object]  # delivery id → row (run_id, contact_id, sent_at, campaign_id, tracking, profiling)
    links: dict[int, object]  # link id → row (url, block_version_id, interests)


def read_batch(session: Session, clicks: Sequence[ClickRecord]) -> ClickBatch:
    """Read the deliveries and links ``clicks`` name (two SELECTs). End this transaction before
    ``record_clicks``, so that on SQLite the write transaction starts with its write and waits its turn."""
    delivery_ids = sorted({c.delivery_id for c in clicks})
    link_ids = sorted({c.link_id for c in clicks})
    deliveries = {row.delivery_id: row for row in session.execute(_batch_deliveries(), {"ids": delivery_ids})}
    links = {row.id: row for row in session.execute(_batch_links(), {"ids": link_ids})}
    return ClickBatch(clicks, deliveries, links)


@cache
def _batch_deliveries():
    deliveries, consents = Delivery.__table__, Consent.__table__
    tracking, profiling = consents.alias("tracking"), consents.alias("profiling")

    def granted(alias, purpose):
        return and_(alias.c.contact_id == deliveries.c.contact_id, alias.c.purpose == purpose)

    return (
        select(
            deliveries.c.id.label("delivery_id"),
            deliveries.c.run_id,
            deliveries.c.contact_id,
            deliveries.c.sent_at,
            _runs.c.campaign_id,
            tracking.c.granted.label("tracking"),
            profiling.c.granted.label("profiling"),
        )
        .select_from(deliveries)
        .outerjoin(_runs, _runs.c.id == deliveries.c.run_id)
        .outerjoin(tracking, granted(tracking, TRACKING))
        .outerjoin(profiling, granted(profiling, PROFILING))
        .where(deliveries.c.id.in_(bindparam("ids", expanding=True)), _recorded(deliveries))
    )


@cache
def _batch_links():
    links = Link.__table__
    return select(links.c.id, links.c.url, links.c.block_version_id, links.c.interests).where(
        links.c.id.in_(bindparam("ids", expanding=True))
    )


def _insert_rows(connection: Connection, table, rows: list[dict], *, returning: bool):
    """INSERT ``rows`` (dicts with the same keys: the columns) into ``table`` in one statement, skipping
    unique conflicts when ``returning`` (and then the inserted rows' ``id`` and ``external_id``): PostgreSQL's
    ``json_to_recordset`` of one JSON document (``segments.db.recordset_insert``), SQLite's multi-row VALUES,
    which its driver does not parse."""
    postgresql, columns = connection.dialect.name == "postgresql", tuple(rows[0])
    statement = _bulk_insert(postgresql, table, columns, returning)
    return connection.execute(statement, as_recordset(rows, columns) if postgresql else rows)


@cache
def _bulk_insert(postgresql: bool, table, columns: tuple[str, ...], returning: bool):
    statement = recordset_insert(table, columns) if postgresql else sqlite_insert(table)
    if not returning:
        return statement
    conflict = statement.on_conflict_do_nothing(index_elements=[table.c.kind, table.c.external_id])
    return conflict.returning(table.c.id, table.c.external_id)


def _erased_since_read(connection: Connection, contact_ids: set[int]) -> set[int]:
    """Those of ``contact_ids`` erased since the batch was read (``read_batch`` runs in a transaction of its own).

    Asked after the batch's first write, so SQLite's snapshot is taken once this writer holds the lock, and
    with ``FOR SHARE`` on PostgreSQL: an erasure that holds the contact (``campaigns.privacy.erase_person``
    locks it first) is waited for and its result read; one that comes later waits for this commit and then
    deletes what it finds."""
    if not contact_ids:
        return set()
    contacts = Contact.__table__
    query = (
        select(contacts.c.id)
        .where(contacts.c.id.in_(sorted(contact_ids)), contacts.c.status == ERASED)
        .with_for_update(read=True)
    )
    return set(connection.scalars(query))


def record_clicks(session: Session, batch: ClickBatch, *, half_life_days: float, now: datetime | None = None) -> int:
    """Record the batch's clicks; how many were new. Flushes, never commits.

    Four statements whatever the batch's size: the responses (one INSERT of all the rows that skips keys
    recorded before); which of their people were erased since the batch was read (their responses are
    deleted again, and nothing else is recorded for them); their events (one INSERT); and one upsert of
    interests for the human clicks of contacts who grant ``profiling``, summed per contact and tag (raising
    by a and then by b at one moment is raising by a + b). Interests are raised as of ``now`` (default: the
    time of recording), the moment they learn.
    """
    now = now or utcnow()
    rows, context = [], {}
    for record in batch.clicks:
        delivery, link = batch.deliveries.get(record.delivery_id), batch.links.get(record.link_id)
        if delivery is None or link is None or not delivery.tracking:
            continue
        agent = kept_user_agent(record.user_agent)
        reason = machine_reason("click", Client(agent), delivery.sent_at, record.occurred_at)
        rows.append(
            {
                "kind": "click",
                "external_id": record.key,
                "delivery_id": delivery.delivery_id,
                "run_id": delivery.run_id,
                "contact_id": delivery.contact_id,
                "link_id": link.id,
                "block_version_id": link.block_version_id,
                "machine": reason is not None,
                "machine_reason": reason,
                "user_agent": agent,
                "occurred_at": record.occurred_at,
                "received_at": now,
            }
        )
        context[record.key] = (record, delivery, link, reason)
    if not rows:
        return 0
    connection = session.connection()
    inserted = _insert_rows(connection, Response.__table__, rows, returning=True).all()
    erased = _erased_since_read(connection, {delivery.contact_id for _, delivery, _, _ in context.values()})
    if erased:
        dropped = [response_id for response_id, key in inserted if context[key][1].contact_id in erased]
        connection.execute(delete(Response.__table__).where(Response.__table__.c.id.in_(dropped)))
        inserted = [(response_id, key) for response_id, key in inserted if context[key][1].contact_id not in erased]
    events, raises = [], defaultdict(float)
    for response_id, key in sorted(inserted, key=lambda row: row[0]):
        record, delivery, link, reason = context[key]
        properties = _event_properties(delivery, link, reason)
        events.append(timeline_event_row(delivery.contact_id, "click", response_id, record.occurred_at, properties))
        if reason is None and delivery.profiling:
            for tag, weight in learning.usable_weights(link.interests):
                raises[(delivery.contact_id, tag)] += learning.CLICK_POINTS * weight
    if events:
        _insert_rows(connection, Event.__table__, events, returning=False)
    learning.raise_scores(session, raises, now=now, half_life_days=half_life_days)
    return len(inserted)
