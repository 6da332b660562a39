"""A person's data on request (GDPR articles 15 and 17): export the audience's record of them, or erase it.

This module holds the audience's part: the profile, identities, events,
interests, consents and suppressions. The messages sent to the person
(deliveries, responses) belong to ``delivery``/``campaigns``; ``campaigns.privacy``
puts both together for the ``patron contacts export`` and ``erase`` commands.

Erasure keeps one thing: an ``Erasure`` row holding the SHA-256 digest of the
normalized address, never the address itself. Every way an address comes back
is checked against it: imports reject the rows (``segments.imports.resolve``),
and planning and the send-time re-check skip the address (``delivery.ledger``).
The contact row itself stays as an anonymous tombstone (status ``deleted``,
every personal field emptied): the delivery ledger's rows point at it, so each
run's counts stay true, and planning never selects a deleted contact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, inspect, select
from sqlalchemy.orm import Session

from segments.db import utcnow
from segments.imports.values import BadValue
from segments.imports.values import email as normalize_email
from segments.interests import decayed_score
from segments.models import ERASED, Consent, Contact, Erasure, Event, Identity, Interest, Suppression

ERASED_REASON = "erased on request: this address must never be stored or mailed again"


def canonical(address: str) -> str:
    """``address`` in Patron's canonical form; an address that is not valid is only trimmed and lower-cased.

    Raises nothing: a stored address that today's checks refuse still gets a stable digest.
    """
    try:
        return normalize_email(address)
    except BadValue:
        return address.strip().lower()


def email_digest(address: str) -> str:
    """The SHA-256 hex digest of the normalized ``address``: what an ``Erasure`` keeps."""
    return hashlib.sha256(canonical(address).encode("utf-8")).hexdigest()


def erased_emails(connection_or_session, emails: Iterable[str]) -> set[str]:
    """Those of ``emails`` whose digest is erased: one query for the lot (digests are computed here)."""
    by_digest: dict[str, list[str]] = {}
    for address in emails:
        if address:
            by_digest.setdefault(email_digest(address), []).append(address)
    if not by_digest:
        return set()
    table = Erasure.__table__
    found = connection_or_session.execute(
        select(table.c.email_digest).where(table.c.email_digest.in_(list(by_digest)))
    ).scalars()
    return {address for digest in found for address in by_digest[digest]}


def as_record(row, *, leave_out: Iterable[str] = ()) -> dict[str, Any]:
    """Every column of an ORM ``row`` as a JSON-ready dict (times in ISO 8601), but those in ``leave_out``.

    Exports read the columns from the model, so a column added later is exported without anyone remembering to.
    """
    record = {}
    for column in inspect(row).mapper.column_attrs:
        if column.key not in leave_out:
            value = getattr(row, column.key)
            record[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return record


def find_contact(session: Session, address: str) -> Contact | None:
    """The contact whose email is ``address`` (normalized first), if any."""
    return session.scalar(select(Contact).where(Contact.email == canonical(address)))


def export_audience(session: Session, address: str, *, half_life_days: float, now: datetime | None = None) -> dict:
    """Everything the audience holds about ``address``: a JSON-ready dict.

    Keys: ``email`` (normalized), ``erased`` (bool: an Erasure exists), ``contact`` (the profile or None),
    ``identities``, ``events``, ``interests`` (raw ``score``, its ``updated_at`` and the ``decayed`` score at
    ``now``), ``consents``, ``suppressions``. Times are ISO 8601 in UTC.
    """
    now = now or utcnow()
    address = canonical(address)
    contact = find_contact(session, address)
    suppressions = session.scalars(select(Suppression).where(Suppression.email == address)).all()
    result: dict[str, Any] = {
        "email": address,
        "erased": session.get(Erasure, email_digest(address)) is not None,
        "contact": None,
        "identities": [],
        "events": [],
        "interests": [],
        "consents": [],
        "suppressions": [as_record(s, leave_out=("email",)) for s in suppressions],
    }
    if contact is None:
        return result
    result["contact"] = as_record(contact)
    mine = {"contact_id": contact.id}
    result["identities"] = [
        as_record(i, leave_out=("id", "contact_id"))
        for i in session.scalars(select(Identity).filter_by(**mine).order_by(Identity.id))
    ]
    result["events"] = [
        as_record(e, leave_out=("id", "contact_id"))
        for e in session.scalars(select(Event).filter_by(**mine).order_by(Event.occurred_at, Event.id))
    ]
    result["interests"] = [
        {
            **as_record(i, leave_out=("contact_id",)),
            "decayed": decayed_score(i.score, i.updated_at, now, half_life_days),
        }
        for i in session.scalars(select(Interest).filter_by(**mine).order_by(Interest.tag))
    ]
    result["consents"] = [
        as_record(c, leave_out=("contact_id",))
        for c in session.scalars(select(Consent).filter_by(**mine).order_by(Consent.purpose))
    ]
    return result


@dataclass
class AudienceErasure:
    """What erasing an address removed from the audience."""

    email_digest: str
    contact_id: int | None
    events: int
    suppressions: int


def erase_audience(session: Session, address: str) -> AudienceErasure:
    """Erase ``address`` from the audience; idempotent. Flushes, never commits.

    Deletes the contact's events, interests, consents and identities and the address's suppression rows,
    empties the contact's personal fields (it stays as a ``deleted`` tombstone, see the module docstring)
    and records the ``Erasure`` digest, which from then on keeps the address out of imports and sends.
    """
    address = canonical(address)
    digest = email_digest(address)
    contact = find_contact(session, address)
    events = 0
    if contact is not None:
        events = session.execute(delete(Event).where(Event.contact_id == contact.id)).rowcount
        for model in (Interest, Consent, Identity):
            session.execute(delete(model).where(model.contact_id == contact.id))
        contact.email = contact.first_name = contact.last_name = contact.locale = contact.timezone = None
        contact.attributes = {}
        contact.frequency_cap = contact.locale_chosen_at = None
        contact.status = ERASED
        session.expire(contact, ["identities", "interests", "consents"])
    suppressions = session.execute(delete(Suppression).where(Suppression.email == address)).rowcount
    if session.get(Erasure, digest) is None:
        session.add(Erasure(email_digest=digest, created_at=utcnow()))
    session.flush()
    return AudienceErasure(digest, contact.id if contact else None, events, suppressions)
