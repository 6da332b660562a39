"""The delivery ledger: one row per (run, contact), written before the message leaves.

A row moves pending -> sending -> sent | failed | skipped | unknown. Planning
writes the rows a page at a time with one ``INSERT … SELECT``; a worker claims
a few rows at once (pending -> sending, committed before the first byte goes
on the wire). Just before a message is handed to the transport, its row gets
its Message-ID (committed: :func:`mark_handed`), and its outcome is recorded
as soon as the server answers. So a row in ``sending`` without a Message-ID
was provably never sent, and one with a Message-ID may or may not have gone
out: recovery (:func:`mark_unknown`) puts the first back to pending and makes
the second ``unknown``, and only an explicit resend sends it again. The
Message-ID stays on an unknown row, for finding the message in the mail
server's logs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Interval, String, and_, bindparam, case, func, literal, literal_column, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from delivery.models import STATUSES, Delivery, ShownBlock
from segments.db import UTCDateTime, insert_for
from segments.models import Contact, Suppression
from segments.privacy import ERASED_REASON, erased_emails

UNKNOWN_REASON = "in flight when its worker stopped: it may or may not have been delivered"
FAILED_REASONS_SHOWN = 5  # the most frequent failure reasons a run's status and report list
REASON_WIDTH = 200  # characters of a failure reason they show
UNSENT_REASON = "claimed by a worker that stopped before handing it to the transport: never sent"


@dataclass(frozen=True)
class FrequencyCap:
    """At most ``limit`` messages to a contact in any ``days`` days, across campaigns."""

    limit: int
    days: float

    def since(self, now: datetime) -> datetime:
        return now - timedelta(days=self.days)

    def reason(self) -> str:
        return f"frequency cap ({self.limit} in {self.days:g} day{'' if self.days == 1 else 's'})"

    @classmethod
    def from_definition(cls, cap: dict | None) -> FrequencyCap | None:
        """The cap a campaign definition's ``frequency_cap`` ({max, days}) sets, if any."""
        return cls(cap["max"], cap["days"]) if cap else None


def _own_cap_reached(dialect: str, now: datetime) -> tuple[ColumnElement, ColumnElement]:
    """(the contact is over their own frequency cap, the reason): SQL over ``contacts``.

    ``Contact.frequency_cap`` is JSON ({"max": N, "days": D}) written by the preference page; a cap that is
    missing or not numeric caps nothing (the CASE guards the casts, so one bad row cannot fail a plan).
    """
    cap = Contact.frequency_cap
    if dialect == "postgresql":
        numeric = and_(func.jsonb_typeof(cap["max"]) == "number", func.jsonb_typeof(cap["days"]) == "number")
        limit = case((numeric, cap["max"].as_float()))
        days = case((numeric, cap["days"].as_float()))
        window = func.make_interval(0, 0, 0, 0, 0, 0, days * 86400.0, type_=Interval())  # (..., secs)
        recent_enough = Delivery.sent_at >= literal(now, UTCDateTime()) - window
    else:
        numbers = ("integer", "real")
        numeric = and_(func.json_type(cap, "$.max").in_(numbers), func.json_type(cap, "$.days").in_(numbers))
        limit = case((numeric, cap["max"].as_float()))
        days = case((numeric, cap["days"].as_float()))
        recent_enough = func.julianday(Delivery.sent_at) >= func.julianday(literal(now, UTCDateTime())) - days
    recent = (
        select(func.count())
        .where(Delivery.contact_id == Contact.id, Delivery.status == "sent", recent_enough)
        .scalar_subquery()
    )
    plural = case((days == 1, ""), else_="s")
    reason = (
        literal("your frequency cap (", String())
        + cap["max"].as_string()
        + literal(" in ", String())
        + cap["days"].as_string()
        + literal(" day", String())
        + plural
        + literal(")", String())
    )
    # CASE, not AND: the count runs only for contacts who set a cap (AND may evaluate both sides).
    return case((limit.is_not(None), recent >= limit), else_=False), reason


