"""The tracking endpoints through Flask's test client: every branch of /o/, /r/ and /u/ on both databases."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import lxml.html
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.exc import DataError, IntegrityError

from delivery.models import Link, Response
from segments.models import Consent, Contact, Event, Suppression
from tests.web.tracking_fixtures import refusing_agents, table_away, unwritable_journal
from web.tracking import clicks

NO_RETRY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def responses(session, client) -> int:
    """Responses stored, once the app's click journal is drained."""
    clicks.flush(client.application)
    session.commit()  # ends the read transaction: see what the app committed
    return session.scalar(select(func.count()).select_from(Response))


def contact_status(session, email) -> str:
    session.commit()  # ends the read transaction: see what the app committed
    return session.scalar(select(Contact.status).where(Contact.email == email))


def tampered(path: str) -> str:
    """The path with the last character of its token changed (one byte)."""
    last = path[-1] if not path.endswith(".gif") else path[-5]
    other = "A" if last != "A" else "B"
    return path[:-1] + other if not path.endswith(".gif") else path[:-5] + other + ".gif"


def test_the_pixel_is_a_real_uncached_1x1_gif_and_records_the_open(client, sent, session):
    answer = client.get(sent["ana@example.com"].pixel)
    assert answer.status_code == 200
    body = answer.get_data()
    assert len(body) == 43 and body[:6] == b"GIF89a" and struct.unpack("<HH", body[6:10]) == (1, 1)
    assert answer.headers["Content-Type"] == "image/gif"
    assert answer.headers["Cache-Control"] == "no-store, no-cache, must-revalidate, max-age=0"
    assert (answer.headers["Pragma"], answer.headers["Expires"]) == ("no-cache", "0")
    session.commit()
    assert session.scalar(select(Response.kind).where(Response.delivery_id == sent["ana@example.com"].delivery_id)) == (
        "open"
    )


def test_a_click_redirects_to_the_registered_url_records_it_and_sets_the_attribution_cookie(client, sent, session):
    mail = sent["bob@example.com"]
    link_id = int(mail.clicks[0].split("/")[3])
    answer = client.get(mail.clicks[0] + "?url=https://evil.example.org/", headers={"User-Agent": "Mozilla/5.0"})
    assert answer.status_code == 302
    session.commit()  # a fresh snapshot: see what the app committed
    assert answer.headers["Location"] == session.get(Link, link_id).url
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    cookie = client.get_cookie("patron_click")
    delivery, _, token = cookie.value.partition(".")
    assert int(delivery) == mail.delivery_id
    assert client.application.extensions["patron_signer"].verify(token, "c", mail.delivery_id)
    assert cookie.http_only and cookie.secure and cookie.same_site == "Lax"
    header = answer.headers["Set-Cookie"]
    assert "Max-Age=604800" in header.split("; ")
    assert clicks.flush(client.application) == 1  # journalled, then recorded by the drainer
    session.commit()
    recorded = session.scalars(select(Response).where(Response.kind == "click")).all()
    assert [(r.delivery_id, r.link_id) for r in recorded] == [(mail.delivery_id, link_id)]


@pytest.mark.parametrize("kind", ["pixel", "click", "unsubscribe"])
def test_one_byte_changed_in_a_token_is_a_404_and_records_nothing(client, sent, session, kind):
    mail = sent["ana@example.com"]
    path = {"pixel": mail.pixel, "click": mail.clicks[0], "unsubscribe": mail.unsubscribe}[kind]
    if kind == "unsubscribe":
        answer = client.post(tampered(path), data={"List-Unsubscribe": "One-Click"})
    else:
        answer = client.get(tampered(path))
    assert answer.status_code == 404
    assert "Location" not in answer.headers and client.get_cookie("patron_click") is None
    assert responses(session, client) == 0 and contact_status(session, mail.email) == "active"


