"""The loop through real parts: a campaign sent over a real SMTP server (aiosmtpd), its links followed
over real HTTP to ``patron serve`` (gunicorn) on both databases."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import lxml.html
import requests
from sqlalchemy import func, select

from delivery.models import Delivery, Link, Response
from segments.models import Consent, Contact, Event
from tests.campaigns.conftest import add_campaign, add_contacts, patron_environment, start_send
from tests.web.test_tracking_endpoints import tampered
from tests.web.tracking_fixtures import PEOPLE, eventually, free_port, read_mail, serving


def send(env, campaign_id: int) -> None:
    sender = start_send(env, campaign_id)
    _out, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, err


def request(base: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One request on a fresh connection, redirects not followed: (status, headers, body)."""
    connection = http.client.HTTPConnection(urlsplit(base).netloc, timeout=20)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def fresh(session):
    session.commit()  # end the read transaction: see what the server committed
    return session


def test_send_click_tamper_unsubscribe_and_the_next_run_skips_them(session, engine, tmp_path, pack, smtp_server):
    port = free_port()
    env = {**patron_environment(engine, tmp_path, smtp_server.url), "PATRON_BASE_URL": f"http://127.0.0.1:{port}"}
    people = [dict(person) for person in PEOPLE]

    for person in add_contacts(session, people):
        session.merge(Consent(contact_id=person.id, purpose="tracking", granted=True, source="test"))
    session.commit()
    first = add_campaign(session)
    send(env, first.id)
    ids = dict(fresh(session).execute(select(Delivery.email, Delivery.id)).all())
    mails = {}
    for envelope in smtp_server.messages:
        mail = read_mail(envelope.content, ids, base_url=env["PATRON_BASE_URL"])
        mails[mail.email] = mail
    ana, bob = mails["ana@example.com"], mails["bob@example.com"]

    with serving(env, "--workers", "2", port=port) as (base, _process):
        # A click: 302 to the URL registered at send time, recorded with its link.
        status, headers, _ = request(base, "GET", bob.clicks[0])
        link_id = int(bob.clicks[0].split("/")[3])
        assert status == 302
        assert headers["Location"] == fresh(session).get(Link, link_id).url
        # Recorded by the server's click journal a moment after the answer.
        clicked = select(Response.delivery_id, Response.link_id).where(Response.kind == "click")
        clicks = eventually(lambda: fresh(session).execute(clicked).all(), [(bob.delivery_id, link_id)])
        assert clicks == [(bob.delivery_id, link_id)]
        assert session.scalar(select(func.count()).select_from(Event).where(Event.type == "click")) == 1

        # One byte changed: 404, nothing recorded, redirected nowhere.
        status, headers, _ = request(base, "GET", tampered(ana.clicks[0]))
        assert status == 404 and "Location" not in headers
        status, _, _ = request(
            base,
            "POST",
            tampered(ana.unsubscribe),
            b"List-Unsubscribe=One-Click",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 404
        assert fresh(session).scalar(select(func.count()).select_from(Response)) == 1

        # A GET of the unsubscribe URL (a link scanner) unsubscribes nobody.
        for _ in range(3):
            assert request(base, "GET", ana.unsubscribe)[0] == 200
        assert fresh(session).scalar(select(Contact.status).where(Contact.email == ana.email)) == "active"

        # The one-click POST exactly as Gmail sends it: no cookie, no CSRF token.
        status, _, body = request(
            base,
            "POST",
            ana.unsubscribe,
            b"List-Unsubscribe=One-Click",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200 and lxml.html.fromstring(body).get_element_by_id("unsubscribed") is not None
        assert fresh(session).scalar(select(Contact.status).where(Contact.email == ana.email)) == "unsubscribed"

    # Her marketing consent was withdrawn too; even if an import grants it again, the suppression holds:
    # the next run skips her (with the reason) and still sends to bob.
    ana_id = fresh(session).scalar(select(Contact.id).where(Contact.email == ana.email))
    session.merge(Consent(contact_id=ana_id, purpose="marketing", granted=True, source="import"))
    second = add_campaign(session, name="Next week")
    already = len(smtp_server.received())
    send(env, second.id)
    query = select(Delivery.email, Delivery.status, Delivery.reason).where(Delivery.run_id != first_run(session, ana))
    rows = {email: (status, reason) for email, status, reason in fresh(session).execute(query)}
    assert rows == {"ana@example.com": ("skipped", "contact status: unsubscribed"), "bob@example.com": ("sent", None)}
    assert [envelope.rcpt_tos for envelope in smtp_server.received()[already:]] == [("bob@example.com",)]


def first_run(session, mail) -> int:
    return session.scalar(select(Delivery.run_id).where(Delivery.id == mail.delivery_id))


def test_the_preference_page_over_http_with_its_csrf_token(session, engine, tmp_path, pack, smtp_server):
    port = free_port()
    env = {**patron_environment(engine, tmp_path, smtp_server.url), "PATRON_BASE_URL": f"http://127.0.0.1:{port}"}

    add_contacts(session, [dict(PEOPLE[1])])
    send(env, add_campaign(session).id)
    ids = dict(fresh(session).execute(select(Delivery.email, Delivery.id)).all())
    bob = read_mail(smtp_server.messages[0].content, ids, base_url=env["PATRON_BASE_URL"])
    with serving(env, port=port) as (base, _process), requests.Session() as browser:
        page = lxml.html.fromstring(browser.get(base + bob.unsubscribe, timeout=20).text)
        form = page.get_element_by_id("preferences")
        fields = [(name, value) for name, value in form.form_values() if name != "marketing"]
        fields += [("frequency", "monthly"), ("interests", "pizza"), ("save", "save")]
        fields = [(name, value) for name, value in fields if not (name == "frequency" and value == "none")]
        answer = browser.post(base + form.get("action"), data=fields, allow_redirects=False, timeout=20)
        assert answer.status_code == 303
        saved = lxml.html.fromstring(browser.get(base + answer.headers["Location"], timeout=20).text)
        assert saved.get_element_by_id("notice") is not None
        # Without the session cookie the CSRF token is worth nothing.
        assert requests.post(base + form.get("action"), data=fields, timeout=20).status_code == 400
    contact = fresh(session).scalar(select(Contact).where(Contact.email == bob.email))
    assert contact.frequency_cap == {"max": 1, "days": 30}
    assert session.get(Consent, (contact.id, "marketing")).granted is False
    assert session.get(Consent, (contact.id, "marketing")).source == "preference_page"