def _skip_reason(cap: FrequencyCap | None, now: datetime, dialect: str) -> ColumnElement:
    """Why a contact must not get the message now, or NULL: over ``contacts LEFT JOIN suppressions``.

    The campaign's cap is checked before the contact's own (``Contact.frequency_cap``); erased addresses are
    checked in Python (:func:`_erased`), as their digests cannot be computed in SQL on SQLite.
    """
    reasons = [
        (Contact.email.is_(None), "no email address"),
        (Contact.status != "active", literal("contact status: ", String()) + Contact.status),
        (Suppression.email.is_not(None), literal("suppressed: ", String()) + Suppression.reason),
    ]
    if cap is not None:
        recent = (
            select(func.count())
            .where(Delivery.contact_id == Contact.id, Delivery.status == "sent", Delivery.sent_at >= cap.since(now))
            .scalar_subquery()
        )
        reasons.append((recent >= cap.limit, literal(cap.reason(), String())))
    reasons.append(_own_cap_reached(dialect, now))
    return case(*reasons, else_=None)


def _with_suppressions(statement):
    return statement.select_from(Contact).outerjoin(Suppression, Suppression.email == Contact.email)


def _erased(session: Session, emails: dict[int, str | None]) -> dict[int, str]:
    """Contact id -> the erasure reason, for those of ``emails`` (contact id -> address) that are erased."""
    erased = erased_emails(session, [address for address in emails.values() if address])
    return {contact_id: ERASED_REASON for contact_id, address in emails.items() if address in erased}


def plan_page(
    session: Session,
    run_id: int,
    audience: ColumnElement[bool],
    *,
    after: int,
    page_size: int,
    cap: FrequencyCap | None,
    now: datetime,
) -> int | None:
    """Write the ledger rows for the next page of the audience after contact ``after``; the page's last id.

    Rows are written ``skipped`` with the reason for contacts without an address, not active, suppressed,
    over the campaign's or their own frequency cap, or whose address was erased.
    """
    skip_reason = _skip_reason(cap, now, session.get_bind().dialect.name)
    status = case((skip_reason.is_(None), "pending"), else_="skipped")
    page = (
        _with_suppressions(select(literal(run_id), Contact.id, status, skip_reason, Contact.email, literal(0)))
        .where(audience, Contact.id > after)
        .order_by(Contact.id)
        .limit(page_size)
    )
    columns = ["run_id", "contact_id", "status", "reason", "email", "attempts"]
    table = Delivery.__table__
    statement = table.insert().from_select(columns, page).returning(table.c.contact_id, table.c.status, table.c.email)
    rows = session.execute(statement).all()
    erased = _erased(session, {contact_id: email for contact_id, status, email in rows if status == "pending"})
    if erased:
        session.execute(
            update(Delivery)
            .where(Delivery.run_id == run_id, Delivery.contact_id.in_(list(erased)))
            .values(status="skipped", reason=ERASED_REASON)
        )
    return max((row[0] for row in rows), default=None)


def skip_reasons(
    session: Session, contact_ids: Sequence[int], cap: FrequencyCap | None, now: datetime
) -> dict[int, str]:
    """The claimed contacts that must be skipped after all, checked again as planning did: id -> reason."""
    reason = _skip_reason(cap, now, session.get_bind().dialect.name)
    rows = session.execute(
        _with_suppressions(select(Contact.id, reason, Contact.email)).where(Contact.id.in_(contact_ids))
    ).all()
    skips = {contact_id: why for contact_id, why, _ in rows if why is not None}
    skips.update(_erased(session, {contact_id: email for contact_id, why, email in rows if why is None}))
    return skips


def last_planned(session: Session, run_id: int) -> int:
    """The highest contact id planned so far (0 before the first page): planning resumes after it."""
    return session.scalar(select(func.max(Delivery.contact_id)).where(Delivery.run_id == run_id)) or 0


def pending_ranges(session: Session, run_id: int, size: int) -> Iterable[tuple[int, int]]:
    """(first id, last id) of each run of ``size`` pending rows, read a page at a time."""
    after = 0
    while True:
        ids = session.scalars(
            select(Delivery.id)
            .where(Delivery.run_id == run_id, Delivery.status == "pending", Delivery.id > after)
            .order_by(Delivery.id)
            .limit(size)
        ).all()
        if not ids:
            return
        yield ids[0], ids[-1]
        after = ids[-1]


