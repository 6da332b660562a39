"""The closed loop end to end: a human click on a pizza block in run 1 puts pizza first in the next campaign."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import lxml.html
import pytest
from sqlalchemy import select

from delivery.models import Delivery, Link, Response
from delivery.responses import Client, record_click
from segments.models import Consent
from tests.campaigns.conftest import TOPICS, add_campaign, add_contacts, parts
from tests.campaigns.test_send import by_recipient, send

HUMAN = Client(user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0")
SCANNER = Client(user_agent="Mozilla/5.0 (compatible; Proofpoint URL Defense)")


def headings(message) -> list[str]:
    """The block headings of a sent email, in order: '<key> (<locale>)'."""
    return [h2.text_content().split(" ")[0] for h2 in lxml.html.fromstring(parts(message)[1]).iter("h2")]


def topic(key: str) -> str | None:
    return next((name for name, keys in TOPICS.items() if key in keys), None)


@pytest.mark.parametrize(
    ("client", "profiling", "hero"),
    [(HUMAN, True, "pizza"), (SCANNER, True, "pasta"), (HUMAN, False, "pasta"), (None, True, "pasta")],
    ids=["human-click", "machine-click", "no-profiling-consent", "no-click"],
)
def test_a_human_click_on_a_pizza_block_moves_pizza_first_in_the_next_run(
    session, engine, tmp_path, pack, smtp_server, client, profiling, hero
):
    (contact,) = add_contacts(
        session, [{"email": "ana@example.com", "locale": "en", "interests": {"pizza": 1.5, "pasta": 2.0}}]
    )
    session.add(Consent(contact_id=contact.id, purpose="profiling", granted=profiling, source="test"))
    session.commit()
    # Run 1: pasta leads; the offer slot shows a pizza block.
    first = add_campaign(session, name="Week 1", slots={"offer": {"interests": ["pizza"]}})
    send(engine, tmp_path, first.id, smtp_server.url, session)
    (message,) = by_recipient(smtp_server)["ana@example.com"]
    keys = headings(message)
    assert [topic(key) for key in keys] == ["pasta", "pizza"]

    # The click, on the pizza block's link as found in the email.
    clicks = [urlsplit(a.get("href")).path.split("/") for a in lxml.html.fromstring(parts(message)[1]).iter("a")]
    clicks = [(int(path[2]), int(path[3])) for path in clicks if path[1] == "r"]
    interests = dict(session.execute(select(Link.id, Link.interests)).all())
    delivery_id, link_id = next((d, link) for d, link in clicks if "pizza" in (interests[link] or {}))
    # Read an hour later: a click seconds after sending would be a prefetch (delivery.machine).
    delivery = session.get(Delivery, delivery_id)
    delivery.sent_at -= timedelta(hours=1)
    session.commit()
    if client is not None:
        url = record_click(session, delivery_id, link_id, client, half_life_days=30.0)
        session.commit()
        assert url == f"https://shop.example.com/{keys[1]}"
        assert session.scalar(select(Response.machine)) is (client is SCANNER)

    # Run 2 of another campaign: the hero follows what was learned.
    second = add_campaign(session, name="Week 2")
    send(engine, tmp_path, second.id, smtp_server.url, session)
    _, message = by_recipient(smtp_server)["ana@example.com"]
    assert topic(headings(message)[0]) == hero
