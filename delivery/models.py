"""The delivery ledger, the blocks each contact was shown, and the links tracked."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from segments.db import Base, BigId, JsonDoc, UTCDateTime, utcnow
from segments.models import EMAIL_LENGTH, LOCALE_LENGTH

# pending -> sending -> sent | failed | skipped | unknown
STATUSES = ("pending", "sending", "sent", "failed", "skipped", "unknown")


class Delivery(Base):
    """One message of one run to one contact: written before the message goes out."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("run_id", "contact_id"),
        Index("ix_deliveries_run_id_status", "run_id", "status"),
        # Frequency caps count a contact's recent messages.
        Index("ix_deliveries_contact_id_sent_at", "contact_id", "sent_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(String(EMAIL_LENGTH))
    message_id: Mapped[str | None] = mapped_column(String(255))
    locale: Mapped[str | None] = mapped_column(String(LOCALE_LENGTH))
    blocks: Mapped[list[int] | None] = mapped_column(JsonDoc)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ShownBlock(Base):
    """A block a contact has been sent, so no later run sends it again."""

    __tablename__ = "shown_blocks"

    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    block_id: Mapped[int] = mapped_column(ForeignKey("blocks.id", ondelete="CASCADE"), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(BigId)
    shown_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Link(Base):
    """A URL registered at send time, in the block it appears in; a tracked click may redirect only here."""

    __tablename__ = "links"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    # The block version the link is in (None: the layout's own), so a click tells which block it was.
    block_version_id: Mapped[int | None] = mapped_column(BigId)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
