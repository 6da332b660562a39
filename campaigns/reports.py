"""Campaign reports: what came back from each run, in aggregate SQL only.

A response counts for the run of the message it answers (``responses.delivery_id``
→ ``deliveries.run_id``); a conversion attributed to no message is in no
campaign's report. The figures, per run and broken down by block, locale and
day (UTC, of when the response happened):

- ``sent``: ledger rows sent; ``delivered``: sent minus those with a bounce;
  per run, ``failed``: rows that failed (never sent), with their most common
  reasons (``delivery.ledger.failed_by_reason``);
- ``opened`` and ``clicked``: ``human`` and ``machine`` (Apple Mail Privacy
  Protection, scanners, prefetch), each ``unique`` (messages) and ``total``;
- ``unsubscribed``, ``complained``: messages; ``bounced``: ``hard``, ``soft``
  and ``total`` (messages with any bounce);
- ``converted``: ``unique`` contacts and ``total`` conversions; ``revenue``:
  per currency, the sum of minor units as a ``Decimal`` in major units (the
  currency's ISO 4217 precision, from Babel);
- ``rates`` over delivered (opens and clicks human and unique); the bounce rate
  over the messages tried: sent, of unknown fate, or refused by the server while sending. ``None`` where
  there is nothing to divide by.

Every count is one ``GROUP BY`` with ``COUNT(DISTINCT CASE …)``: no Python
loop over responses or events, the same statements on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from babel.numbers import get_currency_precision
from sqlalchemy import BigInteger, and_, case, cast, func, literal_column, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from campaigns.definition import CampaignError
from campaigns.models import Campaign, Run
from content.models import Block, BlockVersion
from delivery import ledger
from delivery.models import Delivery, Response
from segments.db import utcnow

R, D = Response, Delivery


def _kind(kind: str) -> ColumnElement[bool]:
    return R.kind == kind


_HUMAN = func.coalesce(R.machine, False).is_(False)
_MACHINE = R.machine.is_(True)


def _unique(condition, column=R.delivery_id):
    return func.count(func.distinct(case((condition, column))))


def _total(condition):
    return func.count(case((condition, R.id)))


# Each figure a response query yields, by label; the report nests them (see _figures).
_RESPONSE_COLUMNS = {
    "opened_human_unique": _unique(_kind("open") & _HUMAN),
    "opened_human_total": _total(_kind("open") & _HUMAN),
    "opened_machine_unique": _unique(_kind("open") & _MACHINE),
    "opened_machine_total": _total(_kind("open") & _MACHINE),
    "clicked_human_unique": _unique(_kind("click") & _HUMAN),
    "clicked_human_total": _total(_kind("click") & _HUMAN),
    "clicked_machine_unique": _unique(_kind("click") & _MACHINE),
    "clicked_machine_total": _total(_kind("click") & _MACHINE),
    "unsubscribed": _unique(_kind("unsubscribe")),
    "bounced_hard": _unique(_kind("bounce") & (R.bounce_type == "hard")),
    "bounced_soft": _unique(_kind("bounce") & (R.bounce_type == "soft")),
    "bounced": _unique(_kind("bounce")),
    "complained": _unique(_kind("complaint")),
    "converted": _unique(_kind("conversion"), R.contact_id),
    "conversions": _total(_kind("conversion")),
}
_SENT = func.count(func.distinct(case((D.status == "sent", D.id))))
# Bounces of messages the ledger has as sent: delivered is sent minus these.
_BOUNCED_SENT = _unique(_kind("bounce") & (D.status == "sent"))
# The messages tried but not known as sent: those whose fate a lost connection left unknown, and those the
# server refused while they were sent (an SMTP 5xx: a hard bounce on a row that failed). With the sent ones,
# they are what the bounce rate is over: every bounce is of one of them.
_REFUSED = func.count(
    func.distinct(case((D.status == "unknown", D.id), (and_(_kind("bounce"), D.status == "failed"), D.id)))
)


def _columns(labels: dict[str, ColumnElement]) -> list:
    return [column.label(label) for label, column in labels.items()]


def _day(session: Session, moment) -> ColumnElement[str]:
    """``YYYY-MM-DD`` of a stored (naive UTC) timestamp, in SQL."""
    if session.get_bind().dialect.name == "postgresql":
        # The format inline, not a parameter: PostgreSQL must see the GROUP BY and SELECT expressions as one.
        return func.to_char(moment, literal_column("'YYYY-MM-DD'"))
    return func.date(moment)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _figures(row: dict[str, Any], revenue: dict[str, Decimal], *, with_sent: bool = True) -> dict[str, Any]:
    """One group's flat SQL row as the report's nested figures, with rates."""
    figures: dict[str, Any] = {}
    if with_sent:
        figures["sent"] = row["sent"]
        figures["delivered"] = row["sent"] - row["bounced_sent"]
    figures.update(
        opened={
            "human": {"unique": row["opened_human_unique"], "total": row["opened_human_total"]},
            "machine": {"unique": row["opened_machine_unique"], "total": row["opened_machine_total"]},
        },
        clicked={
            "human": {"unique": row["clicked_human_unique"], "total": row["clicked_human_total"]},
            "machine": {"unique": row["clicked_machine_unique"], "total": row["clicked_machine_total"]},
        },
        unsubscribed=row["unsubscribed"],
        bounced={"hard": row["bounced_hard"], "soft": row["bounced_soft"], "total": row["bounced"]},
        complained=row["complained"],
        converted={"unique": row["converted"], "total": row["conversions"]},
        revenue=dict(sorted(revenue.items())),
    )
    if with_sent:
        delivered = figures["delivered"]
        figures["rates"] = {
            "open": _ratio(row["opened_human_unique"], delivered),
            "click": _ratio(row["clicked_human_unique"], delivered),
            "unsubscribe": _ratio(row["unsubscribed"], delivered),
            "complaint": _ratio(row["complained"], delivered),
            "conversion": _ratio(row["converted"], delivered),
            # over the messages tried (_REFUSED): over sent alone, send-time refusals could pass 100 %
            "bounce": _ratio(row["bounced"], row["sent"] + row["tried_unsent"]),
        }
    return figures


def _revenue(session: Session, run_ids: list[int], *keys) -> dict[tuple, dict[str, Decimal]]:
    """(run id, *keys) -> {currency: revenue in major units}: one GROUP BY."""
    rows = session.execute(
        select(D.run_id, *keys, R.currency, func.sum(R.value_minor))
        .select_from(R)
        .join(D, D.id == R.delivery_id)
        .where(D.run_id.in_(run_ids), _kind("conversion"), R.currency.is_not(None), R.value_minor.is_not(None))
        .group_by(D.run_id, *keys, R.currency)
    )
    result: dict[tuple, dict[str, Decimal]] = defaultdict(dict)
    for *group, currency, minor in rows:
        result[tuple(group)][currency] = major_units(int(minor), currency)
    return result


def major_units(minor: int, currency: str) -> Decimal:
    """``minor`` units of ``currency`` as a Decimal in major units, by ISO 4217 precision (Babel): 1250 EUR
    is 12.50, 1250 JPY is 1250, 1250 KWD is 1.250."""
    precision = get_currency_precision(currency.upper())
    return Decimal(minor).scaleb(-precision).quantize(Decimal(1).scaleb(-precision))


def _runs_totals(session: Session, run_ids: list[int]) -> dict[int, dict]:
    rows = session.execute(
        select(
            D.run_id,
            _SENT.label("sent"),
            _BOUNCED_SENT.label("bounced_sent"),
            _REFUSED.label("tried_unsent"),
            *_columns(_RESPONSE_COLUMNS),
        )
        .select_from(D)
        .outerjoin(R, R.delivery_id == D.id)
        .where(D.run_id.in_(run_ids))
        .group_by(D.run_id)
    ).mappings()
    revenue = _revenue(session, run_ids)
    return {row["run_id"]: _figures(row, revenue.get((row["run_id"],), {})) for row in rows}


def _by_locale(session: Session, run_ids: list[int]) -> dict[int, list[dict]]:
    rows = session.execute(
        select(
            D.run_id,
            D.locale,
            _SENT.label("sent"),
            _BOUNCED_SENT.label("bounced_sent"),
            _REFUSED.label("tried_unsent"),
            *_columns(_RESPONSE_COLUMNS),
        )
        .select_from(D)
        .outerjoin(R, R.delivery_id == D.id)
        .where(D.run_id.in_(run_ids), D.locale.is_not(None))
        .group_by(D.run_id, D.locale)
        .order_by(D.run_id, D.locale)
    ).mappings()
    revenue = _revenue(session, run_ids, D.locale)
    result: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        figures = _figures(row, revenue.get((row["run_id"], row["locale"]), {}))
        result[row["run_id"]].append({"locale": row["locale"], **figures})
    return result


def _by_day(session: Session, run_ids: list[int]) -> dict[int, list[dict]]:
    day = _day(session, R.occurred_at)
    rows = session.execute(
        select(D.run_id, day.label("day"), *_columns(_RESPONSE_COLUMNS))
        .select_from(R)
        .join(D, D.id == R.delivery_id)
        .where(D.run_id.in_(run_ids))
        .group_by(D.run_id, day)
        .order_by(D.run_id, day)
    ).mappings()
    sent_day = _day(session, D.sent_at)
    sent = dict(
        ((run_id, when), n)
        for run_id, when, n in session.execute(
            select(D.run_id, sent_day, func.count())
            .where(D.run_id.in_(run_ids), D.status == "sent", D.sent_at.is_not(None))
            .group_by(D.run_id, sent_day)
        )
    )
    revenue = _revenue(session, run_ids, day)
    result: dict[int, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        figures = _figures(row, revenue.get((row["run_id"], row["day"]), {}), with_sent=False)
        result[row["run_id"]][row["day"]] = {"day": row["day"], "sent": 0, **figures}
    for (run_id, when), n in sent.items():
        empty = _figures(dict.fromkeys(_RESPONSE_COLUMNS, 0), {}, with_sent=False)
        result[run_id].setdefault(when, {"day": when, "sent": 0, **empty})["sent"] = n
    return {run_id: [days[d] for d in sorted(days)] for run_id, days in result.items()}


def _impressions(session: Session, run_ids: list[int]) -> dict[tuple[int, int], int]:
    """(run id, block version id) -> messages sent showing it, from each ledger row's JSON list of versions."""
    if session.get_bind().dialect.name == "postgresql":
        shown = func.jsonb_array_elements_text(D.blocks).table_valued("value")
    else:
        shown = func.json_each(D.blocks).table_valued("value")
    version = cast(shown.c.value, BigInteger)
    rows = session.execute(
        select(D.run_id, version, func.count(func.distinct(D.id)))
        .select_from(D)
        .join(shown, true())
        .where(D.run_id.in_(run_ids), D.status == "sent")
        .group_by(D.run_id, version)
    )
    return {(run_id, version_id): n for run_id, version_id, n in rows}


