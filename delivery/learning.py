"""The closed loop: a human click or a conversion raises the contact's interests in what they responded to.

A block version carries interest weights ({tag: weight}); its links remember them (``Link.interests``).
A human click raises each tag by ``CLICK_POINTS × weight``, a conversion attributed to a click raises
the clicked block's tags by ``CONVERSION_POINTS × weight``. The stored score is first decayed to now
with the configured half-life (``segments.interests``: the same formula segments and selection read
with), then raised, and kept within ``[0, MAX_SCORE]``; ``updated_at`` becomes now. One upsert per
response, on SQLite and PostgreSQL alike.

Who may be taught is the caller's check (``delivery.responses``): machine-made responses and contacts
without a granted ``profiling`` consent never reach ``raise_interests``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cache

from sqlalchemy import Float, bindparam, func, literal
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from segments.db import UTCDateTime, as_recordset, recordset_insert
from segments.interests import MAX_SCORE, decayed_score_sql
from segments.models import TAG_LENGTH, Interest

CLICK_POINTS = 1.0
CONVERSION_POINTS = 5.0
ROW = ("contact_id", "tag", "score", "updated_at")  # an upserted interest


def clamp(score: float) -> float:
    """``score`` kept within ``[0, MAX_SCORE]``."""
    return min(max(score, 0.0), MAX_SCORE)


def raise_interests(
    session: Session,
    contact_id: int,
    weights: Mapping[str, float] | None,
    points: float,
    *,
    now: datetime,
    half_life_days: float,
) -> None:
    """Raise ``contact_id``'s score of each tag in ``weights`` by ``points × weight``, decayed first, clamped.

    ``weights`` is a link's ``interests`` ({tag: weight}); tags that are not strings of at most
    TAG_LENGTH characters and weights that are not positive numbers are ignored. ``now`` is
    timezone-aware. One ``INSERT … ON CONFLICT DO UPDATE``, executed for all the tags at once.
    """
    raise_scores(
        session,
        {(contact_id, tag): points * weight for tag, weight in usable_weights(weights)},
        now=now,
        half_life_days=half_life_days,
    )


def usable_weights(weights: Mapping[str, float] | None) -> list[tuple[str, float]]:
    """The ``(tag, weight)`` pairs of a link's ``interests`` that can teach: string tags of at most
    TAG_LENGTH characters, positive number weights."""
    usable = []
    for tag, weight in (weights or {}).items():
        if not isinstance(tag, str) or not tag or len(tag) > TAG_LENGTH:
            continue
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            continue
        usable.append((tag, float(weight)))
    return usable


def raise_scores(
    session: Session, raises: Mapping[tuple[int, str], float], *, now: datetime, half_life_days: float
) -> None:
    """Raise each ``(contact_id, tag)`` score by its positive amount, decayed first, clamped; one upsert for all.

    Each key appears once, so one statement may carry many contacts: raising by a and then by b at one
    moment is raising by a + b (both are positive, so the clamp at MAX_SCORE agrees).
    """
    rows = [
        {"contact_id": contact_id, "tag": tag, "score": clamp(amount), "updated_at": now}
        for (contact_id, tag), amount in raises.items()
    ]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    statement = _upsert(dialect, float(half_life_days))
    if dialect == "postgresql":  # one statement for all the rows (executemany would run one per row)
        session.execute(statement, {**as_recordset(rows, ROW), "now": now})
    else:
        session.execute(statement, [{**row, "now": now} for row in rows])


@cache
def _upsert(dialect: str, half_life_days: float):
    """The raise as one ``INSERT … ON CONFLICT DO UPDATE``, built once per dialect and half-life: on PostgreSQL
    of one JSON recordset (every row in one execution), on SQLite executed once per row."""
    table = Interest.__table__
    insert = recordset_insert(table, ROW) if dialect == "postgresql" else sqlite_insert(table)
    now = bindparam("now", type_=UTCDateTime())
    decayed = decayed_score_sql(
        table.c.score, table.c.updated_at, dialect_name=dialect, now=now, half_life_days=half_life_days
    )
    raised = decayed + insert.excluded.score  # excluded.score: this response's points × weight, within bounds
    low, high = literal(0.0, Float()), literal(MAX_SCORE, Float())
    if dialect == "postgresql":
        bounded = func.least(func.greatest(raised, low), high)
    else:  # SQLite's multi-argument min() and max() are its scalar least and greatest
        bounded = func.min(func.max(raised, low), high)
    return insert.on_conflict_do_update(
        index_elements=[table.c.contact_id, table.c.tag],
        set_={"score": bounded, "updated_at": insert.excluded.updated_at},
    )


def top_interest(weights: Mapping[str, float] | None) -> str | None:
    """The tag with the highest weight (ties: the first alphabetically), or None for no weights."""
    usable = [(tag, weight) for tag, weight in (weights or {}).items() if isinstance(weight, (int, float))]
    if not usable:
        return None
    return min(usable, key=lambda item: (-item[1], item[0]))[0]