def claim(session: Session, run_id: int, first: int, last: int, limit: int, now: datetime) -> list[tuple[int, int]]:
    """Mark up to ``limit`` pending rows in [first, last] as sending; their (delivery id, contact id)."""
    ids = (
        select(Delivery.id)
        .where(Delivery.run_id == run_id, Delivery.status == "pending", Delivery.id.between(first, last))
        .order_by(Delivery.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        ids = ids.with_for_update(skip_locked=True)
    claimed = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids.scalar_subquery()), Delivery.status == "pending")
        .values(status="sending", claimed_at=now, attempts=Delivery.attempts + 1, message_id=None)
        .returning(Delivery.id, Delivery.contact_id)
    ).all()
    return sorted((row[0], row[1]) for row in claimed)


_HANDED = (
    update(Delivery.__table__)
    .where(Delivery.__table__.c.id == bindparam("row_id"), Delivery.__table__.c.status == "sending")
    .values(message_id=bindparam("new_message_id"))
)


def mark_handed(session: Session, handed: Sequence[tuple[int, str]]) -> None:
    """Note on claimed rows, as (delivery id, Message-ID), that their messages go to the transport now.

    The caller commits before the first of them is sent: from then on a crash leaves them ``unknown``.
    """
    if handed:
        session.connection().execute(_HANDED, [{"row_id": row, "new_message_id": mid} for row, mid in handed])


def release(session: Session, delivery_ids: Sequence[int]) -> int:
    """Put claimed rows back to pending; how many. Only for rows the caller knows it never handed to the
    transport (even if their Message-ID was committed already: a batch interrupted in between)."""
    if not delivery_ids:
        return 0
    return session.execute(
        update(Delivery)
        .where(Delivery.id.in_(delivery_ids), Delivery.status == "sending")
        .values(status="pending", reason="not tried: the batch stopped", message_id=None)
    ).rowcount


_FINISH = (
    update(Delivery.__table__)
    .where(Delivery.__table__.c.id == bindparam("row_id"), Delivery.__table__.c.status == "sending")
    .values(
        status=bindparam("new_status"),
        reason=bindparam("new_reason"),
        email=func.coalesce(bindparam("new_email", type_=String()), Delivery.__table__.c.email),
        message_id=bindparam("new_message_id"),
        locale=bindparam("new_locale"),
        blocks=bindparam("new_blocks", type_=Delivery.__table__.c.blocks.type),
        sent_at=bindparam("new_sent_at", type_=Delivery.__table__.c.sent_at.type),
    )
)


@dataclass
class Outcome:
    """What happened to one claimed row."""

    delivery_id: int
    status: str
    reason: str | None = None
    email: str | None = None
    message_id: str | None = None
    locale: str | None = None
    blocks: list[int] | None = None
    block_ids: Sequence[int] = ()
    contact_id: int | None = None
    sent_at: datetime | None = None
    refused: bool = False  # failed on the server's 5xx reply: a hard bounce (delivery.bounces.record_refusals)


def record(session: Session, outcomes: Sequence[Outcome]) -> None:
    """Write the outcomes of claimed rows in bulk, and remember the blocks each contact was sent."""
    if not outcomes:
        return
    assert all(o.status in STATUSES and o.status not in ("sending",) for o in outcomes)
    session.connection().execute(
        _FINISH,
        [
            {
                "row_id": o.delivery_id,
                "new_status": o.status,
                "new_reason": o.reason,
                "new_email": o.email,
                "new_message_id": o.message_id,
                "new_locale": o.locale,
                "new_blocks": o.blocks,
                "new_sent_at": o.sent_at,
            }
            for o in outcomes
        ],
    )
    shown = [
        {"contact_id": o.contact_id, "block_id": block, "delivery_id": o.delivery_id, "shown_at": o.sent_at}
        for o in outcomes
        if o.status == "sent"
        for block in o.block_ids
    ]
    if shown:
        statement = insert_for(session, ShownBlock.__table__)
        statement = statement.on_conflict_do_update(
            index_elements=["contact_id", "block_id"],
            set_={"delivery_id": statement.excluded.delivery_id, "shown_at": statement.excluded.shown_at},
        )
        session.connection().execute(statement, shown)


def mark_unknown(session: Session, run_id: int) -> int:
    """Rows a dead worker left in flight become ``unknown``; how many. Those it claimed but never handed to
    the transport (no Message-ID yet) go back to pending: they cannot have been sent."""
    in_flight = (Delivery.run_id == run_id, Delivery.status == "sending")
    session.execute(
        update(Delivery).where(*in_flight, Delivery.message_id.is_(None)).values(status="pending", reason=UNSENT_REASON)
    )
    handed = update(Delivery).where(*in_flight, Delivery.message_id.is_not(None))
    return session.execute(handed.values(status="unknown", reason=UNKNOWN_REASON)).rowcount


