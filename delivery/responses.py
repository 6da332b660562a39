"""Responses: what comes back from a message (open, click, unsubscribe) or from the contact (conversion).

Each response is one ``Response`` row and one ``Event`` on the contact's timeline (channel ``email``,
source ``patron``, external id ``response:<id>``). Services take a Session and ids, may flush, never commit.
See docs/responses.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from delivery.models import Response


@dataclass(frozen=True)
class Client:
    """Who asked: from the HTTP request."""

    user_agent: str | None = None
    ip: str | None = None


class ConversionError(ValueError):
    """A conversion that cannot be recorded; the message names the field."""


def record_open(
    session: Session, delivery_id: int, client: Client, *, half_life_days: float, now: datetime | None = None
) -> Response | None:
    """Record an open of a delivery; None when there is no such sent delivery."""
    raise NotImplementedError


def record_click(
    session: Session,
    delivery_id: int,
    link_id: int,
    client: Client,
    *,
    half_life_days: float,
    now: datetime | None = None,
) -> str | None:
    """Record a click and return the registered URL to redirect to; None when link or delivery is unknown."""
    raise NotImplementedError


def unsubscribe(
    session: Session, delivery_id: int, *, source: str, client: Client | None = None, now: datetime | None = None
) -> bool:
    """Suppress the delivery's address and withdraw marketing consent; idempotent; False if no such delivery."""
    raise NotImplementedError


def record_conversion(
    session: Session,
    *,
    order_id: str,
    value: str | Decimal,
    currency: str,
    email: str | None = None,
    contact_id: int | None = None,
    delivery_id: int | None = None,
    occurred_at: datetime | None = None,
    window_days: float,
    half_life_days: float,
    source: str,
) -> tuple[Response, bool]:
    """(response, created): a conversion, idempotent on ``order_id``; ConversionError for bad input."""
    raise NotImplementedError
