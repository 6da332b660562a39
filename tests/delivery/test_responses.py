"""Responses on both databases: what an open, click, unsubscribe and conversion record, and what they refuse."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from campaigns.models import Campaign, Run
from delivery import learning
from delivery.models import Delivery, Response
from delivery.responses import (
    Client,
    ConversionError,
    record_click,
    record_conversion,
    record_open,
    unsubscribe,
)
from delivery.tracking import register_links
from segments.compiler import preview_contacts
from segments.db import make_session_factory, utcnow
from segments.models import Consent, Contact, Event, Interest, Suppression
from segments.suppressions import suppress

HUMAN = Client(
    user_agent="Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4",
    ip="203.0.113.7",
)
SCANNER = Client(user_agent="Mozilla/5.0 (compatible; Barracuda Sentinel (EE))", ip="64.235.144.9")
HALF_LIFE = 30.0


def add_sent(session, email="ana@example.com", *, tracking=True, profiling=True, status="sent", campaign=None):
    """A contact and one sent delivery of a run of a campaign; (contact, delivery)."""
    contact = Contact(email=email, status="active")
    session.add(contact)
    if campaign is None:
        campaign = Campaign(name="Weekly", definition={"name": "Weekly"})
        session.add(campaign)
        session.flush()
    run = Run(campaign_id=campaign.id, state="finished", rules={}, content={})
    session.add(run)
    session.flush()
    for purpose, granted in (("tracking", tracking), ("profiling", profiling), ("marketing", True)):
        if granted is not None:
            session.add(Consent(contact_id=contact.id, purpose=purpose, granted=granted, source="test"))
    delivery = Delivery(
        run_id=run.id, contact_id=contact.id, status=status, email=email, sent_at=utcnow() - timedelta(hours=1)
    )
    session.add(delivery)
    session.commit()
    return contact, delivery


def pizza_link(session, url="https://shop.example.com/pizza"):
    (link_id,) = register_links(session, [url], 41, interests={"pizza": 1.0, "family": 0.5})
    session.commit()
    return link_id


def events(session, contact_id, kind):
    return session.scalars(select(Event).where(Event.contact_id == contact_id, Event.type == kind)).all()


def scores(session, contact_id) -> dict[str, float]:
    return dict(session.execute(select(Interest.tag, Interest.score).where(Interest.contact_id == contact_id)).all())


def test_a_human_click_is_recorded_on_the_timeline_and_teaches_the_profile(session):
    contact, delivery = add_sent(session)
    link_id = pizza_link(session)
    url = record_click(session, delivery.id, link_id, HUMAN, half_life_days=HALF_LIFE)
    session.commit()
    assert url == "https://shop.example.com/pizza"
    response = session.scalars(select(Response)).one()
    assert (response.kind, response.delivery_id, response.link_id, response.block_version_id) == (
        "click",
        delivery.id,
        link_id,
        41,
    )
    assert response.machine is False and response.machine_reason is None
    assert response.user_agent == HUMAN.user_agent
    (event,) = events(session, contact.id, "click")
    assert event.channel == "email" and event.source == "patron" and event.external_id == f"response:{response.id}"
    run = session.get(Run, delivery.run_id)
    assert event.properties == {
        "campaign_id": run.campaign_id,
        "run_id": run.id,
        "delivery_id": delivery.id,
        "block_version_id": 41,
        "link_id": link_id,
        "machine": False,
        "machine_reason": None,
        "interest": "pizza",
        "url": "https://shop.example.com/pizza",
    }
    assert scores(session, contact.id) == pytest.approx(
        {"pizza": learning.CLICK_POINTS, "family": 0.5 * learning.CLICK_POINTS}
    )


@pytest.mark.parametrize(
    ("client", "profiling", "sent_seconds_ago", "reason"),
    [
        (SCANNER, True, 3600, "scanner"),
        (HUMAN, True, 2, "prefetch"),
        (HUMAN, False, 3600, None),
        (HUMAN, None, 3600, None),
    ],
)
def test_a_machine_click_or_a_contact_without_profiling_consent_teaches_nothing(
    session, client, profiling, sent_seconds_ago, reason
):
    contact, delivery = add_sent(session, profiling=profiling)
    delivery.sent_at = utcnow() - timedelta(seconds=sent_seconds_ago)
    session.commit()
    link_id = pizza_link(session)
    assert record_click(session, delivery.id, link_id, client, half_life_days=HALF_LIFE)
    session.commit()
    response = session.scalars(select(Response)).one()
    assert (response.machine, response.machine_reason) == (reason is not None, reason)
    assert events(session, contact.id, "click")[0].properties["machine"] is (reason is not None)
    assert scores(session, contact.id) == {}


def test_an_unknown_link_or_delivery_or_an_unsent_message_records_nothing(session):
    _, delivery = add_sent(session)
    _, pending = add_sent(session, "ben@example.com", status="pending")
    link_id = pizza_link(session)
    assert record_click(session, delivery.id, link_id + 1000, HUMAN, half_life_days=HALF_LIFE) is None
    assert record_click(session, delivery.id + 1000, link_id, HUMAN, half_life_days=HALF_LIFE) is None
    assert record_click(session, pending.id, link_id, HUMAN, half_life_days=HALF_LIFE) is None
    assert record_open(session, pending.id, HUMAN, half_life_days=HALF_LIFE) is None
    assert record_open(session, delivery.id + 1000, HUMAN, half_life_days=HALF_LIFE) is None
    session.commit()
    assert session.scalar(select(func.count()).select_from(Response)) == 0
    assert session.scalar(select(func.count()).select_from(Event)) == 0


def test_without_tracking_consent_a_click_redirects_and_nothing_is_recorded(session):
    _, delivery = add_sent(session, tracking=False)
    link_id = pizza_link(session)
    assert record_click(session, delivery.id, link_id, HUMAN, half_life_days=HALF_LIFE) == (
        "https://shop.example.com/pizza"
    )
    assert record_open(session, delivery.id, HUMAN, half_life_days=HALF_LIFE) is None
    session.commit()
    assert session.scalar(select(func.count()).select_from(Response)) == 0
    assert session.scalar(select(func.count()).select_from(Event)) == 0


def test_an_open_is_recorded_and_apple_proxy_opens_are_flagged(session):
    contact, delivery = add_sent(session)
    human = record_open(session, delivery.id, HUMAN, half_life_days=HALF_LIFE)
    proxy = record_open(session, delivery.id, Client(user_agent="Mozilla/5.0", ip="17.58.1.2"), half_life_days=1)
    session.commit()
    assert (human.kind, human.machine, human.delivery_id) == ("open", False, delivery.id)
    assert (proxy.machine, proxy.machine_reason) == (True, "apple_mpp")
    assert [e.properties["machine"] for e in events(session, contact.id, "open")] == [False, True]


def test_a_very_long_user_agent_is_cut_to_the_column(session):
    _, delivery = add_sent(session)
    response = record_open(session, delivery.id, Client(user_agent="x" * 5000), half_life_days=HALF_LIFE)
    session.commit()
    assert len(response.user_agent) == 255


def test_unsubscribe_suppresses_withdraws_consent_and_is_idempotent(session):
    contact, delivery = add_sent(session)
    assert unsubscribe(session, delivery.id, source="one_click", client=HUMAN)
    assert unsubscribe(session, delivery.id, source="one_click", client=HUMAN)
    session.commit()
    suppression = session.get(Suppression, "ana@example.com")
    assert (suppression.reason, suppression.source) == ("unsubscribed", "one_click")
    consent = session.get(Consent, (contact.id, "marketing"))
    assert (consent.granted, consent.source, consent.ip) == (False, "one_click", HUMAN.ip)
    session.refresh(contact)
    assert contact.status == "unsubscribed"
    assert session.scalar(select(func.count()).where(Response.kind == "unsubscribe")) == 1
    (event,) = events(session, contact.id, "unsubscribe")
    assert event.properties["source"] == "one_click"


def test_unsubscribe_of_an_already_bounced_address_keeps_the_reason(session):
    contact, delivery = add_sent(session)
    suppress(session, "ana@example.com", "bounced", "bounces")
    session.commit()
    assert unsubscribe(session, delivery.id, source="preference_page")
    session.commit()
    assert session.get(Suppression, "ana@example.com").reason == "bounced"
    assert session.get(Consent, (contact.id, "marketing")).granted is False
    assert unsubscribe(session, delivery.id + 1000, source="preference_page") is False


def test_a_conversion_is_stored_in_minor_units_and_idempotent_on_the_order(session):
    contact, _ = add_sent(session)
    response, created = record_conversion(
        session, order_id="A-1", value="12.50", currency="eur", email="ANA@example.com", **_settings()
    )
    again, created_again = record_conversion(
        session, order_id="A-1", value="99.00", currency="EUR", email="ana@example.com", **_settings()
    )
    yen, _ = record_conversion(session, order_id="A-2", value=Decimal(1200), currency="JPY", **_settings(contact))
    session.commit()
    assert (created, created_again, again.id) == (True, False, response.id)
    assert (response.value_minor, response.currency, response.contact_id) == (1250, "EUR", contact.id)
    assert (yen.value_minor, yen.currency) == (1200, "JPY")
    assert session.scalar(select(func.count()).where(Response.kind == "conversion")) == 2
    first = next(e for e in events(session, contact.id, "conversion") if e.properties["order_id"] == "A-1")
    assert (first.properties["value"], first.properties["currency"]) == ("12.50", "EUR")


def test_a_conversion_from_an_unknown_address_is_kept_unattributed(session):
    response, created = record_conversion(
        session, order_id="W-1", value="5", currency="USD", email="nobody@example.com", **_settings()
    )
    session.commit()
    assert created and response.contact_id is None and response.value_minor == 500
    assert session.scalar(select(func.count()).select_from(Event)) == 0


def test_a_conversion_is_attributed_to_the_last_human_click_in_the_window_and_teaches_more(session):
    contact, delivery = add_sent(session)
    old_link = pizza_link(session, "https://shop.example.com/old")
    (pasta_link,) = register_links(session, ["https://shop.example.com/pasta"], 42, interests={"pasta": 1.0})
    session.commit()
    now = utcnow()
    record_click(session, delivery.id, old_link, HUMAN, half_life_days=HALF_LIFE, now=now - timedelta(days=20))
    record_click(session, delivery.id, pasta_link, HUMAN, half_life_days=HALF_LIFE, now=now - timedelta(days=2))
    record_click(session, delivery.id, old_link, SCANNER, half_life_days=HALF_LIFE, now=now - timedelta(days=1))
    session.commit()
    before = scores(session, contact.id)["pasta"]
    response, _ = record_conversion(
        session, order_id="B-1", value="30", currency="EUR", contact_id=contact.id, **_settings(window_days=7)
    )
    session.commit()
    assert (response.link_id, response.block_version_id, response.delivery_id, response.run_id) == (
        pasta_link,
        42,
        delivery.id,
        delivery.run_id,
    )
    after = scores(session, contact.id)["pasta"]
    assert after == pytest.approx(before * 0.5 ** (2 / HALF_LIFE) + learning.CONVERSION_POINTS, rel=1e-4)
    late, _ = record_conversion(
        session, order_id="B-2", value="30", currency="EUR", contact_id=contact.id, **_settings(window_days=1)
    )
    assert late.link_id is None and late.contact_id == contact.id


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"order_id": ""}, "order_id"),
        ({"order_id": "x" * 300}, "order_id"),
        ({"order_id": "a\nb"}, "order_id"),
        ({"value": "ten"}, "value"),
        ({"value": "-1"}, "value"),
        ({"value": "NaN"}, "value"),
        ({"value": "1e400"}, "value"),
        ({"value": "12.345"}, "value"),
        ({"value": "1.5", "currency": "JPY"}, "value"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "euro"}, "currency"),
        ({"email": "not an address"}, "email"),
        ({"email": None, "contact_id": 10**9}, "contact_id"),
        ({"email": None, "delivery_id": 10**9}, "delivery_id"),
        ({"email": None, "delivery_id": 10**30}, "delivery_id"),
        ({"email": None, "contact_id": -1}, "contact_id"),
        ({"email": None, "contact_id": "7"}, "contact_id"),
        ({"email": None}, "contact_id"),
    ],
)
def test_bad_conversion_input_is_refused_naming_the_field(session, fields, named):
    add_sent(session)
    arguments = {"order_id": "C-1", "value": "10.00", "currency": "EUR", "email": "ana@example.com", **fields}
    with pytest.raises(ConversionError) as error:
        record_conversion(session, **arguments, **_settings())
    assert str(error.value).startswith(f"{named}:")
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Response)) == 0


def test_a_concurrent_duplicate_order_ends_as_not_created(engine, session):
    add_sent(session)
    factory = make_session_factory(engine)
    barrier = threading.Barrier(4)
    outcomes, errors = [], []

    def convert():
        try:
            with factory() as own:
                barrier.wait()
                _, created = record_conversion(
                    own, order_id="D-1", value="10", currency="EUR", email="ana@example.com", **_settings()
                )
                own.commit()
                outcomes.append(created)
        except Exception as exc:  # reported below, with its type
            errors.append(repr(exc))

    threads = [threading.Thread(target=convert) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(outcomes) == [False, False, False, True]
    assert session.scalar(select(func.count()).where(Response.kind == "conversion")) == 1


def _settings(contact=None, window_days=30.0) -> dict:
    settings = {"window_days": window_days, "half_life_days": HALF_LIFE, "source": "api"}
    if contact is not None:
        settings["contact_id"] = contact.id
    return settings


def test_clicked_pizza_in_30_days_is_a_segment(session):
    """Click events carry the block's top interest, so the segment compiler selects on it."""
    now = utcnow()
    campaign = Campaign(name="Weekly", definition={"name": "Weekly"})
    session.add(campaign)
    session.commit()
    pizza = pizza_link(session)
    (pasta,) = register_links(session, ["https://shop.example.com/pasta"], 42, interests={"pasta": 1.0})
    session.commit()
    clicks = {
        "recent@example.com": (pizza, HUMAN, 3),
        "pasta@example.com": (pasta, HUMAN, 3),
        "long-ago@example.com": (pizza, HUMAN, 40),
        "scanner@example.com": (pizza, SCANNER, 3),
        "none@example.com": None,
    }
    contacts = {}
    for address, click in clicks.items():
        contact, delivery = add_sent(session, address, campaign=campaign)
        delivery.sent_at = now - timedelta(days=60)
        session.commit()
        contacts[address] = contact.id
        if click:
            link_id, client, days_ago = click
            when = now - timedelta(days=days_ago)
            record_click(session, delivery.id, link_id, client, half_life_days=HALF_LIFE, now=when)
            session.commit()
    rule = {"event": {"type": "click", "channel": "email", "within_days": 30, "where": {"interest": "pizza"}}}
    rule.update(op="gte", value=1)
    found = {c.email for c in preview_contacts(session, rule, now=now, half_life_days=HALF_LIFE)}
    assert found == {"recent@example.com", "scanner@example.com"}
    rule["event"]["where"]["machine"] = False
    found = {c.email for c in preview_contacts(session, rule, now=now, half_life_days=HALF_LIFE)}
    assert found == {"recent@example.com"}


def test_concurrent_clicks_are_all_recorded(engine, session):
    """Four writers at once (as gunicorn workers are): no click is lost and none fails on a lock."""
    contact, delivery = add_sent(session)
    link_id = pizza_link(session)
    factory = make_session_factory(engine)
    barrier = threading.Barrier(4)
    errors = []

    def click():
        try:
            with factory() as own:
                barrier.wait()
                for _ in range(25):
                    assert record_click(own, delivery.id, link_id, HUMAN, half_life_days=HALF_LIFE)
                    own.commit()
        except Exception as exc:  # reported below, with its type
            errors.append(repr(exc))

    threads = [threading.Thread(target=click) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert session.scalar(select(func.count()).where(Response.kind == "click")) == 100
    assert len(events(session, contact.id, "click")) == 100
    assert scores(session, contact.id)["pizza"] == pytest.approx(100 * learning.CLICK_POINTS, rel=1e-3)
