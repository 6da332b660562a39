"""What any HTTP client may send the public endpoints: HEAD records nothing, and a body over its endpoint's limit
is a 413 whether it comes with a Content-Length or chunked (through ``patron serve``, on both databases)."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from delivery.models import Response
from segments.models import Contact, Suppression
from tests.web.test_api_keys import bearer, make_key
from tests.web.test_bounce_webhook import dsn
from tests.web.test_conversions import ORDER, server  # noqa: F401  (a fixture)
from web.tracking import clicks

ANA, BOB = "ana@example.com", "bob@example.com"
PAD = b" " * 30_000  # past every 16 KiB limit


def chunked_post(base: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` with ``Transfer-Encoding: chunked`` (no Content-Length), as curl does from a pipe:
    (status, headers, body) of the answer."""
    where = urlsplit(base)
    lines = [f"POST {path} HTTP/1.1", f"Host: {where.netloc}", "Transfer-Encoding: chunked", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    for start in range(0, len(body), 4096):
        chunk = body[start : start + 4096]
        request += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    request += b"0\r\n\r\n"
    with socket.create_connection((where.hostname, where.port), timeout=60) as connection:
        try:
            connection.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before it read everything: its answer is still there to read
        answer = b""
        while data := connection.recv(65536):
            answer += data
    head, _, content = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), fields, content


def count(session, model, *where) -> int:
    session.commit()  # ends the read transaction: see what the server committed
    return session.scalar(select(func.count()).select_from(model).where(*where))


# -- HEAD ---------------------------------------------------------------------------------------------


def test_head_of_the_open_pixel_answers_as_get_and_records_no_open(client, sent, session):
    pixel = sent[ANA].pixel
    head = client.head(pixel)
    assert head.status_code == 200 and head.get_data() == b""
    assert session.scalar(select(func.count()).select_from(Response)) == 0
    get = client.get(pixel)
    assert {name: head.headers[name] for name in ("Content-Type", "Content-Length", "Cache-Control")} == {
        name: get.headers[name] for name in ("Content-Type", "Content-Length", "Cache-Control")
    }
    assert count(session, Response, Response.kind == "open") == 1  # the GET, not the HEAD


def test_head_of_the_conversion_pixel_records_no_conversion(client, sent, session):
    clicked = client.get(sent[ANA].clicks[0], headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0)"})
    assert "patron_click=" in clicked.headers["Set-Cookie"]
    clicks.flush(client.application)
    head = client.head("/c.gif?order_id=H-1&value=5&currency=EUR")
    assert (head.status_code, head.headers["Content-Type"]) == (200, "image/gif")
    assert count(session, Response, Response.kind == "conversion") == 0
    assert client.get("/c.gif?order_id=H-1&value=5&currency=EUR").status_code == 200
    assert count(session, Response, Response.kind == "conversion") == 1


def test_head_of_a_click_and_of_the_unsubscribe_page_record_nothing(client, sent, session):
    mail = sent[BOB]
    assert client.head(mail.clicks[0]).status_code == 302
    assert client.head(mail.unsubscribe).status_code == 200
    clicks.flush(client.application)
    assert count(session, Response) == 0


# -- bodies over the limit, chunked ---------------------------------------------------------------------


def test_a_padded_conversion_sent_chunked_is_413_and_records_nothing(server, session):  # noqa: F811
    contact = Contact(email=ANA, status="active")
    session.add(contact)
    session.commit()
    headers = {**bearer(make_key(session)), "Content-Type": "application/json"}
    status, fields, body = chunked_post(server, "/api/v1/conversions", json.dumps(ORDER).encode() + PAD, headers)
    assert (status, fields["Content-Type"]) == (413, "application/json")
    assert json.loads(body)["error"].startswith("body: larger than")
    assert count(session, Response) == 0
    status, _fields, body = chunked_post(server, "/api/v1/conversions", json.dumps(ORDER).encode() + b" ", headers)
    assert status == 201 and json.loads(body)["created"] is True  # chunked within the limit is read whole


def test_a_bounce_over_its_limit_sent_chunked_is_413(server, session):  # noqa: F811
    headers = {**bearer(make_key(session, "mta", ["bounces"])), "Content-Type": "message/rfc822"}
    raw = dsn(ANA) + b"X" * (10 * 1024 * 1024)
    status, fields, body = chunked_post(server, "/api/v1/bounces", raw, headers)
    assert (status, fields["Content-Type"]) == (413, "application/json")
    status, _fields, body = chunked_post(server, "/api/v1/bounces", dsn(ANA), headers)
    assert status == 200 and json.loads(body)["kind"] == "hard"


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"List-Unsubscribe=One-Click" + PAD, "text/plain"),
        (b"List-Unsubscribe=One-Click&pad=" + b"x" * 30_000, "application/x-www-form-urlencoded"),
    ],
    ids=["plain", "form"],
)
def test_a_padded_one_click_post_sent_chunked_is_413_and_unsubscribes_nobody(
    server,  # noqa: F811
    sent,
    session,
    body,
    content_type,
):
    mail = sent[BOB]
    status, _fields, _body = chunked_post(server, mail.unsubscribe, body, {"Content-Type": content_type})
    assert status == 413
    assert count(session, Suppression) == 0 and count(session, Response) == 0
    status, _fields, _body = chunked_post(server, mail.unsubscribe, b"List-Unsubscribe=One-Click", {})
    assert status == 200 and count(session, Suppression) == 1  # the same POST unpadded, chunked, is read whole
