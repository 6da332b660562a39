"""When an event can have happened: the one rule for every time that comes from outside.

Imported events (``occurred_at``) and reported conversions alike are refused when
they lie more than CLOCK_SKEW ahead of the server's clock (a mistyped year such
as 9999 would keep a contact a "recent buyer" in every "last N days" segment
for years) or before EARLIEST (0001-01-01 is a placeholder, not a purchase).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

CLOCK_SKEW = timedelta(minutes=5)  # a time this far ahead is the sender's clock running fast, not the future
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)


def implausible(moment: datetime, now: datetime) -> str | None:
    """Why the aware ``moment`` cannot be when an event happened, seen at the aware ``now``; None if it can be."""
    if moment > now + CLOCK_SKEW:
        minutes = CLOCK_SKEW.total_seconds() / 60
        return f"{moment.isoformat()} is in the future (more than {minutes:g} minutes ahead of the server's clock)"
    if moment < EARLIEST:
        return f"{moment.isoformat()} is before {EARLIEST:%Y-%m-%d}, the earliest time Patron accepts"
    return None
