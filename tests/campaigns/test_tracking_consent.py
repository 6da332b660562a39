"""Tracking consent in the sent email: with it, a pixel and signed click links; without, neither (read with lxml)."""

from __future__ import annotations

from urllib.parse import urlsplit

import lxml.html
from sqlalchemy import select

from content.models import BlockVersion
from delivery.models import Link
from delivery.tracking import LinkSigner
from tests.campaigns.conftest import BASE_URL, SECRET, add_campaign, add_contacts, parts
from tests.campaigns.test_send import by_recipient, send

PEOPLE = [
    {"email": "tracked@example.com", "first_name": "Tia", "locale": "en", "interests": {"pizza": 3}},
    {"email": "private@example.com", "first_name": "Pia", "locale": "en", "interests": {"pizza": 3}},
]


def test_only_contacts_who_granted_tracking_get_a_pixel_and_tracked_links(session, engine, tmp_path, pack, smtp_server):
    add_contacts(session, [dict(PEOPLE[0])])
    add_contacts(session, [dict(PEOPLE[1])], tracking=False)
    campaign = add_campaign(session)
    send(engine, tmp_path, campaign.id, smtp_server.url, session)
    received = by_recipient(smtp_server)
    registered = set(session.scalars(select(Link.url)))
    signer = LinkSigner(SECRET, BASE_URL)

    (tracked,) = received["tracked@example.com"]
    text, html = parts(tracked)
    tree = lxml.html.fromstring(html)
    pixels = [img.get("src") for img in tree.iter("img") if img.get("width") == "1"]
    assert len(pixels) == 1 and urlsplit(pixels[0]).path.startswith("/o/")
    hrefs = [a.get("href") for a in tree.iter("a")]
    clicks = [href for href in hrefs if urlsplit(href).path.startswith("/r/")]
    assert clicks and all(href.startswith(BASE_URL) for href in hrefs)
    for href in clicks:  # each is a valid signed click on a registered link
        _, _, delivery_id, link_id, token = urlsplit(href).path.split("/")
        assert signer.verify(token, "r", int(delivery_id), int(link_id))
    assert "https://shop.example.com/" not in text

    (private,) = received["private@example.com"]
    text, html = parts(private)
    tree = lxml.html.fromstring(html)
    assert [img.get("src") for img in tree.iter("img") if "/o/" in (img.get("src") or "")] == []
    hrefs = [a.get("href") for a in tree.iter("a")]
    plain = [href for href in hrefs if not urlsplit(href).path.startswith("/u/")]
    assert plain and set(plain) <= registered  # the registered URLs themselves
    assert all(not urlsplit(href).path.startswith(("/r/", "/o/")) for href in hrefs)
    assert f"{BASE_URL}/r/" not in text and f"{BASE_URL}/o/" not in text
    # Unsubscribing is not tracking: the link and both headers stay.
    assert any(urlsplit(href).path.startswith("/u/") for href in hrefs)
    assert private["List-Unsubscribe"].startswith(f"<{BASE_URL}/u/")
    assert private["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_links_are_registered_with_their_blocks_interest_weights(session, engine, tmp_path, pack, smtp_server):
    add_contacts(session, [dict(PEOPLE[0])])
    send(engine, tmp_path, add_campaign(session).id, smtp_server.url, session)
    weights = dict(session.execute(select(BlockVersion.id, BlockVersion.interests)).all())
    links = session.execute(select(Link.block_version_id, Link.interests)).all()
    assert any(version is None for version, _ in links)
    for version, interests in links:
        assert interests == (None if version is None else weights[version])