_BLOCK_COLUMNS = ("clicked_human_unique", "clicked_human_total", "converted", "conversions")


def _by_block(session: Session, run_ids: list[int]) -> dict[int, list[dict]]:
    rows = session.execute(
        select(D.run_id, R.block_version_id, *_columns({k: _RESPONSE_COLUMNS[k] for k in _BLOCK_COLUMNS}))
        .select_from(R)
        .join(D, D.id == R.delivery_id)
        .where(D.run_id.in_(run_ids), R.block_version_id.is_not(None))
        .group_by(D.run_id, R.block_version_id)
    ).mappings()
    responses = {(row["run_id"], row["block_version_id"]): row for row in rows}
    impressions = _impressions(session, run_ids)
    revenue = _revenue(session, run_ids, R.block_version_id)
    keys = sorted(set(responses) | set(impressions))
    labels = {
        version_id: (key, locale, number)
        for version_id, key, locale, number in session.execute(
            select(BlockVersion.id, Block.key, Block.locale, BlockVersion.version)
            .join(Block, Block.id == BlockVersion.block_id)
            .where(BlockVersion.id.in_({version_id for _, version_id in keys}))
        )
    }
    result: dict[int, list[dict]] = defaultdict(list)
    for run_id, version_id in keys:
        row = responses.get((run_id, version_id)) or dict.fromkeys(_BLOCK_COLUMNS, 0)
        shown = impressions.get((run_id, version_id), 0)
        key, locale, number = labels.get(version_id, (None, None, None))
        result[run_id].append(
            {
                "block": key,
                "locale": locale,
                "version": number,
                "block_version_id": version_id,
                "impressions": shown,
                "clicked": {"unique": row["clicked_human_unique"], "total": row["clicked_human_total"]},
                "converted": {"unique": row["converted"], "total": row["conversions"]},
                "revenue": dict(sorted(revenue.get((run_id, version_id), {}).items())),
                "click_rate": _ratio(row["clicked_human_unique"], shown),
            }
        )
    return result


