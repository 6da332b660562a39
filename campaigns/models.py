"""Campaigns and their runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, column
from sqlalchemy.orm import Mapped, mapped_column, relationship

from segments.db import Base, BigId, JsonDoc, UTCDateTime, utcnow

# planning -> sending <-> paused -> finished | cancelled
RUN_STATES = ("planning", "sending", "paused", "finished", "cancelled")
# A run in one of these states is the campaign's active run: a campaign has at most one.
ACTIVE_STATES = ("planning", "sending", "paused")


class Campaign(Base):
    """A marketer's campaign as defined in its YAML file."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    definition: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Run(Base):
    """One send of a campaign, frozen at start: its rules and content versions never change."""

    __tablename__ = "runs"
    __table_args__ = (
        # One active run per campaign, whoever starts it (two CLIs at once, a scheduler firing twice): the
        # database refuses the second, on SQLite and PostgreSQL alike (both have partial unique indexes).
        Index(
            "uq_runs_campaign_id_active",
            "campaign_id",
            unique=True,
            sqlite_where=column("state").in_(ACTIVE_STATES),
            postgresql_where=column("state").in_(ACTIVE_STATES),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="planning")
    rules: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    content: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    note: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    planned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    campaign: Mapped[Campaign] = relationship()
