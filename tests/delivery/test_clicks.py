"""The batch writer of journalled clicks (``read_batch`` + ``record_clicks``) on both databases.

It proves that a batch read again after a crash records nothing twice; that the clicks the synchronous
path would refuse (unknown delivery or link, a delivery not sent, a contact without tracking consent) are
skipped without costing the rest of their batch; that machines are judged by the time of the click, not
the time of recording; and, as a property, that recording any sequence of clicks in one batch leaves
the same responses, timeline events and interest scores as ``delivery.responses.click`` one by one.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from campaigns.models import Campaign, Run
from campaigns.privacy import erase_person
from delivery import learning
from delivery.clicks import read_batch, record_clicks
from delivery.journal import ClickRecord
from delivery.models import Delivery, Response
from delivery.responses import Client, click
from delivery.tracking import register_links
from segments.db import make_session_factory, utcnow
from segments.models import Consent, Contact, Event, Interest

HUMAN = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4"
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HALF_LIFE = 30.0
PIZZA = {"pizza": 1.0, "family": 0.5}


def add_contact(session, email, *, tracking=True, profiling=True) -> Contact:
    contact = Contact(email=email, status="active")
    session.add(contact)
    session.flush()
    for purpose, granted in (("tracking", tracking), ("profiling", profiling), ("marketing", True)):
        if granted is not None:
            session.add(Consent(contact_id=contact.id, purpose=purpose, granted=granted, source="test"))
    session.flush()
    return contact


def add_delivery(session, contact: Contact, *, status="sent", sent_at=None) -> int:
    """One delivery of a run of its own (a contact gets one delivery per run); its id."""
    campaign = Campaign(name=f"Weekly {contact.email}", definition={"name": "Weekly"})
    session.add(campaign)
    session.flush()
    run = Run(campaign_id=campaign.id, state="finished", rules={}, content={})
    session.add(run)
    session.flush()
    delivery = Delivery(
        run_id=run.id,
        contact_id=contact.id,
        status=status,
        email=contact.email,
        sent_at=sent_at if sent_at is not None else utcnow() - timedelta(hours=1),
    )
    session.add(delivery)
    session.flush()
    return delivery.id


def add_link(session, url, block_version_id=None, interests=None) -> int:
    (link_id,) = register_links(session, [url], block_version_id, interests=interests)
    return link_id


def clicks(*specs, at=None) -> list[ClickRecord]:
    """ClickRecords keyed as the journal keys them, from (delivery_id, link_id[, user_agent]) tuples."""
    at = at or utcnow()
    return [
        ClickRecord(f"20260101T000000-1-cafe0000:{100 * n}", spec[0], spec[1], at, *(spec[2:] or (HUMAN,)))
        for n, spec in enumerate(specs)
    ]


def record(session, records, *, now=None) -> int:
    """Record a batch as the app's drainer does: read, end the read transaction, write, commit."""
    batch = read_batch(session, records)
    session.rollback()
    recorded = record_clicks(session, batch, half_life_days=HALF_LIFE, now=now)
    session.commit()
    return recorded


def responses(session):
    return session.execute(
        select(
            Response.external_id, Response.delivery_id, Response.link_id, Response.machine, Response.machine_reason
        ).order_by(Response.id)
    ).all()


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def scores(session, contact_id) -> dict[str, float]:
    return dict(session.execute(select(Interest.tag, Interest.score).where(Interest.contact_id == contact_id)).all())


def test_the_same_records_recorded_twice_are_recorded_once(session):
    ana = add_contact(session, "ana@example.com")
    delivery = add_delivery(session, ana)
    pizza = add_link(session, "https://shop.example.com/pizza", 41, PIZZA)
    session.commit()
    batch = clicks((delivery, pizza), (delivery, pizza), (delivery, pizza, SCANNER))

    assert record(session, batch) == 3
    after_one = (responses(session), count(session, Event), scores(session, ana.id))
    assert record(session, batch) == 0  # the batch read again after a crash before its .done mark
    assert record(session, batch[1:]) == 0
    assert (responses(session), count(session, Event), scores(session, ana.id)) == after_one
    assert len(after_one[0]) == 3 and after_one[1] == 3
    assert after_one[2] == pytest.approx({"pizza": 2 * learning.CLICK_POINTS, "family": learning.CLICK_POINTS})


