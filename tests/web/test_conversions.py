"""POST /api/v1/conversions and the /c.gif pixel, through the Flask test client on both databases."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from campaigns.models import Campaign, Run
from delivery.models import Delivery, Response
from delivery.tracking import LinkSigner
from segments.db import utcnow
from segments.models import Contact
from tests.campaigns.conftest import SECRET, patron_environment
from tests.web.test_api_keys import bearer, make_key

URL = "/api/v1/conversions"
ORDER = {"order_id": "A-1001", "value": "42.50", "currency": "EUR", "email": "ana@example.com"}


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def key(session):
    return make_key(session, "shop", ["conversions"])


def sent_delivery(session, email: str = "ana@example.com") -> Delivery:
    """A contact with one sent message of a finished run."""
    contact = Contact(email=email, status="active")
    campaign = Campaign(name="Weekly", definition={})
    session.add_all([contact, campaign])
    session.flush()
    run = Run(campaign_id=campaign.id, state="finished", rules={}, content={})
    session.add(run)
    session.flush()
    delivery = Delivery(run_id=run.id, contact_id=contact.id, status="sent", email=email, sent_at=utcnow())
    session.add(delivery)
    session.commit()
    return delivery


def click_cookie(app, delivery_id: int) -> str:
    """The ``patron_click`` value part tracking sets on a click redirect."""
    signer = LinkSigner(app.config["SECRET_KEY"], app.config["PATRON_BASE_URL"])
    return f"{delivery_id}.{signer.sign('c', delivery_id)}"


def conversions(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Response).where(Response.kind == "conversion"))


def post(client, key, body, **kwargs):
    return client.post(URL, json=body, headers=bearer(key), **kwargs)


def assert_error(response, status: int, field: str | None = None):
    assert response.status_code == status, response.get_data(as_text=True)
    answer = response.get_json()
    assert "\n" not in answer["error"]
    if field is not None:
        assert field in answer["fields"], answer
        assert answer["error"].startswith(f"{field}:") or f"; {field}:" in answer["error"]
    return answer


# Validation: each bad field is named, nothing is recorded.

FUTURE = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()


@pytest.mark.parametrize(
    "change, field",
    [
        ({"order_id": ""}, "order_id"),
        ({"order_id": "x" * 256}, "order_id"),
        ({"order_id": "A\r\nBcc: x"}, "order_id"),
        ({"order_id": "A\x00"}, "order_id"),
        ({"order_id": 1001}, "order_id"),
        ({"value": "-1"}, "value"),
        ({"value": -1}, "value"),
        ({"value": "1e3"}, "value"),
        ({"value": "12,50"}, "value"),
        ({"value": True}, "value"),
        ({"value": None}, "value"),
        ({"value": "1" * 25}, "value"),
        ({"value": 10**13}, "value"),
        ({"value": "0.001"}, "value"),  # EUR has cents
        ({"currency": "EURO"}, "currency"),
        ({"currency": "ZZZ"}, "currency"),
        ({"currency": 978}, "currency"),
        ({"email": "x" * 300}, "email"),
        ({"email": None, "contact_id": "7"}, "contact_id"),
        ({"email": None, "contact_id": 0}, "contact_id"),
        ({"email": None, "contact_id": 2**63}, "contact_id"),
        ({"email": None, "click": "1.AAAA.AAAAAAAAAAAAAAAA"}, "click"),
        ({"email": None, "click": "../../etc"}, "click"),
        ({"occurred_at": FUTURE}, "occurred_at"),
        ({"occurred_at": "2026-11-30T10:00:00"}, "occurred_at"),  # no offset: which time zone?
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": "1999-12-31T23:59:59Z"}, "occurred_at"),
        ({"coupon": "SAVE10"}, "coupon"),
    ],
)
def test_a_bad_field_is_422_naming_it(client, key, session, change, field):
    body = {name: value for name, value in {**ORDER, **change}.items() if value is not None}
    assert_error(post(client, key, body), 422, field)
    assert conversions(session) == 0


@pytest.mark.parametrize("currency", ["XXX", "XTS", "XAU", "XDR", "DEM"])
def test_a_code_that_is_no_money_in_use_is_not_a_currency(client, key, session, currency):
    answer = assert_error(post(client, key, {**ORDER, "currency": currency}), 422, "currency")
    assert answer["fields"]["currency"] == ["must be the ISO 4217 code of a currency in use, like EUR"]
    assert conversions(session) == 0


def test_a_field_s_problem_is_said_once_without_its_name_again(client, key, session):
    # A negative amount is out of range whether it comes as a string or a number.
    as_text = assert_error(post(client, key, {**ORDER, "value": "-1"}), 422, "value")
    as_number = assert_error(post(client, key, {**ORDER, "value": -1}), 422, "value")
    assert as_text["fields"] == as_number["fields"] == {"value": ["must be between 0 and 1,000,000,000,000"]}
    # A problem record_conversion finds (not the schema) is answered the same way.
    finer = assert_error(post(client, key, {**ORDER, "value": "1.5", "currency": "JPY"}), 422, "value")
    assert finer["error"] == "value: JPY has 0 decimal places, 1.5 has more"
    assert finer["fields"] == {"value": ["JPY has 0 decimal places, 1.5 has more"]}


def test_a_contact_id_and_an_email_of_two_customers_is_422_not_a_guess(client, key, session):
    ana, bob = sent_delivery(session, "ana@example.com"), sent_delivery(session, "bob@example.com")
    body = {**ORDER, "contact_id": bob.contact_id}  # ORDER names ana by email
    answer = assert_error(post(client, key, body), 422, "email")
    assert answer["fields"] == {"email": [f"is not the address of contact {bob.contact_id}; name the customer once"]}
    assert conversions(session) == 0
    same = post(client, key, {**body, "email": " Bob@Example.COM "})  # the same customer, spelt as a shop may
    assert same.status_code == 201, same.get_json()
    assert same.get_json()["conversion"]["contact_id"] == bob.contact_id != ana.contact_id


@pytest.mark.parametrize("missing", ["order_id", "value", "currency"])
def test_a_missing_field_is_named(client, key, missing):
    body = {name: value for name, value in ORDER.items() if name != missing}
    assert_error(post(client, key, body), 422, missing)


def test_who_bought_is_required(client, key):
    body = {name: value for name, value in ORDER.items() if name != "email"}
    answer = assert_error(post(client, key, body), 422, "email")
    assert "one of email, contact_id or click" in answer["error"]


@pytest.mark.parametrize(
    "raw, error",
    [
        (b"", "body: not valid JSON"),
        (b"{", "body: not valid JSON"),
        (b"\xff\xfe{}", "body: not valid JSON"),
        (b"[1, 2]", "body: must be a JSON object"),
        (b'"order"', "body: must be a JSON object"),
        (b"[" * 5000 + b"]" * 5000, "body: not valid JSON"),
        (b'{"order_id": "A", "value": NaN, "currency": "EUR", "email": "a@b.example"}', "body: not valid JSON"),
    ],
    ids=["empty", "truncated", "not-utf8", "array", "string", "deeply-nested", "nan"],
)
def test_a_body_that_is_not_a_json_object_is_400(client, key, raw, error):
    response = client.post(URL, data=raw, content_type="application/json", headers=bearer(key))
    assert assert_error(response, 400)["error"].startswith(error)


def test_a_body_over_16_kib_is_413_before_it_is_read(client, key):
    body = json.dumps({**ORDER, "order_id": "x" * 20_000}).encode()
    assert_error(client.post(URL, data=body, content_type="application/json", headers=bearer(key)), 413)


def test_a_body_that_is_not_json_is_415(client, key):
    response = client.post(URL, data="order_id=A-1001", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 401  # no key: authentication comes first
    response = client.post(URL, data="order_id=A-1001", headers=bearer(key), content_type="text/plain")
    assert "Content-Type" in assert_error(response, 415)["error"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
            lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children),
            max_leaves=20,
        ),
        st.fixed_dictionaries(
            {},
            optional={
                "order_id": st.text(max_size=300),
                "value": st.one_of(st.text(max_size=30), st.integers(), st.decimals(allow_nan=False), st.booleans()),
                "currency": st.sampled_from(["EUR", "JPY", "BHD", "usd", "ZZZ", ""]) | st.text(max_size=4),
                "email": st.emails() | st.text(max_size=40),
                "contact_id": st.integers() | st.text(max_size=5),
                "click": st.text(max_size=60),
                "occurred_at": st.datetimes(timezones=st.timezones()).map(datetime.isoformat) | st.text(max_size=30),
            },
        ),
    )
)
def test_any_json_body_gets_a_json_answer_never_a_500(client, key, body):
    response = client.post(
        URL, data=json.dumps(body, default=str), content_type="application/json", headers=bearer(key)
    )
    assert response.status_code < 500
    assert response.mimetype == "application/json"
    answer = response.get_json()
    assert isinstance(answer, dict) and ("error" in answer or "created" in answer)


# Recording: idempotent on the order id.


def test_a_conversion_is_recorded_once_per_order_id(client, key, session):
    delivery = sent_delivery(session)
    first = post(client, key, ORDER)
    assert first.status_code == 201, first.get_data(as_text=True)
    answer = first.get_json()
    assert answer["created"] is True
    assert answer["conversion"]["order_id"] == "A-1001"
    assert answer["conversion"]["value"] == "42.50"
    assert answer["conversion"]["currency"] == "EUR"
    assert answer["conversion"]["contact_id"] == delivery.contact_id

    again = post(client, key, {**ORDER, "value": 42.5})
    assert again.status_code == 200
    assert again.get_json()["created"] is False
    assert again.get_json()["conversion"]["id"] == answer["conversion"]["id"]
    assert conversions(session) == 1
    row = session.scalar(select(Response).where(Response.kind == "conversion"))
    assert (row.external_id, row.value_minor, row.currency) == ("A-1001", 4250, "EUR")


def test_a_conversion_by_click_is_attributed_to_that_message(app, client, key, session):
    delivery = sent_delivery(session)
    body = {"order_id": "B-7", "value": 1200, "currency": "jpy", "click": click_cookie(app, delivery.id)}
    response = post(client, key, body)
    assert response.status_code == 201, response.get_data(as_text=True)
    conversion = response.get_json()["conversion"]
    assert (conversion["delivery_id"], conversion["contact_id"]) == (delivery.id, delivery.contact_id)
    assert (conversion["value"], conversion["currency"]) == ("1200", "JPY")


def test_an_occurred_at_is_kept(client, key, session):
    sent_delivery(session)
    when = datetime(2026, 11, 30, 18, 30, tzinfo=timezone(timedelta(hours=2)))
    response = post(client, key, {**ORDER, "occurred_at": when.isoformat()})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert datetime.fromisoformat(response.get_json()["conversion"]["occurred_at"]) == when


# The pixel: always the same GIF, records only for a valid cookie and a valid query.


def gif_size(response) -> tuple[int, int]:
    assert response.status_code == 200
    assert response.mimetype == "image/gif"
    assert "no-store" in response.headers["Cache-Control"]
    data = response.get_data()
    assert data[:6] == b"GIF89a"
    return struct.unpack("<HH", data[6:10])


def test_the_pixel_records_a_conversion_for_the_click_cookie(app, client, session):
    delivery = sent_delivery(session)
    client.set_cookie("patron_click", click_cookie(app, delivery.id))
    response = client.get("/c.gif?order_id=P-1&value=19.99&currency=EUR&cb=123")
    assert gif_size(response) == (1, 1)
    assert conversions(session) == 1
    row = session.scalar(select(Response).where(Response.kind == "conversion"))
    assert (row.external_id, row.value_minor, row.delivery_id) == ("P-1", 1999, delivery.id)
    client.get("/c.gif?order_id=P-1&value=19.99&currency=EUR")  # the thank-you page reloaded
    assert conversions(session) == 1


@pytest.mark.parametrize(
    "cookie, query",
    [
        (None, "order_id=P-1&value=19.99&currency=EUR"),
        ("forged", "order_id=P-1&value=19.99&currency=EUR"),
        ("valid", "order_id=P-1&value=-3&currency=EUR"),
        ("valid", "order_id=P-1&value=19.99"),
        ("valid", "value=19.99&currency=EUR"),
        ("valid", "order_id=%00&value=1&currency=EUR"),
        ("valid", ""),
    ],
)
def test_the_pixel_records_nothing_for_a_bad_cookie_or_query_and_answers_the_gif(app, client, session, cookie, query):
    delivery = sent_delivery(session)
    if cookie == "valid":
        client.set_cookie("patron_click", click_cookie(app, delivery.id))
    elif cookie == "forged":
        other_token = click_cookie(app, delivery.id + 1).partition(".")[2]
        client.set_cookie("patron_click", f"{delivery.id}.{other_token}")  # another message's signature
    assert gif_size(client.get(f"/c.gif?{query}")) == (1, 1)
    assert conversions(session) == 0


# Through real HTTP: `patron serve` (gunicorn, 2 workers) on loopback, clients in threads.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(engine, tmp_path):
    """``patron serve`` in a process of its own on the test database; its base URL."""
    port = free_port()
    env = patron_environment(engine, tmp_path, f"outbox://{tmp_path / 'outbox'}")
    env["PATRON_BASE_URL"] = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"patron serve did not start: {(tmp_path / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.1)
    yield env["PATRON_BASE_URL"]
    process.terminate()
    process.wait(timeout=30)
    log.close()
    print((tmp_path / "serve.log").read_text()[-4000:])  # shown when a test fails


def http(url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; an HTTP error status is an answer, not an exception."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_same_orders_posted_concurrently_over_http_are_recorded_once_each(server, session):
    sent_delivery(session)
    key = make_key(session)
    headers = {**bearer(key), "Content-Type": "application/json"}
    orders = [json.dumps({**ORDER, "order_id": f"C-{number}"}).encode() for number in range(10)]
    barrier = threading.Barrier(2, timeout=60)

    def post_all(_thread: int) -> list[tuple[int, bytes]]:
        answers = []
        for body in orders:
            barrier.wait()  # both threads post each order at the same moment
            status, _headers, raw = http(f"{server}{URL}", body, headers)
            answers.append((status, raw))
        return answers

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(post_all, range(2))
    for pair in zip(first, second):
        assert sorted(status for status, _raw in pair) == [200, 201], pair
        assert sorted(json.loads(raw)["created"] for _status, raw in pair) == [False, True]
    assert conversions(session) == 10


def test_the_pixel_over_http_records_for_the_cookie_and_answers_the_gif(server, session, app):
    delivery = sent_delivery(session)
    # The server signs with the same secret (patron_environment's) as the app fixture's cookie helper here.
    cookie = f"{delivery.id}.{LinkSigner(SECRET, server).sign('c', delivery.id)}"
    status, headers, body = http(
        f"{server}/c.gif?order_id=H-1&value=5&currency=USD", headers={"Cookie": f"patron_click={cookie}"}
    )
    assert (status, headers["Content-Type"], body[:6]) == (200, "image/gif", b"GIF89a")
    assert http(f"{server}/c.gif?order_id=H-2&value=5&currency=USD")[0] == 200  # no cookie: nothing recorded
    session.expire_all()
    assert [(row.external_id, row.delivery_id) for row in session.scalars(select(Response))] == [("H-1", delivery.id)]


def test_unauthenticated_and_oversized_requests_over_http_get_json(server, session):
    key = make_key(session)
    status, headers, body = http(f"{server}{URL}", json.dumps(ORDER).encode(), {"Content-Type": "application/json"})
    assert (status, headers["Content-Type"]) == (401, "application/json")
    assert json.loads(body)["error"].startswith("Authorization")
    big = json.dumps({**ORDER, "order_id": "x" * 40_000}).encode()
    status, _headers, body = http(f"{server}{URL}", big, {**bearer(key), "Content-Type": "application/json"})
    assert status == 413 and "error" in json.loads(body)