def test_a_token_of_another_message_or_link_is_a_404(client, sent, session):
    ana, bob = sent["ana@example.com"], sent["bob@example.com"]
    _, r, delivery, link, token = ana.clicks[0].split("/")
    foreign = [
        f"/r/{bob.delivery_id}/{link}/{token}",  # ana's token on bob's message
        f"/r/{delivery}/{bob.clicks[0].split('/')[3]}/{token}",  # on a link ana never got
        f"/o/{delivery}/{token}.gif",  # a click token as an open token
    ]
    assert [client.get(path).status_code for path in foreign] == [404, 404, 404]
    assert client.post(f"/u/{delivery}/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert responses(session, client) == 0


@pytest.mark.parametrize(
    "path",
    ["/r/abc/1/x", "/r/1/-1/x", "/o/1.5/x.gif", "/u/%00/x", "/r/1/1", "/o/99999999999999999999999/tok.gif"],
)
def test_ids_that_are_not_whole_numbers_or_unsigned_are_404(client, path):
    assert client.get(path).status_code == 404


@NO_RETRY
@given(token=st.text(max_size=300))
def test_any_token_text_is_a_404_never_a_server_error(client, token):
    from urllib.parse import quote

    quoted = quote(token, safe="")
    # A "/" in the token makes another path: no route (404) or, for /u/, a route of another method (405).
    refused = {404} if "/" not in token else {404, 405}
    for path in (f"/r/1/1/{quoted}", f"/o/1/{quoted}.gif", f"/u/1/{quoted}"):
        assert client.get(path).status_code in refused
    assert client.post(f"/u/1/{quoted}", data={"List-Unsubscribe": "One-Click"}).status_code in refused


def test_one_click_post_exactly_as_gmail_sends_it_unsubscribes_with_no_cookie_or_csrf_token(client, sent, session):
    mail = sent["ana@example.com"]
    answer = client.post(
        mail.unsubscribe,
        data=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    page = lxml.html.fromstring(answer.get_data(as_text=True))
    assert page.get("lang") == "es" and page.get_element_by_id("unsubscribed") is not None
    assert contact_status(session, mail.email) == "unsubscribed"
    assert session.get(Suppression, mail.email).reason == "unsubscribed"
    # A second POST (mail providers retry) changes nothing more.
    assert client.post(mail.unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    kinds = session.scalars(select(Response.kind).where(Response.delivery_id == mail.delivery_id)).all()
    assert kinds == ["unsubscribe"]


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"", "application/x-www-form-urlencoded"),
        (b"List-Unsubscribe=Yes", "application/x-www-form-urlencoded"),
        (b"List-Unsubscribe=One-Click&List-Unsubscribe=One-Click", "application/x-www-form-urlencoded"),
        (b"unsubscribe", "text/plain"),
    ],
)
def test_any_other_body_is_a_400_and_unsubscribes_nobody(client, sent, session, body, content_type):
    mail = sent["bob@example.com"]
    assert client.post(mail.unsubscribe, data=body, headers={"Content-Type": content_type}).status_code == 400
    assert contact_status(session, mail.email) == "active" and responses(session, client) == 0


