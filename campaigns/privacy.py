"""A person's whole record, across the audience and the messages sent to them: export it, or erase it.

``segments.privacy`` owns the audience's part; this module adds what the
ledger holds (deliveries with their campaign's name, responses, blocks shown),
which only a package that sees campaigns and delivery can put together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from campaigns.models import Campaign, Run
from delivery.models import Delivery, Response, ShownBlock
from segments.models import Contact
from segments.privacy import as_record, erase_audience, export_audience, find_contact


def export_person(session: Session, address: str, *, half_life_days: float, now: datetime | None = None) -> dict:
    """Everything Patron holds about ``address`` as a JSON-ready dict (GDPR article 15).

    The audience's keys (see ``segments.privacy.export_audience``) plus ``deliveries`` (each message with its
    campaign's id and name, run, status, locale, block versions, times) and ``responses`` (opens, clicks,
    unsubscribes, bounces, complaints and conversions, with their user agent and detail).
    """
    result = export_audience(session, address, half_life_days=half_life_days, now=now)
    result["deliveries"], result["responses"] = [], []
    contact = find_contact(session, address)
    if contact is None:
        return result
    rows = session.execute(
        select(Delivery, Campaign.id, Campaign.name)
        .join(Run, Run.id == Delivery.run_id)
        .join(Campaign, Campaign.id == Run.campaign_id)
        .where(Delivery.contact_id == contact.id)
        .order_by(Delivery.id)
    )
    result["deliveries"] = [
        {**as_record(d, leave_out=("contact_id",)), "campaign": {"id": campaign_id, "name": name}}
        for d, campaign_id, name in rows
    ]
    result["responses"] = [
        as_record(r, leave_out=("contact_id",))
        for r in session.scalars(select(Response).where(Response.contact_id == contact.id).order_by(Response.id))
    ]
    return result


@dataclass
class Erased:
    """What ``erase_person`` did, as counts: printed by the CLI, one JSON object with ``--json``."""

    email_digest: str
    contact: int | None
    events: int
    responses: int
    deliveries_anonymized: int
    suppressions: int

    def as_dict(self) -> dict:
        return asdict(self)


def erase_person(session: Session, address: str) -> Erased:
    """Erase ``address`` (GDPR article 17); idempotent; flushes, never commits.

    Deletes the contact's responses and the blocks it was shown, empties the personal fields of its ledger
    rows (email, Message-ID, and a failure's reason, which may quote the address) while keeping the rows, so
    every run's counts stay true, then erases the audience's record (``segments.privacy.erase_audience``):
    from then on only the SHA-256 digest of the address is kept, and it keeps the address out of imports and
    sends.
    """
    contact = find_contact(session, address)
    responses = deliveries = 0
    if contact is not None:
        # Held from the start (PostgreSQL): a click batch recording for this person waits, or is waited for,
        # and never leaves a response behind (delivery.clicks.record_clicks asks again after its write).
        session.execute(select(Contact.id).where(Contact.id == contact.id).with_for_update())
        own = select(Delivery.id).where(Delivery.contact_id == contact.id).scalar_subquery()
        responses = session.execute(
            delete(Response).where(or_(Response.contact_id == contact.id, Response.delivery_id.in_(own)))
        ).rowcount
        session.execute(delete(ShownBlock).where(ShownBlock.contact_id == contact.id))
        deliveries = session.execute(
            update(Delivery).where(Delivery.contact_id == contact.id).values(email=None, message_id=None)
        ).rowcount
        session.execute(
            update(Delivery).where(Delivery.contact_id == contact.id, Delivery.status != "skipped").values(reason=None)
        )
    audience = erase_audience(session, address)
    return Erased(
        email_digest=audience.email_digest,
        contact=audience.contact_id,
        events=audience.events,
        responses=responses,
        deliveries_anonymized=deliveries,
        suppressions=audience.suppressions,
    )