def test_a_person_erased_between_reading_and_writing_a_batch_gets_nothing_recorded(session, engine):
    # The drainer reads a batch in one transaction and writes it in the next: an erasure may commit between.
    ana, bob = add_contact(session, "ana@example.com"), add_contact(session, "bob@example.com")
    pizza = add_link(session, "https://shop.example.com/pizza", 41, PIZZA)
    batch_records = clicks((add_delivery(session, ana), pizza), (add_delivery(session, bob), pizza))
    session.commit()
    batch = read_batch(session, batch_records)
    session.rollback()
    with make_session_factory(engine)() as other:  # patron contacts erase, meanwhile
        erase_person(other, "ana@example.com")
        other.commit()

    assert record_clicks(session, batch, half_life_days=HALF_LIFE) == 1
    session.commit()
    assert [row.delivery_id for row in responses(session)] == [batch_records[1].delivery_id]
    assert session.scalars(select(Event.contact_id)).all() == [bob.id]
    assert scores(session, ana.id) == {} and scores(session, bob.id)


def test_clicks_that_cannot_be_recorded_are_skipped_and_the_rest_of_the_batch_is_recorded(session):
    ana = add_contact(session, "ana@example.com")
    untracked = add_contact(session, "bob@example.com", tracking=False)
    unasked = add_contact(session, "cy@example.com", tracking=None)
    sent = add_delivery(session, ana)
    failed = add_delivery(session, add_contact(session, "dee@example.com"), status="failed")
    pending = add_delivery(session, add_contact(session, "eve@example.com"), status="pending")
    not_tracked = add_delivery(session, untracked)
    not_asked = add_delivery(session, unasked)
    pizza = add_link(session, "https://shop.example.com/pizza", 41, PIZZA)
    session.commit()
    batch = clicks(
        (sent + 1000, pizza),  # no such delivery
        (sent, pizza + 1000),  # no such link
        (failed, pizza),
        (sent, pizza),
        (pending, pizza),
        (not_tracked, pizza),
        (not_asked, pizza),
        (sent, pizza, SCANNER),
    )

    assert record(session, batch) == 2
    assert responses(session) == [
        (batch[3].key, sent, pizza, False, None),
        (batch[7].key, sent, pizza, True, "scanner"),
    ]
    assert session.execute(select(Event.contact_id, Event.type)).all() == [(ana.id, "click")] * 2
    assert set(session.scalars(select(Interest.contact_id))) == {ana.id}


def test_a_scanner_click_is_recorded_machine_made_and_teaches_nothing(session):
    ana = add_contact(session, "ana@example.com")
    delivery = add_delivery(session, ana)
    pizza = add_link(session, "https://shop.example.com/pizza", 41, PIZZA)
    session.commit()

    assert record(session, clicks((delivery, pizza, SCANNER), (delivery, pizza, BOT))) == 2
    assert [(r.machine, r.machine_reason) for r in responses(session)] == [(True, "scanner"), (True, "bot")]
    properties = session.scalars(select(Event.properties).order_by(Event.id)).all()
    assert [(p["machine"], p["machine_reason"]) for p in properties] == [(True, "scanner"), (True, "bot")]
    assert scores(session, ana.id) == {}


@pytest.mark.parametrize(
    ("clicked_after", "reason"),
    [(timedelta(seconds=3), "prefetch"), (timedelta(seconds=30), None)],
)
def test_prefetch_is_judged_by_when_the_click_came_not_when_it_was_recorded(session, clicked_after, reason):
    ana = add_contact(session, "ana@example.com")
    sent_at = utcnow() - timedelta(hours=1)
    delivery = add_delivery(session, ana, sent_at=sent_at)
    pizza = add_link(session, "https://shop.example.com/pizza", 41, PIZZA)
    session.commit()

    batch = clicks((delivery, pizza), at=sent_at + clicked_after)
    assert record(session, batch, now=sent_at + timedelta(minutes=1)) == 1  # drained a minute after sending
    (response,) = responses(session)
    assert response.machine_reason == reason and response.machine is (reason is not None)
    assert session.scalar(select(Response.occurred_at)) == sent_at + clicked_after
    assert session.scalar(select(Event.occurred_at)) == sent_at + clicked_after
    assert scores(session, ana.id) == ({} if reason else pytest.approx({"pizza": 1.0, "family": 0.5}))


def test_the_same_block_clicked_twice_in_one_batch_raises_its_tags_twice(session):
    ana = add_contact(session, "ana@example.com")
    first, second = add_delivery(session, ana), add_delivery(session, ana)
    pizza = add_link(session, "https://shop.example.com/pizza", 41, PIZZA)
    menu = add_link(session, "https://shop.example.com/pizza/menu", 41, PIZZA)
    bob = add_contact(session, "bob@example.com")
    bobs = add_delivery(session, bob)
    session.commit()

    assert record(session, clicks((first, pizza), (second, menu), (bobs, pizza))) == 3
    twice = {tag: 2 * learning.CLICK_POINTS * weight for tag, weight in PIZZA.items()}
    assert scores(session, ana.id) == pytest.approx(twice)
    assert scores(session, bob.id) == pytest.approx({tag: learning.CLICK_POINTS * w for tag, w in PIZZA.items()})


