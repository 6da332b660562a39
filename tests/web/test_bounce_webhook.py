"""POST /api/v1/bounces: one raw message per request, classified and applied by delivery.bounces."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from segments.models import Suppression
from tests.delivery.bounce_mail import FIXTURES
from tests.web.test_api_keys import bearer, make_key
from tests.web.test_conversions import sent_delivery

URL = "/api/v1/bounces"
MESSAGE_ID = "<run1.ana@patron.example.com>"


def dsn(recipient: str, status: str = "5.1.1", message_id: str = MESSAGE_ID) -> bytes:
    """A Postfix-shaped RFC 3464 delivery status notification for ``recipient``, quoting the original headers."""
    return (
        "From: MAILER-DAEMON@mx.shop.example (Mail Delivery System)\r\n"
        "To: bounces@patron.example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Date: Tue, 01 Dec 2026 03:00:00 +0000\r\n"
        "Message-ID: <20261201030000.ABC@mx.shop.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n"
        "--B\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n"
        "--B\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.shop.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        "Action: failed\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <{recipient}>: Recipient address rejected: User unknown\r\n"
        "--B\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        "From: Corner Shop <news@shop.example.com>\r\n"
        f"To: {recipient}\r\n"
        "Subject: Ana, this week\r\n"
        f"Message-ID: {message_id}\r\n"
        "--B--\r\n"
    ).encode()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def key(session):
    return make_key(session, "mta", ["bounces"])


def post(client, key, raw: bytes, content_type: str = "message/rfc822"):
    return client.post(URL, data=raw, content_type=content_type, headers=bearer(key))


@pytest.mark.parametrize("raw", [b"", b"\r\n \r\n"], ids=["empty", "blank"])
def test_an_empty_message_is_400(client, key, raw):
    response = post(client, key, raw)
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("body: empty")


def test_a_message_over_10_mib_is_413(client, key):
    response = post(client, key, b"x" * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.mimetype == "application/json"


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "multipart/form-data; boundary=x"])
def test_a_body_that_is_not_a_message_is_415(client, key, content_type):
    response = post(client, key, dsn("ana@example.com"), content_type)
    assert response.status_code == 415
    assert "message/rfc822" in response.get_json()["error"]


def test_a_hard_bounce_is_classified_matched_and_suppresses(client, key, session):
    delivery = sent_delivery(session)
    delivery.message_id = MESSAGE_ID
    session.commit()
    response = post(client, key, dsn("ana@example.com"))
    assert response.status_code == 200, response.get_data(as_text=True)
    result = response.get_json()
    assert (result["kind"], result["status"], result["recipient"]) == ("hard", "5.1.1", "ana@example.com")
    assert result["delivery_id"] == delivery.id
    session.expire_all()
    assert session.scalar(select(Suppression.email)) == "ana@example.com"


@pytest.mark.parametrize(
    "raw",
    [b"not a mail at all", b"\x00\xff" * 100, b"Content-Type: multipart/report; boundary=\r\n\r\n--\r\n"],
    ids=["text", "binary", "broken-mime"],
)
def test_a_hostile_message_is_reported_unrecognized_and_changes_nothing(client, key, session, raw):
    response = post(client, key, raw)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["kind"] == "unrecognized"
    assert response.get_json()["delivery_id"] is None
    assert session.scalar(select(Suppression.email)) is None


def test_a_bounce_matching_no_message_is_still_classified(client, key, session):
    response = post(client, key, dsn("nobody@example.com", message_id="<unknown@example.com>"))
    assert response.status_code == 200
    result = response.get_json()
    assert (result["kind"], result["delivery_id"]) == ("hard", None)


@pytest.mark.parametrize(
    "fixture, kind, suppressed", [("arf_complaint", "complaint", True), ("out_of_office", "auto_reply", False)]
)
def test_the_webhook_takes_the_same_messages_as_the_mailbox(client, key, session, fixture, kind, suppressed):
    """Part bounces' fixtures (an ARF complaint, an out-of-office reply) matched by the original Message-ID."""
    delivery = sent_delivery(session)
    delivery.message_id = MESSAGE_ID
    session.commit()
    raw = (FIXTURES / f"{fixture}.eml").read_bytes()
    for placeholder, value in (("@@RECIPIENT@@", "ana@example.com"), ("@@MESSAGE_ID@@", MESSAGE_ID)):
        raw = raw.replace(placeholder.encode(), value.encode())
    raw = raw.replace(b"@@VERP@@", b"bounces@patron.example.com")  # no VERP: the Message-ID must do
    response = post(client, key, raw)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["kind"] == kind
    session.expire_all()
    assert (session.scalar(select(Suppression.email)) == "ana@example.com") is suppressed
