"""Responses: what comes back from a message (open, click, unsubscribe) or from the contact (conversion).

Each response is one ``Response`` row and one ``Event`` on the contact's timeline (channel ``email``,
type the response's kind, source ``patron``, external id ``response:<id>``), whose properties a segment
can select on: campaign_id, run_id, block_version_id, link_id, url (clicks), machine, and ``interest``
(the responded-to block's highest-weight tag). A human click or a conversion also teaches the contact's
interests (``delivery.learning``) when they granted ``profiling``. Opens and clicks are recorded only
for contacts who granted ``tracking``; a click still redirects without it.

Services take a Session and ids, may flush, never commit: the caller (a view, a CLI) commits.
See docs/responses.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from babel import Locale
from babel.numbers import get_currency_precision, get_territory_currencies
from sqlalchemy import (
    String,
    and_,
    bindparam,
    case,
    column,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.orm import Session

from delivery import learning
from delivery.machine import PREFETCH, client_reason
from delivery.models import Delivery, Link, Response
from segments.db import UTCDateTime, insert_for, utcnow
from segments.event_times import implausible
from segments.imports.values import BadValue
from segments.imports.values import email as normalized_email
from segments.models import ERASED, IDENTIFIER_LENGTH, MARKETING, PROFILING, TRACKING, Consent, Contact, Event
from segments.suppressions import suppress

CHANNEL = "email"
SOURCE = "patron"
RECORDED_STATUSES = ("sent", "unknown")  # a message that may have reached someone
USER_AGENT_KEPT = 255  # the column's size: longer user agents are cut, not refused
MAX_VALUE_MINOR = 10**15  # a bound far above any order, far below BIGINT
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A delivery's run, without importing campaigns (delivery may import segments only).
_runs = table("runs", column("id"), column("campaign_id"))
_EVENT_INSERT = insert(Event.__table__)


@dataclass(frozen=True)
class Client:
    """Who asked: from the HTTP request (user agent and remote address, either may be missing)."""

    user_agent: str | None = None
    ip: str | None = None


class ConversionError(ValueError):
    """A conversion that cannot be recorded; the message starts with the field at fault."""


# -- opens and clicks ---------------------------------------------------------------------------------


def kept_user_agent(agent: str | None) -> str | None:
    """A response's user agent as it is stored: its first ``USER_AGENT_KEPT`` characters, each NUL replaced by
    U+FFFD (PostgreSQL's text cannot hold NUL, and one such click would fail its whole batch); None for
    none or an empty one."""
    if not agent:
        return None
    agent = agent[:USER_AGENT_KEPT]
    return agent.replace("\0", "\ufffd") if "\0" in agent else agent


def record_open(
    session: Session, delivery_id: int, client: Client, *, half_life_days: float, now: datetime | None = None
) -> Response | None:
    """Record an open of ``delivery_id`` (machine-flagged where it looks machine-made).

    None, recording nothing, when there is no such sent delivery (erased, never sent) or the contact
    has not granted ``tracking``: the caller still answers the pixel. Opens teach no interests
    (``half_life_days`` is accepted for symmetry with clicks).
    """
    now = now or utcnow()
    recorded = _record_tracked(session, "open", delivery_id, None, client, now)
    if recorded is None:
        return None
    row = _details(session, delivery_id)
    timeline_event(
        session, row.contact_id, "open", recorded.id, now, event_properties(row, recorded.machine_reason, None)
    )
    return session.get(Response, recorded.id)


@dataclass(frozen=True)
class Click:
    """What a click came to: the registered URL to redirect to, and whether a response was recorded."""

    url: str
    recorded: bool


def record_click(
    session: Session,
    delivery_id: int,
    link_id: int,
    client: Client,
    *,
    half_life_days: float,
    now: datetime | None = None,
) -> str | None:
    """Record a click on link ``link_id`` of ``delivery_id`` and return the registered URL to redirect to.

    None, recording nothing, when the link or the sent delivery is unknown (the caller answers 404).
    The URL returned is always the one registered at send time (``Link.url``). See :func:`click`.
    """
    result = click(session, delivery_id, link_id, client, half_life_days=half_life_days, now=now)
    return None if result is None else result.url


def click(
    session: Session,
    delivery_id: int,
    link_id: int,
    client: Client,
    *,
    half_life_days: float,
    now: datetime | None = None,
) -> Click | None:
    """:func:`record_click`, also saying whether the click was recorded (the tracking endpoint sets its
    attribution cookie only then).

    A contact without ``tracking`` consent is redirected but not recorded; a human click by a contact with
    ``profiling`` consent raises their interests in the link's block by ``learning.CLICK_POINTS``. Four
    statements: the response (INSERT … SELECT, so on SQLite the write lock is taken before anything is
    read), one SELECT of delivery, link and consents, the event, and one upsert of interests.
    """
    now = now or utcnow()
    recorded = _record_tracked(session, "click", delivery_id, link_id, client, now)
    row = _details(session, delivery_id, link_id)
    if row is None:
        return None
    if recorded is not None:
        properties = event_properties(row, recorded.machine_reason, row.interests)
        properties["url"] = row.url
        timeline_event(session, row.contact_id, "click", recorded.id, now, properties)
        if recorded.machine_reason is None and row.profiling:
            learning.raise_interests(
                session, row.contact_id, row.interests, learning.CLICK_POINTS, now=now, half_life_days=half_life_days
            )
    return Click(row.url, recorded is not None)


def _record_tracked(session: Session, kind: str, delivery_id: int, link_id: int | None, client: Client, now):
    """Insert the open or click response if the delivery was sent (and the link exists) and tracking is granted.

    The row (id, machine_reason), or None when nothing was recorded. The machine reason is the
    client's (``machine.client_reason``), else prefetch judged in SQL against the delivery's sent_at.
    """
    agent = kept_user_agent(client.user_agent if client is not None else None)
    params = {
        "delivery_id": delivery_id,
        "link_id": link_id,
        "reason": client_reason(kind, client),
        "user_agent": agent,
        "now": now,
        "prefetch_after": now - PREFETCH,
    }
    return session.execute(_tracked_insert(kind), params).first()


@cache
def _tracked_insert(kind: str):
    """INSERT … SELECT of an open or a click, built once: its values are bound parameters."""
    deliveries, links, consents, responses = Delivery.__table__, Link.__table__, Consent.__table__, Response.__table__
    now = bindparam("now", type_=UTCDateTime())
    prefetch = and_(
        deliveries.c.sent_at <= now, deliveries.c.sent_at > bindparam("prefetch_after", type_=UTCDateTime())
    )
    reason = func.coalesce(
        bindparam("reason", type_=String()), case((prefetch, literal("prefetch", String())), else_=null())
    )
    click = kind == "click"
    columns = {
        "kind": literal(kind, String()),
        "delivery_id": deliveries.c.id,
        "run_id": deliveries.c.run_id,
        "contact_id": deliveries.c.contact_id,
        "link_id": links.c.id if click else null(),
        "block_version_id": links.c.block_version_id if click else null(),
        "machine_reason": reason,
        "machine": reason.is_not(None),
        "user_agent": bindparam("user_agent", type_=String()),
        "occurred_at": now,
        "received_at": now,
    }
    source = select(*columns.values()).select_from(deliveries)
    if click:
        source = source.join(links, links.c.id == bindparam("link_id"))
    tracking = and_(
        consents.c.contact_id == deliveries.c.contact_id,
        consents.c.purpose == TRACKING,
        consents.c.granted.is_(True),
    )
    source = source.join(consents, tracking).where(deliveries.c.id == bindparam("delivery_id"), _recorded(deliveries))
    returning = (responses.c.id, responses.c.machine_reason)
    return insert(responses).from_select(list(columns), source).returning(*returning)


def _recorded(deliveries):
    """The delivery may have reached someone and is :func:`answerable`; OR of equalities, not IN: an IN list is
    expanded at every execution."""
    sent = or_(*(deliveries.c.status == literal(status, String()) for status in RECORDED_STATUSES))
    return and_(sent, answerable(deliveries))


def answerable(deliveries):
    """SQL: a request about the ``deliveries`` row (the table or an alias) may be answered and recorded.

    False once its person was erased (their contact row is the ``ERASED`` tombstone, see
    ``campaigns.privacy.erase_person``): every endpoint then answers as for an unknown message and records
    nothing. The one rule every response shares: opens, clicks (one at a time, the click endpoint's read,
    the journal's batches), unsubscribes, the preference page, conversions and bounces.
    """
    tombstones = Contact.__table__.alias("tombstones")  # its own name: the query may join contacts too
    erased = select(tombstones.c.id).where(
        tombstones.c.id == deliveries.c.contact_id, tombstones.c.status == literal(ERASED, String())
    )
    return ~erased.correlate_except(tombstones).exists()


def is_answerable(session: Session, delivery_id: int) -> bool:
    """Whether delivery ``delivery_id`` exists and is :func:`answerable`."""
    deliveries = Delivery.__table__
    found = select(deliveries.c.id).where(deliveries.c.id == delivery_id, answerable(deliveries))
    return session.scalar(found) is not None


def _details(session: Session, delivery_id: int, link_id: int | None = None):
    """One row: the sent delivery, its run's campaign, the contact's profiling consent (and the link); or None."""
    return session.execute(
        _details_query(link_id is not None), {"delivery_id": delivery_id, "link_id": link_id}
    ).first()


@cache
def _details_query(with_link: bool):
    deliveries, links, consents = Delivery.__table__, Link.__table__, Consent.__table__
    columns = [
        deliveries.c.id.label("delivery_id"),
        deliveries.c.run_id,
        deliveries.c.contact_id,
        _runs.c.campaign_id,
        consents.c.granted.label("profiling"),
    ]
    if with_link:
        columns += [links.c.id.label("link_id"), links.c.url, links.c.block_version_id, links.c.interests]
    query = select(*columns).select_from(deliveries)
    if with_link:
        query = query.join(links, links.c.id == bindparam("link_id"))
    profiling = and_(consents.c.contact_id == deliveries.c.contact_id, consents.c.purpose == PROFILING)
    return (
        query.outerjoin(_runs, _runs.c.id == deliveries.c.run_id)
        .outerjoin(consents, profiling)
        .where(deliveries.c.id == bindparam("delivery_id"), _recorded(deliveries))
    )


# -- unsubscribes -------------------------------------------------------------------------------------


def unsubscribe(
    session: Session, delivery_id: int, *, source: str, client: Client | None = None, now: datetime | None = None
) -> bool:
    """Unsubscribe the recipient of ``delivery_id`` from marketing; False if there is no such delivery, or its
    person was erased (:func:`answerable`).

    Suppresses the address the message went to (reason ``unsubscribed``, ``source`` kept), records
    ``marketing`` consent as withdrawn (with ``source`` and the client's address), and adds one
    ``unsubscribe`` response and event. Idempotent: a second call, or a concurrent one, changes
    nothing more; an address already suppressed for another reason keeps that reason.
    """
    now = now or utcnow()
    row = session.execute(
        select(
            Delivery.id.label("delivery_id"),
            Delivery.run_id,
            Delivery.contact_id,
            Delivery.email.label("sent_to"),
            Contact.email.label("contact_email"),
            _runs.c.campaign_id,
        )
        .select_from(Delivery)
        .outerjoin(Contact, Contact.id == Delivery.contact_id)
        .outerjoin(_runs, _runs.c.id == Delivery.run_id)
        .where(Delivery.id == delivery_id, answerable(Delivery.__table__))
    ).first()
    if row is None:
        return False
    address = row.sent_to or row.contact_email
    if address:
        suppress(session, address, "unsubscribed", source)
    ip = client.ip[:45] if client is not None and client.ip else None
    _upsert(
        session,
        Consent,
        # The person's own act: an import never grants marketing back (Consent.own_choice).
        {
            "contact_id": row.contact_id,
            "purpose": MARKETING,
            "granted": False,
            "source": source,
            "ip": ip,
            "own_choice": True,
        },
        ["contact_id", "purpose"],
        update={"granted": False, "source": source, "ip": ip, "recorded_at": now, "own_choice": True},
        defaults={"recorded_at": now},
    )
    values = {
        "kind": "unsubscribe",
        "delivery_id": row.delivery_id,
        "run_id": row.run_id,
        "contact_id": row.contact_id,
        "external_id": f"delivery:{delivery_id}",
        "user_agent": kept_user_agent(client.user_agent if client is not None else None),
        "detail": {"source": source[:64]},
        "occurred_at": now,
        "received_at": now,
    }
    statement = insert_for(session, Response).values(values).on_conflict_do_nothing().returning(Response.id)
    response_id = session.execute(statement).scalar()
    if response_id is not None:  # the first time only
        properties = event_properties(row, None, None)
        properties["source"] = source
        timeline_event(session, row.contact_id, "unsubscribe", response_id, now, properties)
    return True


# -- conversions --------------------------------------------------------------------------------------


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
    """Record an order as a conversion: ``(response, created)``; the same ``order_id`` again is not created.

    ``value`` is a decimal amount in ``currency`` (an ISO 4217 code Babel knows), stored in the
    currency's minor units (cents; yen for JPY); an amount finer than the currency allows is refused.
    The contact is found by ``contact_id``, else ``email`` (normalized as imports do), else the
    delivery; an unknown email is recorded unattributed; an erased person's contact id or delivery is
    refused as unknown (:func:`answerable`). Attribution: the contact's last human click
    within ``window_days`` before ``occurred_at`` (default now) gives delivery, run, link and block; with
    no such click, a given delivery gives delivery and run. A new attributed conversion raises the
    clicked block's interests by ``learning.CONVERSION_POINTS`` if the contact granted ``profiling``.
    Raises ConversionError (a ValueError) naming the field for bad input; a concurrent duplicate of the
    order also ends as not created.
    """
    order_id = _order_id(order_id)
    currency, value_minor = _money(value, currency)
    now = utcnow()
    occurred_at = _occurred_at(occurred_at, now)
    values: dict[str, Any] = {
        "kind": "conversion",
        "external_id": order_id,
        "value_minor": value_minor,
        "currency": currency,
        "occurred_at": occurred_at,
        "received_at": now,
        "detail": {"source": source[:64]},
    }
    # The order is claimed first, by the insert, so that a concurrent duplicate waits for it (PostgreSQL)
    # or for the write lock (SQLite, where a read first would make the later write fail) and then finds it.
    # The savepoint takes the claim back if the customer named turns out not to exist.
    with session.begin_nested():
        inserted = session.execute(
            insert_for(session, Response).values(values).on_conflict_do_nothing().returning(Response.id)
        ).scalar()
        if inserted is None:
            return _conversion(session, order_id), False
        contact, delivery = _conversion_contact(session, email, contact_id, delivery_id)
    click = _last_human_click(session, contact, occurred_at, window_days) if contact is not None else None
    attribution: dict[str, Any] = {"contact_id": contact}
    if click is not None:
        attribution.update(
            delivery_id=click.delivery_id,
            run_id=click.run_id,
            link_id=click.link_id,
            block_version_id=click.block_version_id,
        )
    elif delivery is not None:
        attribution.update(delivery_id=delivery.id, run_id=delivery.run_id)
    session.execute(update(Response).where(Response.id == inserted).values(attribution))
    if contact is not None:
        context = {**attribution, "campaign_id": campaign_of(session, attribution.get("run_id"))}
        properties = event_properties(context, None, click.interests if click else None)
        precision = _precision(currency)
        properties.update(order_id=order_id, value=str(Decimal(value_minor).scaleb(-precision)), currency=currency)
        timeline_event(session, contact, "conversion", inserted, occurred_at, properties)
        if click is not None and click.interests and _granted(session, contact, PROFILING):
            learning.raise_interests(
                session, contact, click.interests, learning.CONVERSION_POINTS, now=now, half_life_days=half_life_days
            )
    session.flush()
    return session.get(Response, inserted), True


def _order_id(order_id) -> str:
    if not isinstance(order_id, str) or not order_id.strip():
        raise ConversionError("order_id: required, a non-empty string")
    order_id = order_id.strip()
    if len(order_id) > IDENTIFIER_LENGTH:
        raise ConversionError(f"order_id: {len(order_id)} characters long; the limit is {IDENTIFIER_LENGTH}")
    if _CONTROL.search(order_id):
        raise ConversionError("order_id: contains a control character")
    return order_id


def _money(value, currency) -> tuple[str, int]:
    """(currency code, value in minor units), or ConversionError naming the field."""
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency.strip()):
        raise ConversionError("currency: must be a three-letter ISO 4217 code")
    currency = currency.strip().upper()
    if not is_tender(currency):
        raise ConversionError(f"currency: {currency!r} is not the ISO 4217 code of a currency in use")
    if isinstance(value, bool) or not isinstance(value, (str, Decimal, int)) or len(str(value)) > 40:
        raise ConversionError("value: must be a decimal amount such as 12.50")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise ConversionError(f"value: {str(value)!r} is not a decimal amount") from None
    if not amount.is_finite() or amount < 0:
        raise ConversionError("value: must be a finite amount, zero or more")
    minor = amount.scaleb(_precision(currency))
    if minor != minor.to_integral_value():
        raise ConversionError(f"value: {currency} has {_precision(currency)} decimal places, {amount} has more")
    if minor > MAX_VALUE_MINOR:
        raise ConversionError(f"value: {amount} is larger than any order Patron accepts")
    return currency, int(minor)


def is_tender(code: str) -> bool:
    """Whether ``code`` (upper case) is the ISO 4217 code of a currency some country or territory takes as legal
    tender today, by CLDR's territory data (Babel). Codes that are no money a shop takes are not: XXX (no
    currency), XTS (testing), XAU and the other metals, XDR; nor withdrawn ones (DEM, VEF)."""
    return code in _tender_currencies()


@cache
def _tender_currencies() -> frozenset[str]:
    today = datetime.now(UTC).date()
    codes: set[str] = set()
    for territory in Locale("en").territories:
        if len(territory) == 2 and territory.isalpha():  # countries and territories, not regions like 419
            codes.update(get_territory_currencies(territory, start_date=today, tender=True))
    return frozenset(codes)


def _precision(currency: str) -> int:
    return get_currency_precision(currency)


def _occurred_at(occurred_at, now: datetime) -> datetime:
    if occurred_at is None:
        return now
    if not isinstance(occurred_at, datetime):
        raise ConversionError("occurred_at: must be a date and time")
    if occurred_at.tzinfo is None:
        raise ConversionError("occurred_at: must carry a time zone (UTC offset)")
    occurred_at = occurred_at.astimezone(UTC)
    problem = implausible(occurred_at, now)
    if problem is not None:
        raise ConversionError(f"occurred_at: {problem}")
    return occurred_at


def _conversion_contact(session: Session, email, contact_id, delivery_id) -> tuple[int | None, Any]:
    """(contact id or None, delivery row or None) from the identifiers given; ConversionError for bad ones."""
    delivery = None
    if delivery_id is not None:
        if not _is_id(delivery_id):
            raise ConversionError("delivery_id: must be a positive integer")
        delivery = session.execute(
            select(Delivery.id, Delivery.run_id, Delivery.contact_id).where(
                Delivery.id == delivery_id, answerable(Delivery.__table__)
            )
        ).first()
        if delivery is None:
            raise ConversionError(f"delivery_id: no message {delivery_id}")
    if contact_id is not None:
        if not _is_id(contact_id):
            raise ConversionError("contact_id: must be a positive integer")
        known = session.execute(
            select(Contact.id, Contact.email).where(Contact.id == contact_id, Contact.status != ERASED)
        ).first()
        if known is None:
            raise ConversionError(f"contact_id: no contact {contact_id}")
        if email is not None and _normalized(email) != known.email:
            raise ConversionError(f"email: is not the address of contact {contact_id}; name the customer once")
        return contact_id, delivery
    if email is not None:
        return session.scalar(select(Contact.id).where(Contact.email == _normalized(email))), delivery
    if delivery is not None:
        return delivery.contact_id, delivery
    raise ConversionError("contact_id: name the customer by contact_id, email or delivery_id")


def _normalized(email) -> str:
    """``email`` as imports store it; ConversionError naming the field if it is no address."""
    if not isinstance(email, str):
        raise ConversionError("email: must be a string")
    try:
        return normalized_email(email)
    except BadValue as exc:
        raise ConversionError(f"email: {exc}") from None


def _is_id(value) -> bool:
    """A row id the databases can hold: a positive 64-bit integer (PostgreSQL refuses a larger one)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63


def _last_human_click(session: Session, contact_id: int, occurred_at: datetime, window_days: float):
    since = occurred_at - timedelta(days=float(window_days))
    return session.execute(
        select(Response.delivery_id, Response.run_id, Response.link_id, Response.block_version_id, Link.interests)
        .outerjoin(Link, Link.id == Response.link_id)
        .where(
            Response.contact_id == contact_id,
            Response.kind == "click",
            Response.machine.is_(False),
            Response.occurred_at >= since,
            Response.occurred_at <= occurred_at,
        )
        .order_by(Response.occurred_at.desc(), Response.id.desc())
        .limit(1)
    ).first()


def _conversion(session: Session, order_id: str) -> Response | None:
    return session.scalar(select(Response).where(Response.kind == "conversion", Response.external_id == order_id))


def campaign_of(session: Session, run_id: int | None) -> int | None:
    """The campaign of run ``run_id`` (None for no run)."""
    return None if run_id is None else session.scalar(select(_runs.c.campaign_id).where(_runs.c.id == run_id))


def _granted(session: Session, contact_id: int, purpose: str) -> bool:
    return bool(
        session.scalar(select(Consent.granted).where(Consent.contact_id == contact_id, Consent.purpose == purpose))
    )


# -- shared -------------------------------------------------------------------------------------------


def event_properties(row, machine_reason: str | None, interests) -> dict:
    """An event's properties from a row (or mapping) with delivery_id, run_id, campaign_id and the link's ids."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name, None)
    return {
        "campaign_id": get("campaign_id"),
        "run_id": get("run_id"),
        "delivery_id": get("delivery_id"),
        "block_version_id": get("block_version_id"),
        "link_id": get("link_id"),
        "machine": machine_reason is not None,
        "machine_reason": machine_reason,
        "interest": learning.top_interest(interests),
    }


def timeline_event(
    session: Session, contact_id: int, kind: str, response_id: int, at: datetime, properties: dict
) -> None:
    """The response's event on the contact's timeline: channel ``email``, type ``kind``, ``response:<id>``."""
    session.execute(_EVENT_INSERT, timeline_event_row(contact_id, kind, response_id, at, properties))


def timeline_event_row(contact_id: int, kind: str, response_id: int, at: datetime, properties: dict) -> dict:
    """The parameters of :func:`timeline_event`'s INSERT (a list of them inserts many events in one go)."""
    return {
        "contact_id": contact_id,
        "channel": CHANNEL,
        "type": kind,
        "occurred_at": at,
        "properties": properties,
        "source": SOURCE,
        "external_id": f"response:{response_id}",
        "received_at": at,
    }


def _upsert(session: Session, model, values: dict, keys: list[str], *, update: dict, defaults: dict) -> None:
    statement = insert_for(session, model).values({**defaults, **values})
    session.execute(statement.on_conflict_do_update(index_elements=keys, set_=update))
