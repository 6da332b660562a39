"""Bounces, complaints and the mailto unsubscribe: what comes back to the bounce mailbox, and what it changes.

:func:`process_message` takes one raw message (from a Maildir or the webhook) and returns a
:class:`BounceResult`. Part of the contract between parts: its signature does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from delivery.tracking import LinkSigner

KINDS = ("hard", "soft", "complaint", "auto_reply", "unsubscribe", "delayed", "unrecognized")


@dataclass(frozen=True)
class BounceResult:
    """What one message was and what it matched.

    ``kind`` is one of :data:`KINDS`; ``status`` an RFC 3463 enhanced code ("5.1.1") or None;
    ``delivery_id`` the ledger row it matched, or None; ``reason`` says why when nothing changed.
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
) -> BounceResult:
    """Classify one raw message from the bounce mailbox and apply it; never raises on a hostile message."""
    raise NotImplementedError("being built on wt-bounces")
