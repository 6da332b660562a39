"""Packs, layouts, blocks and their immutable versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from segments.db import Base, BigId, JsonDoc, UTCDateTime, utcnow
from segments.models import LOCALE_LENGTH

KEY_LENGTH = 64


class Pack(Base):
    """A set of layouts and blocks an agency delivered as one directory."""

    __tablename__ = "packs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(KEY_LENGTH), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    default_locale: Mapped[str] = mapped_column(String(LOCALE_LENGTH))
    strings: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Layout(Base):
    """An email's frame: campaigns name it by key; its content lives in versions."""

    __tablename__ = "layouts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(KEY_LENGTH), unique=True)
    pack_id: Mapped[int] = mapped_column(ForeignKey("packs.id"))
    current_version_id: Mapped[int | None] = mapped_column(BigId)

    pack: Mapped[Pack] = relationship()


class LayoutVersion(Base):
    """One layout's HTML, text and CSS as imported; never changed once written."""

    __tablename__ = "layout_versions"
    __table_args__ = (UniqueConstraint("layout_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    layout_id: Mapped[int] = mapped_column(ForeignKey("layouts.id"))
    version: Mapped[int] = mapped_column(Integer)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    css: Mapped[str] = mapped_column(Text, default="")
    slots: Mapped[list[str]] = mapped_column(JsonDoc)
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    layout: Mapped[Layout] = relationship()


class Block(Base):
    """A piece of content for a slot, in one locale; its content lives in versions."""

    __tablename__ = "blocks"
    __table_args__ = (UniqueConstraint("pack_id", "key", "locale"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    pack_id: Mapped[int] = mapped_column(ForeignKey("packs.id"))
    key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    locale: Mapped[str] = mapped_column(String(LOCALE_LENGTH))
    current_version_id: Mapped[int | None] = mapped_column(BigId)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    pack: Mapped[Pack] = relationship()


class BlockVersion(Base):
    """One block's content and targeting as imported; never changed once written."""

    __tablename__ = "block_versions"
    __table_args__ = (UniqueConstraint("block_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    block_id: Mapped[int] = mapped_column(ForeignKey("blocks.id"))
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    interests: Mapped[dict[str, float]] = mapped_column(JsonDoc)
    slots: Mapped[list[str]] = mapped_column(JsonDoc)
    tags: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str | None] = mapped_column(String(300))
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    block: Mapped[Block] = relationship()


class InlinedPart(Base):
    """A layout or block version with a stylesheet inlined: premailer's work, done once for every worker and run."""

    __tablename__ = "inlined_parts"

    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # "layout" or "block"
    version_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    css_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    html: Mapped[str | None] = mapped_column(Text)  # None while the worker that claimed it is inlining
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