def test_a_huge_body_is_refused_before_it_is_read(client, sent, session):
    mail = sent["bob@example.com"]
    answer = client.post(
        mail.unsubscribe,
        data=b"List-Unsubscribe=One-Click&pad=" + b"x" * (1 << 20),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 413
    assert contact_status(session, mail.email) == "active"


def test_getting_the_unsubscribe_url_20_times_unsubscribes_nobody(client, sent, session):
    mail = sent["bob@example.com"]
    for _ in range(20):
        assert client.get(mail.unsubscribe).status_code == 200
        assert client.head(mail.unsubscribe).status_code == 200
    assert contact_status(session, mail.email) == "active"
    assert responses(session, client) == 0
    assert session.scalar(select(func.count()).select_from(Event).where(Event.source != "test")) == 0
    assert session.scalar(select(func.count()).select_from(Suppression)) == 0


def test_the_confirmation_page_has_one_button_posting_one_click_and_strict_headers(client, sent):
    mail = sent["bob@example.com"]
    answer = client.get(mail.unsubscribe)
    page = lxml.html.fromstring(answer.get_data(as_text=True))
    form = page.get_element_by_id("one-click")
    assert form.get("method") == "post" and form.get("action") == mail.unsubscribe
    assert dict(form.form_values()) == {"List-Unsubscribe": "One-Click"}
    assert len(form.xpath(".//button | .//input[@type='submit']")) == 1
    assert answer.headers["X-Robots-Tag"].startswith("noindex")
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    csp = dict(part.strip().split(" ", 1) for part in answer.headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    nonce = page.xpath("//style/@nonce")[0]
    assert csp["style-src"] == f"'nonce-{nonce}'"
    # The page's own button really unsubscribes (the browser sends the form as urlencoded).
    assert client.post(form.get("action"), data=dict(form.form_values())).status_code == 200


def test_a_delivery_that_is_gone_is_a_404_though_its_token_is_good(client, sent, session):
    mail = sent["bob@example.com"]
    session.delete(session.scalar(select(Contact).where(Contact.email == mail.email)))
    session.commit()
    assert client.get(mail.clicks[0]).status_code == 404
    assert client.get(mail.unsubscribe).status_code == 404
    assert client.post(mail.unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 404
    pixel = client.get(mail.pixel)  # the image is still answered: a broken image helps nobody
    assert pixel.status_code == 200 and pixel.headers["Content-Type"] == "image/gif"
    assert responses(session, client) == 0


def test_when_the_responses_table_fails_a_click_still_redirects_and_is_recorded_once_it_is_back(
    client, sent, session, engine
):
    mail = sent["bob@example.com"]
    assert client.get(mail.unsubscribe).status_code == 200  # the schema check has passed
    session.commit()
    with table_away(engine, "responses"):  # a real fault: the table the responses go to is not there
        click = client.get(mail.clicks[0])
        pixel = client.get(mail.pixel)
        with pytest.raises(Exception, match="responses"):  # the drainer's batch is refused, and kept
            clicks.flush(client.application)
    assert click.status_code == 302 and click.headers["Location"] and client.get_cookie("patron_click")
    assert pixel.status_code == 200 and pixel.get_data()[:6] == b"GIF89a"
    assert responses(session, client) == 1  # the open was lost (logged); the journalled click was not
    assert session.scalar(select(Response.kind)) == "click"


def test_when_the_database_cannot_be_read_a_click_is_a_503_that_redirects_nowhere(client, sent, session, engine):
    mail = sent["bob@example.com"]
    assert client.get(mail.unsubscribe).status_code == 200
    session.commit()
    with table_away(engine, "links"):  # the registered links cannot be read: there is nowhere to send anyone
        click = client.get(mail.clicks[0])
    assert click.status_code == 503 and "Location" not in click.headers
    assert client.get_cookie("patron_click") is None
    assert responses(session, client) == 0


def test_when_the_journal_cannot_be_written_the_click_is_recorded_before_the_answer(client, sent, session):
    mail = sent["bob@example.com"]
    unwritable_journal(client.application)
    answer = client.get(mail.clicks[0])
    assert answer.status_code == 302 and client.get_cookie("patron_click")
    session.commit()  # no flush: it is in the database already
    assert session.scalar(select(func.count()).select_from(Response).where(Response.kind == "click")) == 1
    assert session.scalar(select(func.count()).select_from(Event).where(Event.type == "click")) == 1


def test_when_neither_the_journal_nor_the_database_takes_a_click_it_is_a_503(client, sent, session, engine):
    mail = sent["bob@example.com"]
    unwritable_journal(client.application)
    with table_away(engine, "responses"):
        answer = client.get(mail.clicks[0])
    assert answer.status_code == 503 and "Location" not in answer.headers
    assert client.get_cookie("patron_click") is None


def test_a_click_after_tracking_consent_is_withdrawn_redirects_but_records_nothing_and_sets_no_cookie(
    client, sent, session
):
    mail = sent["bob@example.com"]
    contact_id = session.scalar(select(Contact.id).where(Contact.email == mail.email))
    session.merge(Consent(contact_id=contact_id, purpose="tracking", granted=False, source="test"))
    session.commit()
    answer = client.get(mail.clicks[0])
    assert answer.status_code == 302 and answer.headers["Location"]
    assert client.get_cookie("patron_click") is None and "Set-Cookie" not in answer.headers
    assert responses(session, client) == 0


def test_a_journal_directory_replaced_while_serving_sends_the_next_click_to_the_database(client, sent, session):
    mail = sent["bob@example.com"]
    assert client.get(mail.clicks[0]).status_code == 302  # journalled: the worker has a segment open
    journal = Path(client.application.config["PATRON_CLICK_JOURNAL"])
    journal.rename(journal.with_name("journal.moved"))  # an operator moves it away while the server runs
    journal.write_text("not a directory")
    answer = client.get(mail.clicks[1])
    assert answer.status_code == 302 and client.get_cookie("patron_click")
    session.commit()  # no flush: the second click was recorded before its answer
    recorded = session.scalars(select(Response.link_id).where(Response.kind == "click")).all()
    assert recorded == [int(mail.clicks[1].split("/")[3])]


def test_a_click_the_database_refuses_for_its_own_values_is_logged_skipped_and_holds_up_no_other(
    client, sent, session, engine, caplog
):
    mail = sent["bob@example.com"]
    agents = [f"Mozilla/5.0 (reader {n})" for n in range(7)]
    with refusing_agents(engine, agents[3]):
        for agent in agents:
            assert client.get(mail.clicks[0], headers={"User-Agent": agent}).status_code == 302
        with caplog.at_level(logging.ERROR, logger="web.tracking.clicks"):
            clicks.flush(client.application)
    session.commit()
    stored = session.scalars(select(Response.user_agent).where(Response.kind == "click")).all()
    assert sorted(stored) == sorted(agents[:3] + agents[4:])  # the six around it
    skipped = [r.getMessage() for r in caplog.records if "not recordable" in r.getMessage()]
    assert len(skipped) == 1 and f"delivery {mail.delivery_id}" in skipped[0] and "refused agent" in skipped[0]
    assert clicks.flush(client.application) == 0  # the journal is not stuck on it


@pytest.mark.parametrize("clicked", [3, 1])
def test_when_the_database_refuses_every_click_of_a_batch_none_is_skipped(client, sent, session, engine, clicked):
    # A constraint or trigger every row breaks (a schema ahead of the code, during a deploy) is the
    # database's fault, not the clicks': they stay in the journal and are recorded once it takes them.
    mail = sent["bob@example.com"]
    with refusing_agents(engine, "Mozilla/5.0%"):
        for n in range(clicked):
            assert client.get(mail.clicks[0], headers={"User-Agent": f"Mozilla/5.0 ({n})"}).status_code == 302
        with pytest.raises((DataError, IntegrityError)):
            clicks.flush(client.application)
    assert responses(session, client) == clicked  # flushed again with the trigger gone: all of them


@pytest.mark.parametrize("agent", ["Mozilla/5.0 \x00 NUL", "\x00", '"quoted" \\ back\\slash \u2028 \U0001f355'])
def test_any_user_agent_text_is_stored_as_sent_but_a_nul(client, sent, session, agent):
    # PostgreSQL's text cannot hold NUL: it becomes U+FFFD rather than failing the click's batch.
    mail = sent["bob@example.com"]
    assert client.get(mail.clicks[0], headers={"User-Agent": agent}).status_code == 302
    assert responses(session, client) == 1
    stored = session.scalar(select(Response.user_agent).where(Response.kind == "click"))
    assert stored == agent.replace("\x00", "\ufffd")
