"""The public pages' errors as a customer meets them: a bad link, an expired form, a wrong method, a padded form."""

from __future__ import annotations

import re
import time
import urllib.request
from urllib.parse import urlencode

import lxml.html
import pytest
from itsdangerous import TimestampSigner
from sqlalchemy import func, select

from segments.models import Consent, Contact, Event, Interest
from tests.web.test_conversions import server  # noqa: F401  (a fixture)
from tests.web.test_public_requests import chunked_post
from web.tracking.forms import FORM_LIFETIME_SECONDS

ANA = "ana@example.com"  # es-MX: her pages are in Spanish


def page(answer):
    return lxml.html.fromstring(answer.get_data(as_text=True))


def without_nonce(answer) -> str:
    return re.sub(r'nonce="[^"]*"', "", answer.get_data(as_text=True))


def the_form(client, mail) -> tuple[str, dict[str, str]]:
    """The preference form's action and fields (with its CSRF token) as the page shows them, choices changed."""
    form = page(client.get(mail.unsubscribe)).get_element_by_id("preferences")
    fields = dict(form.form_values())
    return form.get("action"), {**fields, "locale": "en", "frequency": "weekly", "tracking": "y", "save": "Save"}


def nothing_saved(session) -> bool:
    session.commit()  # ends the read transaction: see what the app committed
    contact = session.scalar(select(Contact).where(Contact.email == ANA))
    changed = select(func.count()).select_from(Consent).where(Consent.source == "preference_page")
    events = select(func.count()).select_from(Event).where(Event.type == "preferences")
    stated = select(func.count()).select_from(Interest).where(Interest.contact_id == contact.id, Interest.tag == "news")
    return (contact.locale, contact.frequency_cap) == ("es-MX", None) and not any(
        session.scalar(query) for query in (changed, events, stated)
    )


def test_a_post_with_a_bad_token_is_the_same_404_as_a_get(client, sent):
    mail = sent[ANA]
    action, fields = the_form(client, mail)
    bad = action.replace(mail.unsubscribe, mail.unsubscribe[:-1] + ("A" if mail.unsubscribe[-1] != "A" else "B"))
    for posted in ({}, fields):  # without and with a good CSRF token
        answer = client.post(bad, data=posted)
        assert answer.status_code == 404
        assert page(answer).xpath("string(//h1)") == "Page not found"


def test_a_form_posted_without_its_session_cookie_is_a_400_page_in_her_language_linking_back(client, sent, session):
    mail = sent[ANA]
    action, fields = the_form(client, mail)
    client.delete_cookie("session")  # the browser dropped it (a private window closed, cookies cleared)
    answer = client.post(action, data=fields)
    assert answer.status_code == 400
    shown = page(answer)
    assert shown.get("lang") == "es" and shown.xpath("string(//h1)") == "Este formulario ha caducado"
    assert shown.get_element_by_id("again").get("href") == mail.unsubscribe
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert nothing_saved(session)
    again = client.get(mail.unsubscribe)  # the link back serves a fresh form that saves
    assert again.status_code == 200
    action, fields = the_form(client, mail)
    assert client.post(action, data=fields).status_code == 303


@pytest.mark.parametrize("hours, saved", [(23, True), (25, False)])
def test_the_form_lives_a_day(client, sent, session, monkeypatch, hours, saved):
    assert FORM_LIFETIME_SECONDS == 24 * 3600 and client.application.config["WTF_CSRF_TIME_LIMIT"] == 24 * 3600
    mail = sent[ANA]
    action, fields = the_form(client, mail)
    later = int(time.time()) + hours * 3600
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _self: later)
    answer = client.post(action, data=fields)
    assert answer.status_code == (303 if saved else 400)
    assert nothing_saved(session) is not saved
    if not saved:
        assert page(answer).xpath("string(//h1)") == "Este formulario ha caducado"


def test_a_404_is_the_projects_page_in_the_visitors_language_and_says_nothing_about_the_token(client, sent, session):
    mail = sent[ANA]
    wrong_token = mail.unsubscribe[:-1] + ("A" if mail.unsubscribe[-1] != "A" else "B")
    no_such_message = "/u/999999/" + mail.unsubscribe.rsplit("/", 1)[1]
    answers = [
        client.get(path, headers={"Accept-Language": "de-AT, en;q=0.5"}) for path in (wrong_token, no_such_message)
    ]
    assert [answer.status_code for answer in answers] == [404, 404]
    assert without_nonce(answers[0]) == without_nonce(answers[1])
    shown = page(answers[0])
    assert shown.get("lang") == "de" and shown.xpath("string(//h1)") == "Seite nicht gefunden"
    assert answers[0].headers["X-Robots-Tag"].startswith("noindex")
    assert client.get("/nowhere").status_code == 404 and page(client.get("/nowhere")).get("lang") == "en"


def test_a_405_is_the_projects_page_with_its_allow_header(client, sent):
    mail = sent[ANA]
    answer = client.get(mail.unsubscribe + "/preferences")
    assert answer.status_code == 405 and "POST" in answer.headers["Allow"]
    assert page(answer).xpath("string(//h1)") == "This page cannot be used this way"
    assert client.put(mail.unsubscribe).status_code == 405


def test_a_padded_preference_form_sent_chunked_is_413_and_saves_nothing(server, sent, session):  # noqa: F811
    mail = sent[ANA]
    with urllib.request.urlopen(server + mail.unsubscribe, timeout=30) as answer:
        cookie = answer.headers["Set-Cookie"].split(";", 1)[0]
        form = lxml.html.fromstring(answer.read().decode()).get_element_by_id("preferences")
    fields = {**dict(form.form_values()), "locale": "en", "frequency": "weekly", "save": "Save"}
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
    body = urlencode(fields).encode()
    status, _fields, _body = chunked_post(server, form.get("action"), body + b"&pad=" + b"x" * 30_000, headers)
    assert status == 413 and nothing_saved(session)
    status, _fields, _body = chunked_post(server, form.get("action"), body, headers)
    assert status == 303 and not nothing_saved(session)  # the same form unpadded, chunked, is read whole
