"""After ``patron contacts erase``, every old token of the person answers as for an unknown message and records
nothing: the pixel, clicks (view, fast path, journal), one-click and the preference page, the conversion pixel and
API, and bounces. See docs/responses.md, "Privacy"."""

from __future__ import annotations

import json

import lxml.html
import pytest
from sqlalchemy import func, select

from campaigns.privacy import erase_person
from delivery.models import Delivery, Response
from delivery.tracking import LinkSigner
from segments.models import Consent, Contact, Event, Interest, Suppression
from tests.campaigns.conftest import BASE_URL, SECRET
from tests.web.test_api_keys import bearer, make_key
from tests.web.test_bounce_webhook import dsn
from web.tracking import clicks

ANA = "ana@example.com"


def erase(session, mail) -> int:
    """Erase the person ``mail`` went to, as ``patron contacts erase`` does; their contact id."""
    contact_id = session.scalar(select(Delivery.contact_id).where(Delivery.id == mail.delivery_id))
    erase_person(session, mail.email)
    session.commit()
    return contact_id


def consent_back(session, contact_id: int) -> None:
    """Tracking and profiling granted on the tombstone (what the old preference form let an old token do)."""
    for purpose in ("tracking", "profiling"):
        session.add(Consent(contact_id=contact_id, purpose=purpose, granted=True, source="test"))
    session.commit()


def left_of(session, client, contact_id: int) -> dict:
    """What Patron holds about the erased contact, once the click journal is drained."""
    clicks.flush(client.application)
    session.commit()  # ends the read transaction: see what the app committed
    mine = {"contact_id": contact_id}
    contact = session.get(Contact, contact_id)
    return {
        "responses": session.scalar(select(func.count()).select_from(Response).filter_by(**mine)),
        "events": session.scalar(select(func.count()).select_from(Event).filter_by(**mine)),
        "consents": sorted(session.scalars(select(Consent.source).filter_by(**mine).where(Consent.source != "test"))),
        "interests": session.scalar(select(func.count()).select_from(Interest).filter_by(**mine)),
        "suppressions": session.scalar(select(func.count()).select_from(Suppression)),
        "profile": (contact.status, contact.locale, contact.frequency_cap),
    }


NOTHING = {"responses": 0, "events": 0, "consents": [], "interests": 0, "suppressions": 0}


def assert_nothing_left(session, client, contact_id: int) -> None:
    left = left_of(session, client, contact_id)
    assert left.pop("profile") == ("deleted", None, None)
    assert left == NOTHING


