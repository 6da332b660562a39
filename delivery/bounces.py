"""Bounces, complaints and the mailto unsubscribe: what comes back to the bounce mailbox, and what it changes.

:func:`process_message` takes one raw message (from a Maildir or the webhook), reads it with
:func:`delivery.dsn.read_report`, ties it to the ledger row it is about, and applies it:

- hard bounce: the address is suppressed at once (reason ``bounced``);
- soft bounce: suppressed once the contact has ``soft_limit`` soft bounces within ``soft_days``;
- complaint (ARF): suppressed at once (reason ``complained``);
- a mail to a delivery's mailto unsubscribe address: :func:`delivery.responses.unsubscribe`, as the one-click POST;
- delayed, auto-reply, unrecognized: nothing changes; the result says what it was;
- about a message whose person was erased since (``delivery.responses.answerable``): nothing changes, and
  the result says so.

A message is tied to its row by VERP first (``bounces+ID-TOKEN@domain``, the envelope sender the message
went out with, verified by its token), else by the original's Message-ID. A message tied to no row is
classified and reported but changes nothing: only a signed address or our own Message-ID proves the
report is about a message Patron sent. Each applied message records a ``Response`` and an ``Event``
(channel ``email``, source ``patron``) and is idempotent: its ``external_id`` is the SHA-256 of its bytes.

:func:`record_refusals` makes a 5xx reply at send time a hard bounce too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from delivery.dsn import Report, read_report
from delivery.models import Delivery, Response
from delivery.responses import campaign_of, is_answerable, timeline_event, unsubscribe
from delivery.tracking import LinkSigner
from segments.db import insert_for, utcnow
from segments.suppressions import suppress

KINDS = ("hard", "soft", "complaint", "auto_reply", "unsubscribe", "delayed", "unrecognized")
SOFT_LIMIT = 3  # soft bounces ...
SOFT_DAYS = 30.0  # ... within this many days suppress the address
_STATUS = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")


@dataclass(frozen=True)
class BounceResult:
    """What one message was and what it matched.

    ``kind`` is one of :data:`KINDS`; ``status`` an RFC 3463 enhanced code ("5.1.1") or None;
    ``delivery_id`` the ledger row it matched, or None; ``reason`` says why, when nothing changed.
    """

    name: str | None
    kind: str
    recipient: str | None = None
    status: str | None = None
    delivery_id: int | None = None
    reason: str | None = None

    @property
    def file(self) -> str | None:
        return self.name

    def as_json(self) -> dict:
        """The result as JSON-ready data: file, recipient, status, kind, delivery_id, reason."""
        return {
            "file": self.name,
            "recipient": self.recipient,
            "status": self.status,
            "kind": self.kind,
            "delivery_id": self.delivery_id,
            "reason": self.reason,
        }


def process_message(
    session: Session,
    raw: bytes,
    *,
    signer: LinkSigner,
    source: str,
    name: str | None = None,
    now: datetime | None = None,
    soft_limit: int = SOFT_LIMIT,
    soft_days: float = SOFT_DAYS,
) -> BounceResult:
    """Classify one raw message from the bounce mailbox, apply it to the audience, and say what it was.

    ``source`` names where it came from ("maildir", "webhook") in suppressions; ``name`` (a file name)
    is echoed in the result. Never raises on a hostile message (it is ``unrecognized``, with the reason);
    may flush, never commits. Processing the same bytes again changes nothing.
    """
    now = now or utcnow()
    report = read_report(raw)
    mailto = _addressed_delivery(signer, report.addressed_to, "unsubscribe")
    if mailto is not None and report.kind not in ("hard", "soft", "complaint", "delayed"):
        report = Report("unsubscribe", addressed_to=report.addressed_to, reason="a mail to the unsubscribe address")
        delivery = session.get(Delivery, mailto)
    else:
        delivery = _match(session, signer, report)
    result = BounceResult(
        name=name,
        kind=report.kind,
        recipient=report.recipient or (delivery.email if delivery is not None else None),
        status=report.status,
        delivery_id=delivery.id if delivery is not None else None,
        reason=report.reason,
    )
    if report.kind not in ("hard", "soft", "complaint", "unsubscribe"):
        return result
    if delivery is None:
        return replace(result, reason="matches no message Patron sent: nothing changed")
    if not is_answerable(session, delivery.id):
        return replace(result, reason="the message it matches went to a person since erased: nothing changed")
    if delivery.email is None:  # its outcome not recorded yet: processing it again later applies it
        return replace(result, reason="the message it matches has no address recorded yet: nothing changed")
    if report.kind == "unsubscribe":  # the same as the one-click POST: idempotent per delivery
        unsubscribe(session, delivery.id, source=source, now=now)
        return replace(result, reason="unsubscribed: address suppressed, marketing consent withdrawn")
    digest = hashlib.sha256(raw).hexdigest()
    changed = _apply(session, delivery, report, digest, source, now, soft_limit, soft_days)
    return replace(result, reason=changed or "already processed")


def record_refusals(session: Session, refusals: Sequence[tuple[int, str]], *, now: datetime | None = None) -> None:
    """Record each (delivery id, the server's 5xx reply) from send time as a hard bounce, suppressing the address.

    The enhanced status code is read from the reply ("550 5.1.1 no such user" → 5.1.1), else 5.0.0.
    Idempotent per delivery. May flush, never commits.
    """
    now = now or utcnow()
    for delivery_id, reply in refusals:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.email is None:
            continue
        status = _STATUS.search(reply or "")
        report = Report("hard", delivery.email, status.group(0) if status else "5.0.0", " ".join(reply.split())[:500])
        _apply(session, delivery, report, f"smtp:{delivery_id}", "smtp", now, SOFT_LIMIT, SOFT_DAYS)


def _apply(session, delivery, report: Report, external_id: str, source: str, now, soft_limit, soft_days) -> str | None:
    """Record the response and its event and suppress where due; what changed, in words, or None when this
    bounce or complaint (``external_id``: its message digest, or ``smtp:<delivery id>``) was recorded already,
    by an earlier run or by a concurrent one. The response is inserted first, skipping that one conflict, so
    any other failure (the suppression's, the event's) raises and is not mistaken for a duplicate."""
    kind = "complaint" if report.kind == "complaint" else "bounce"
    bounce_type = report.kind if kind == "bounce" else None
    values = dict(
        kind=kind,
        delivery_id=delivery.id,
        run_id=delivery.run_id,
        contact_id=delivery.contact_id,
        bounce_type=bounce_type,
        status=report.status,
        external_id=external_id,
        detail={"recipient": report.recipient, "diagnostic": report.diagnostic, "source": source},
        occurred_at=now,
        received_at=now,
    )
    response_id = session.execute(
        insert_for(session, Response)
        .values(values)
        .on_conflict_do_nothing(index_elements=["kind", "external_id"])
        .returning(Response.id)
    ).scalar()
    if response_id is None:
        return None
    properties = {
        "campaign_id": campaign_of(session, delivery.run_id),
        "run_id": delivery.run_id,
        "delivery_id": delivery.id,
        "status": report.status,
    }
    if bounce_type:
        properties["bounce_type"] = bounce_type
    timeline_event(session, delivery.contact_id, kind, response_id, now, properties)
    if report.kind == "hard":
        suppress(session, delivery.email, "bounced", source)
        return "address suppressed (bounced)"
    if report.kind == "complaint":
        suppress(session, delivery.email, "complained", source)
        return "address suppressed (complained)"
    session.flush()
    soft = session.scalar(
        select(func.count(Response.id)).where(
            Response.contact_id == delivery.contact_id,
            Response.kind == "bounce",
            Response.bounce_type == "soft",
            Response.occurred_at > now - timedelta(days=soft_days),
        )
    )
    if soft >= soft_limit:
        suppress(session, delivery.email, "bounced", source)
        return f"address suppressed (bounced): {soft} soft bounces in {soft_days:g} days"
    return f"soft bounce {soft} of {soft_limit} in {soft_days:g} days"


def _addressed_delivery(signer: LinkSigner, addresses: Sequence[str], kind: str) -> int | None:
    for address in addresses:
        parsed = signer.parse_verp(address)
        if parsed is not None and parsed[0] == kind:
            return parsed[1]
    return None


def _match(session: Session, signer: LinkSigner, report: Report) -> Delivery | None:
    """The ledger row a report is about: by VERP (where it was delivered, then quoted), else by Message-ID."""
    delivery_id = _addressed_delivery(signer, [*report.addressed_to, *report.verp], "bounce")
    if delivery_id is not None:
        delivery = session.get(Delivery, delivery_id)
        if delivery is not None:
            return delivery
    if report.message_ids:
        return session.scalars(
            select(Delivery).where(Delivery.message_id.in_(report.message_ids)).order_by(Delivery.id).limit(1)
        ).first()
    return None
