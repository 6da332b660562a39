"""The audience: one profile per customer, fed from every channel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, WriteOnlyMapped, mapped_column, relationship

from segments.db import Base, BigId, JsonDoc, UTCDateTime, utcnow

# Column sizes double as import limits: a longer value is rejected, not cut.
EMAIL_LENGTH = 254  # RFC 5321 path limit
NAME_LENGTH = 100
LOCALE_LENGTH = 35  # RFC 5646 recommends room for 35
TIMEZONE_LENGTH = 64
CHANNEL_LENGTH = 32
IDENTIFIER_LENGTH = 255
TAG_LENGTH = 64
SOURCE_LENGTH = 64

CONTACT_STATUSES = ("active", "unsubscribed", "bounced", "complained", "suppressed", "deleted")
ERASED = "deleted"  # the status of an erased person's contact row, an anonymous tombstone (segments.privacy)


class Contact(Base):
    """One customer, whichever channels they reach us through."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str | None] = mapped_column(String(EMAIL_LENGTH), unique=True)
    first_name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    last_name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    locale: Mapped[str | None] = mapped_column(String(LOCALE_LENGTH), index=True)
    timezone: Mapped[str | None] = mapped_column(String(TIMEZONE_LENGTH))
    attributes: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    # The contact's own cap from the preference page, as a campaign's: {"max": 1, "days": 7}; None: no cap.
    frequency_cap: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    # When the contact chose ``locale`` themselves (the preference page); an import never overrides it then.
    locale_chosen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    identities: Mapped[list[Identity]] = relationship(back_populates="contact", cascade="all, delete-orphan")
    interests: Mapped[list[Interest]] = relationship(back_populates="contact", cascade="all, delete-orphan")
    consents: Mapped[list[Consent]] = relationship(back_populates="contact", cascade="all, delete-orphan")
    events: WriteOnlyMapped[Event] = relationship(back_populates="contact", passive_deletes=True)

    def __repr__(self) -> str:
        return f"<Contact {self.id} {self.email or '(no email)'}>"


class Identity(Base):
    """A channel's own identifier for a contact: a phone number, a loyalty card, a cookie."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("channel", "value"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(CHANNEL_LENGTH))
    value: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    contact: Mapped[Contact] = relationship(back_populates="identities")


class Event(Base):
    """Something a contact did on a channel: a purchase, a call, a page view."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "external_id"),
        # Segment conditions find events by type and time and group them by contact
        # without visiting the table (the index covers channel too).
        Index("ix_events_type_occurred_at", "type", "occurred_at", "contact_id", "channel"),
        Index("ix_events_contact_id_type", "contact_id", "type"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(CHANNEL_LENGTH))
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    properties: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    source: Mapped[str] = mapped_column(String(SOURCE_LENGTH))
    external_id: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    contact: Mapped[Contact] = relationship(back_populates="events")


class Interest(Base):
    """How much a contact cares about a tag; the score decays with a half-life when read."""

    __tablename__ = "interests"
    __table_args__ = (Index("ix_interests_tag", "tag"),)

    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(TAG_LENGTH), primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The score the last import gave (None: never imported). An import sets ``score`` only when its value
    # differs from this one, so re-importing an unchanged file keeps what clicks and purchases taught.
    imported: Mapped[float | None] = mapped_column(Float)
    # When the contact ticked or unticked this tag themselves (the preference page); imports leave it then.
    chosen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    contact: Mapped[Contact] = relationship(back_populates="interests")


# Consent purposes Patron acts on: may we email them, count their opens and clicks, choose content by interest.
MARKETING, TRACKING, PROFILING = "marketing", "tracking", "profiling"
CONSENT_PURPOSES = (MARKETING, TRACKING, PROFILING)


class Consent(Base):
    """A contact's current answer for one purpose, with the proof of how it was given."""

    __tablename__ = "consents"

    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(TAG_LENGTH), primary_key=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str | None] = mapped_column(String(SOURCE_LENGTH))
    ip: Mapped[str | None] = mapped_column(String(45))
    text_version: Mapped[str | None] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # True when the person gave this answer themselves (the preference page, an unsubscribe), not an import
    # or an operator. An import never re-grants a purpose the person withdrew themselves.
    own_choice: Mapped[bool] = mapped_column(Boolean, server_default=false())

    contact: Mapped[Contact] = relationship(back_populates="consents")


class Suppression(Base):
    """An address never to send to, kept by email so it outlives the contact."""

    __tablename__ = "suppressions"

    email: Mapped[str] = mapped_column(String(EMAIL_LENGTH), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    source: Mapped[str | None] = mapped_column(String(SOURCE_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Erasure(Base):
    """What is left of an erased person: a digest of their address, so no import or send brings them back."""

    __tablename__ = "erasures"

    email_digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 hex of the normalized email
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Segment(Base):
    """A saved, named rule tree; its members are computed when asked for."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    rules: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