def requeue_unknown(session: Session, run_id: int) -> int:
    """Put ``unknown`` rows back to pending, to be sent again on purpose; how many."""
    return session.execute(
        update(Delivery)
        .where(Delivery.run_id == run_id, Delivery.status == "unknown")
        .values(status="pending", reason="resent on request after an unknown outcome")
    ).rowcount


def skip_pending(session: Session, run_id: int, reason: str) -> int:
    """Skip every row still pending (a cancelled run); how many."""
    return session.execute(
        update(Delivery)
        .where(Delivery.run_id == run_id, Delivery.status == "pending")
        .values(status="skipped", reason=reason)
    ).rowcount


def counts(session: Session, run_id: int) -> dict[str, int]:
    """Rows per status, every status present, plus ``total``."""
    return counts_by_run(session, [run_id])[run_id]


def counts_by_run(session: Session, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Each run's rows per status, every status present, plus ``total``: one GROUP BY for all the runs."""
    result = {run_id: dict.fromkeys(STATUSES, 0) for run_id in run_ids}
    rows = session.execute(
        select(Delivery.run_id, Delivery.status, func.count())
        .where(Delivery.run_id.in_(run_ids))
        .group_by(Delivery.run_id, Delivery.status)
    )
    for run_id, status, count in rows:
        result[run_id][status] = count
    for per_status in result.values():
        per_status["total"] = sum(per_status[s] for s in STATUSES)
    return result


def skipped_by_reason(session: Session, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Each run's skipped rows counted per reason, the most frequent reason first."""
    return reasons_by_run(session, run_ids, "skipped")


def failed_by_reason(session: Session, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Each run's ``FAILED_REASONS_SHOWN`` most frequent failure reasons, each cut to ``REASON_WIDTH`` characters.

    A failure's reason can name its recipient (a server's refusal), so there can be as many as rows: the rest
    of the run's failed rows is its ``failed`` count minus these.
    """
    return reasons_by_run(session, run_ids, "failed", limit=FAILED_REASONS_SHOWN, width=REASON_WIDTH)


def reasons_by_run(
    session: Session, run_ids: Sequence[int], status: str, *, limit: int | None = None, width: int | None = None
) -> dict[int, dict[str, int]]:
    """Each run's rows of ``status`` counted per reason, the most frequent first: one GROUP BY for all the runs.

    ``width``: reasons are grouped by their first ``width`` characters, and one that was longer ends in "…".
    ``limit``: only each run's ``limit`` most frequent reasons (ranked in SQL). A row without one counts under
    "no reason recorded".
    """
    result: dict[int, dict[str, int]] = {run_id: {} for run_id in run_ids}
    count = func.count()
    # Inline numbers, not parameters: PostgreSQL must see the SELECT and GROUP BY expressions as one.
    reason = (
        Delivery.reason
        if width is None
        else func.substr(Delivery.reason, literal_column("1"), literal_column(str(int(width))))
    )
    ranked = (
        select(
            Delivery.run_id.label("run_id"),
            reason.label("reason"),
            count.label("n"),
            func.max(func.length(Delivery.reason)).label("longest"),
            func.row_number().over(partition_by=Delivery.run_id, order_by=(count.desc(), reason)).label("rank"),
        )
        .where(Delivery.run_id.in_(run_ids), Delivery.status == status)
        .group_by(Delivery.run_id, reason)
        .subquery()
    )
    query = select(ranked.c.run_id, ranked.c.reason, ranked.c.n, ranked.c.longest).order_by(
        ranked.c.run_id, ranked.c.rank
    )
    if limit is not None:
        query = query.where(ranked.c.rank <= limit)
    for run_id, text, n, longest in session.execute(query):
        cut = width is not None and longest is not None and longest > width
        result[run_id][(text + "…" if cut else text) if text is not None else "no reason recorded"] = n
    return result


def in_flight(session: Session, run_id: int) -> bool:
    """Whether any row of the run is still pending or sending."""
    return (
        session.scalar(
            select(Delivery.id).where(Delivery.run_id == run_id, Delivery.status.in_(("pending", "sending"))).limit(1)
        )
        is not None
    )
