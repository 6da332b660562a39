"""Interest decay: scores are stored raw and halve every half-life when read.

A contact's interest in a tag is kept as the raw score and the time it was
last raised (``Interest.score``, ``Interest.updated_at``). Reading applies the
decay, so nothing rewrites millions of rows as time passes::

    decayed = score * 0.5 ** (age_seconds / (half_life_days * 86400))

A timestamp in the future (clock skew between writers) counts as age 0: a
score never grows by waiting. Past ``MAX_HALF_LIVES`` half-lives, or for a
stored score smaller than ``MIN_SCORE``, the decayed score is 0: far below
anything a rule can tell apart, and it keeps PostgreSQL, which raises an error
when floating-point arithmetic underflows to zero, from failing a whole count
over one ancient or microscopic score.

The same formula exists twice, in Python for code that holds the rows, and as
SQL for segment conditions; both bind ``now`` and the half-life as parameters.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, case, cast, extract, func, literal, or_
from sqlalchemy.sql.elements import ColumnElement

from segments.db import UTCDateTime

SECONDS_PER_DAY = 86400.0
MAX_HALF_LIVES = 1000.0  # 0.5 ** 1000 is about 1e-301, still a normal double
MIN_SCORE = 1e-20  # times 0.5 ** 1000 stays above the smallest double
# The top of the one scale every score lives on: learning clamps raises at it, imports refuse more.
MAX_SCORE = 100.0


def decayed_score(score: float, updated_at: datetime, now: datetime, half_life_days: float) -> float:
    """``score`` as it stands at ``now``, having halved every ``half_life_days`` since ``updated_at``."""
    half_lives = max((now - updated_at).total_seconds(), 0.0) / (half_life_days * SECONDS_PER_DAY)
    if half_lives > MAX_HALF_LIVES or abs(score) < MIN_SCORE:
        return 0.0
    return score * 0.5**half_lives


def decayed_score_sql(
    score: ColumnElement,
    updated_at: ColumnElement,
    *,
    dialect_name: str,
    now: datetime | ColumnElement,
    half_life_days: float,
) -> ColumnElement[float]:
    """The decayed score as an SQL expression for ``dialect_name`` (sqlite or postgresql).

    ``now`` is a datetime, or an SQL expression of one (a ``bindparam``, so that a statement built
    once can be run at any time).
    """
    now_param = now if isinstance(now, ColumnElement) else literal(now, UTCDateTime())
    if dialect_name == "sqlite":
        # julianday() reads SQLAlchemy's stored 'YYYY-MM-DD HH:MM:SS.ffffff' text;
        # the multi-argument max() is SQLite's scalar maximum.
        age = func.max((func.julianday(now_param) - func.julianday(updated_at)) * literal(SECONDS_PER_DAY), 0.0)
    elif dialect_name == "postgresql":
        age = func.greatest(cast(extract("epoch", now_param - updated_at), Float()), 0.0)
    else:
        raise ValueError(f"interest decay has no SQL for the {dialect_name!r} dialect")
    half_lives = age / literal(float(half_life_days) * SECONDS_PER_DAY, Float())
    negligible = or_(half_lives > literal(MAX_HALF_LIVES, Float()), func.abs(score) < literal(MIN_SCORE, Float()))
    # CASE, not AND/OR, so PostgreSQL never computes the power it would reject.
    return case((negligible, literal(0.0, Float())), else_=score * func.power(literal(0.5, Float()), half_lives))
