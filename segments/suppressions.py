"""Addresses never to send to. Kept by email, so they outlive a deleted contact."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from segments.db import insert_for, utcnow
from segments.models import Contact, Suppression

REASONS = ("unsubscribed", "bounced", "complained", "manual")


def status_for(reason: str) -> str:
    """The contact status a suppression reason implies."""
    return reason if reason in ("unsubscribed", "bounced", "complained") else "suppressed"


def suppress(session: Session, email: str, reason: str, source: str | None = None) -> Suppression | None:
    """Suppress ``email`` (already normalized) and mark its contact, if any; idempotent. An address suppressed
    already keeps its first reason, also when another process suppresses it at the same moment (the insert
    skips the conflict rather than failing). An address erased on request (``segments.privacy``) is kept out by
    its digest already; storing it again would undo the erasure, so nothing is stored and None is returned.
    May flush, never commits."""
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(REASONS)}, not {reason!r}")
    from segments.privacy import erased_emails  # here: privacy imports the importers, which import this module

    if erased_emails(session, [email]):
        return None
    suppression = session.get(Suppression, email)
    if suppression is None:
        values = {"email": email, "reason": reason, "source": source, "created_at": utcnow()}
        session.execute(insert_for(session, Suppression).values(values).on_conflict_do_nothing())
        suppression = session.get(Suppression, email)  # this one, or the one a concurrent process made first
    session.execute(
        update(Contact)
        .where(Contact.email == email, Contact.status == "active")
        .values(status=status_for(suppression.reason), updated_at=utcnow())
    )
    session.flush()
    return suppression


def suppressed_reasons(connection, emails) -> dict[str, str]:
    """Email → suppression reason, for those of ``emails`` that are suppressed."""
    table = Suppression.__table__
    return dict(connection.execute(select(table.c.email, table.c.reason).where(table.c.email.in_(emails))).all())