def report(session: Session, campaign_id: int, *, run_id: int | None = None, now: datetime | None = None) -> dict:
    """The campaign's report: ``{"campaign": {id, name}, "generated_at", "runs": [...]}``, oldest run first.

    Each run: ``run``, ``state``, ``started``, ``finished`` (datetimes), the figures of the module docstring,
    ``failed`` (recipients whose message failed) with ``failed_by_reason`` ({reason: count}, the most common
    first, at most ``ledger.FAILED_REASONS_SHOWN``), and ``by_block``, ``by_locale``, ``by_day`` lists.
    ``run_id`` limits it to that run. Raises ``CampaignError`` for an unknown campaign or a run that is not
    the campaign's.
    """
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignError(f"there is no campaign {campaign_id}")
    query = select(Run).where(Run.campaign_id == campaign_id).order_by(Run.id)
    if run_id is not None:
        query = query.where(Run.id == run_id)
    runs = session.scalars(query).all()
    if run_id is not None and not runs:
        raise CampaignError(f"campaign {campaign_id} has no run {run_id}")
    ids = [run.id for run in runs]
    totals = _runs_totals(session, ids) if ids else {}
    counts, failures = ledger.counts_by_run(session, ids), ledger.failed_by_reason(session, ids)
    blocks, locales, days = (
        (_by_block(session, ids), _by_locale(session, ids), _by_day(session, ids)) if ids else ({}, {}, {})
    )
    empty = _figures({"sent": 0, "bounced_sent": 0, "tried_unsent": 0, **dict.fromkeys(_RESPONSE_COLUMNS, 0)}, {})
    return {
        "campaign": {"id": campaign.id, "name": campaign.name},
        "generated_at": now or utcnow(),
        "runs": [
            {
                "run": run.id,
                "state": run.state,
                "started": run.created_at,
                "finished": run.finished_at,
                **totals.get(run.id, empty),
                "failed": counts[run.id]["failed"],
                "failed_by_reason": failures[run.id],
                "by_block": blocks.get(run.id, []),
                "by_locale": locales.get(run.id, []),
                "by_day": days.get(run.id, []),
            }
            for run in runs
        ],
    }