# -- the batch writer agrees with the one-click path --------------------------------------------------

AGENTS = (HUMAN, SCANNER, BOT, None, "Mozilla/5.0 " + "x" * 300)
# Any text a client may send, with what JSON, SQL and PostgreSQL's text treat specially (NUL among them).
HOSTILE = "\"\\\n\t\x00\x7f\u2028é中🍕{}[],:'%?"
agents = st.one_of(st.sampled_from(AGENTS), st.text(st.sampled_from(HOSTILE), max_size=40))


@pytest.fixture
def pool(session):
    """Deliveries and links for the property: who may be recorded, taught, judged a prefetch, or not at all."""
    now = utcnow()
    ana = add_contact(session, "ana@example.com")
    bob = add_contact(session, "bob@example.com", profiling=False)
    cy = add_contact(session, "cy@example.com", tracking=False)
    dee = add_contact(session, "dee@example.com")
    deliveries = [
        add_delivery(session, ana),
        add_delivery(session, ana),  # the same contact in another run: raises add up
        add_delivery(session, ana, sent_at=now - timedelta(seconds=3)),  # a prefetch whoever clicks
        add_delivery(session, bob),
        add_delivery(session, cy),
        add_delivery(session, dee, status="failed"),
        add_delivery(session, dee, status="unknown"),
    ]
    links = [
        add_link(session, "https://shop.example.com/pizza", 41, PIZZA),
        add_link(session, "https://shop.example.com/pasta", 42, {"pasta": 2.0, "wine": 0.25}),
        add_link(session, "https://shop.example.com/"),  # the layout's: no block, no interests
    ]
    session.commit()
    return {
        "now": now,
        "ana": ana.id,
        "deliveries": [*deliveries, max(deliveries) + 1000],
        "links": [*links, max(links) + 1000],
    }


def start_over(session, pool) -> None:
    """No responses, events or learned scores; ana's imported pizza score, ten days old."""
    session.rollback()  # after a failed example the session is still in its failed transaction
    session.execute(delete(Event))
    session.execute(delete(Response))
    session.execute(delete(Interest))
    session.add(Interest(contact_id=pool["ana"], tag="pizza", score=3.0, updated_at=pool["now"] - timedelta(days=10)))
    session.commit()


def outcome(session):
    """What a marketer can see: responses and events in order (their ids aside), and every score."""
    found = session.execute(
        select(
            Response.kind,
            Response.delivery_id,
            Response.run_id,
            Response.contact_id,
            Response.link_id,
            Response.block_version_id,
            Response.machine,
            Response.machine_reason,
            Response.user_agent,
            Response.occurred_at,
        ).order_by(Response.id)
    ).all()
    events = session.execute(
        select(Event.contact_id, Event.channel, Event.type, Event.source, Event.occurred_at, Event.properties).order_by(
            Event.id
        )
    ).all()
    learned = {
        (contact_id, tag): (score, at)
        for contact_id, tag, score, at in session.execute(
            select(Interest.contact_id, Interest.tag, Interest.score, Interest.updated_at)
        )
    }
    return [tuple(row) for row in found], [tuple(row) for row in events], learned


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_batch_records_what_the_one_click_path_records_click_by_click(session, pool, data):
    picks = data.draw(
        st.lists(
            st.tuples(st.sampled_from(pool["deliveries"]), st.sampled_from(pool["links"]), agents),
            max_size=12,
        )
    )
    now = pool["now"]

    start_over(session, pool)
    record(session, clicks(*picks, at=now), now=now)
    batched = outcome(session)

    start_over(session, pool)
    for delivery_id, link_id, agent in picks:
        click(session, delivery_id, link_id, Client(agent, "203.0.113.7"), half_life_days=HALF_LIFE, now=now)
    session.commit()
    one_by_one = outcome(session)

    assert batched[0] == one_by_one[0]
    assert batched[1] == one_by_one[1]
    assert batched[2].keys() == one_by_one[2].keys()
    for key, (score, at) in one_by_one[2].items():
        assert batched[2][key][0] == pytest.approx(score, rel=1e-6, abs=1e-6), key
        assert batched[2][key][1] == at, key
