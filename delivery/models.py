"""The delivery ledger, the blocks each contact was shown, and the links tracked."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from segments.db import Base, BigId, JsonDoc, UTCDateTime, utcnow
from segments.models import EMAIL_LENGTH, IDENTIFIER_LENGTH, LOCALE_LENGTH

# pending -> sending -> sent | failed | skipped | unknown
STATUSES = ("pending", "sending", "sent", "failed", "skipped", "unknown")
# What can come back: from a message (all but conversion always name their delivery) or from the contact.
RESPONSE_KINDS = ("open", "click", "unsubscribe", "bounce", "complaint", "conversion")
BOUNCE_TYPES = ("hard", "soft")
MACHINE_REASONS = ("apple_mpp", "scanner", "prefetch", "bot")
# A layout link has no weights: SQL NULL, not the JSON value null, so "has weights" is one IS NOT NULL.
WEIGHTS = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


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
    # That block version's interest weights ({tag: weight}) when registered: what a human click teaches.
    interests: Mapped[dict[str, float] | None] = mapped_column(WEIGHTS)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Response(Base):
    """What came back: an open, click, unsubscribe, bounce or complaint on one message, or a conversion.

    Every response also becomes an ``Event`` on the contact's timeline (channel ``email``); this table is
    the ledger's side of it, indexed for reports by run and for attribution by contact and time.
    ``external_id`` makes a response idempotent where its source has an id: a conversion's order id, a
    bounce message's own digest. ``value_minor`` is a conversion's value in the currency's minor units
    (ISO 4217 via Babel: cents for EUR, yen for JPY).
    """

    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("kind", "external_id"),
        Index("ix_responses_run_id_kind", "run_id", "kind"),
        Index("ix_responses_delivery_id", "delivery_id"),
        Index("ix_responses_contact_id_kind_occurred_at", "contact_id", "kind", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    link_id: Mapped[int | None] = mapped_column(BigId)
    block_version_id: Mapped[int | None] = mapped_column(BigId)
    machine: Mapped[bool] = mapped_column(Boolean, default=False)
    machine_reason: Mapped[str | None] = mapped_column(String(16))  # one of MACHINE_REASONS
    bounce_type: Mapped[str | None] = mapped_column(String(16))  # one of BOUNCE_TYPES
    status: Mapped[str | None] = mapped_column(String(16))  # a bounce's enhanced status code (RFC 3463)
    external_id: Mapped[str | None] = mapped_column(String(IDENTIFIER_LENGTH))
    value_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict | None] = mapped_column(JsonDoc)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