def test_the_unsubscribe_url_and_the_preference_form_are_404_after_erasure(client, sent, session):
    mail = sent[ANA]
    before = lxml.html.fromstring(client.get(mail.unsubscribe).get_data(as_text=True))  # a tab left open
    form = before.get_element_by_id("preferences")
    fields = dict(form.form_values())
    contact_id = erase(session, mail)
    assert client.get(mail.unsubscribe).status_code == 404
    assert client.head(mail.unsubscribe).status_code == 404
    one_click = client.post(mail.unsubscribe, data=b"List-Unsubscribe=One-Click", content_type="text/plain")
    assert one_click.status_code == 404
    assert client.post(mail.unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 404
    chosen = {**fields, "locale": "es", "interests": "pizza", "frequency": "weekly", "tracking": "y", "save": "Save"}
    assert client.post(form.get("action"), data=chosen).status_code == 404
    assert client.post(form.get("action"), data={**fields, "unsubscribe": "Unsubscribe"}).status_code == 404
    assert_nothing_left(session, client, contact_id)


def test_old_pixels_and_clicks_record_nothing_even_if_consent_came_back(client, sent, session):
    mail = sent[ANA]
    contact_id = erase(session, mail)
    consent_back(session, contact_id)
    pixel = client.get(mail.pixel)
    assert (pixel.status_code, pixel.headers["Content-Type"]) == (200, "image/gif")  # as for an unknown message
    for path in mail.clicks:  # the fast path hands each to the view, which answers as for an unknown link
        answer = client.get(path, headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0)"})
        assert answer.status_code == 404 and "Set-Cookie" not in answer.headers
    assert_nothing_left(session, client, contact_id)


def test_the_view_records_no_click_of_an_erased_person_with_the_journal_off(sent, session, engine, tmp_path):
    from tests.web.tracking_fixtures import app_for

    mail = sent[ANA]
    contact_id = erase(session, mail)
    consent_back(session, contact_id)
    monkey = pytest.MonkeyPatch()
    try:
        app = app_for(engine, tmp_path, monkey, PATRON_CLICK_JOURNAL=None)
        client = app.test_client()
        assert client.get(mail.clicks[0]).status_code == 404
        assert_nothing_left(session, client, contact_id)
    finally:
        monkey.undo()


def test_a_click_journalled_before_the_erasure_is_not_recorded_after_it(client, sent, session):
    mail = sent[ANA]
    answer = client.get(mail.clicks[0], headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0)"})
    assert answer.status_code == 302  # journalled, not drained yet
    contact_id = erase(session, mail)
    consent_back(session, contact_id)
    assert_nothing_left(session, client, contact_id)


def test_the_conversion_pixel_with_an_old_click_cookie_records_nothing(client, sent, session):
    mail = sent[ANA]
    cookie = client.get(mail.clicks[0], headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0)"})
    assert cookie.status_code == 302 and "patron_click=" in cookie.headers["Set-Cookie"]  # the shop keeps it
    contact_id = erase(session, mail)
    answer = client.get("/c.gif?order_id=A-1&value=12.50&currency=EUR")
    assert (answer.status_code, answer.headers["Content-Type"]) == (200, "image/gif")
    assert session.scalar(select(func.count()).select_from(Response).where(Response.kind == "conversion")) == 0
    assert_nothing_left(session, client, contact_id)


@pytest.mark.parametrize("named_by", ["click", "contact_id"])
def test_the_conversions_api_refuses_an_erased_persons_click_or_contact_id(client, sent, session, named_by):
    mail = sent[ANA]
    contact_id = erase(session, mail)
    key = make_key(session)
    signer = LinkSigner(SECRET, BASE_URL)
    who = {
        "click": f"{mail.delivery_id}.{signer.sign('c', mail.delivery_id)}",
        "contact_id": contact_id,
    }[named_by]
    order = {"order_id": "A-2", "value": "12.50", "currency": "EUR", named_by: who}
    answer = client.post(
        "/api/v1/conversions", data=json.dumps(order), content_type="application/json", headers=bearer(key)
    )
    assert answer.status_code == 422, answer.get_data(as_text=True)
    problem = answer.get_json()
    field = "contact_id" if named_by == "contact_id" else "delivery_id"
    assert list(problem["fields"]) == [field] and problem["error"].startswith(f"{field}: no ")
    assert session.scalar(select(func.count()).select_from(Response).where(Response.kind == "conversion")) == 0
    assert_nothing_left(session, client, contact_id)


def test_a_bounce_of_an_erased_persons_message_says_so_and_changes_nothing(client, sent, session):
    mail = sent[ANA]
    contact_id = erase(session, mail)
    key = make_key(session, "mta", ["bounces"])
    verp = LinkSigner(SECRET, BASE_URL).return_path(mail.delivery_id, "patron.example.com")
    raw = dsn(ANA).replace(b"To: bounces@patron.example.com", f"To: {verp}".encode())
    answer = client.post("/api/v1/bounces", data=raw, content_type="message/rfc822", headers=bearer(key))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    result = answer.get_json()
    assert result["kind"] == "hard" and result["delivery_id"] == mail.delivery_id
    assert "erased" in result["reason"] and "nothing changed" in result["reason"]
    assert_nothing_left(session, client, contact_id)
