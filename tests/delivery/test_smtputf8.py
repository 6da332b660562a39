"""Internationalized local parts (``jürgen@example.de``): sent with SMTPUTF8 where the server offers it.

The address is written in UTF-8 in the To header (RFC 6532) and in the envelope (RFC 6531); the
domain is still written in IDNA form. A server without SMTPUTF8 cannot take such a message: that
recipient fails permanently, saying why, and the others go on. ASCII recipients are sent as before,
7-bit and without the extension.
"""

from __future__ import annotations

import email
import email.policy

import pytest
from sqlalchemy import select

from campaigns.executors import execute_run
from campaigns.runs import start_run
from delivery.message import Address, HeaderError, ascii_email, header_email, sending_domain
from delivery.models import Delivery
from delivery.transports import PermanentError, open_transport
from tests.campaigns import conftest as campaign_fixtures
from tests.campaigns.conftest import add_campaign, add_contacts, worker_config
from tests.delivery.messages import assert_within_limits, build, parse, parts
from tests.delivery.smtp_server import SmtpServer

pack = campaign_fixtures.pack  # the fixture: the campaigns tests' pack, imported

SENDER = "news@shop.example.com"
JURGEN = "jürgen@example.de"


def parse_utf8(data: bytes) -> email.message.EmailMessage:
    """The message as an RFC 6532 reader takes it: UTF-8 text. (Python's bytes parser leaves the
    address's non-ASCII octets as surrogate escapes.)"""
    return email.message_from_string(data.decode("utf-8"), policy=email.policy.default)


@pytest.fixture
def utf8_server():
    """A server that offers SMTPUTF8."""
    with SmtpServer(smtputf8=True) as server:
        yield server


@pytest.fixture
def ascii_server():
    """A server that does not (aiosmtpd's default, and many a relay's)."""
    with SmtpServer(smtputf8=False) as server:
        yield server


def test_a_utf8_local_part_is_written_in_utf8_and_the_domain_in_idna():
    assert header_email(JURGEN) == JURGEN
    assert header_email("jürgen@bücher.example") == "jürgen@xn--bcher-kva.example"
    assert header_email("用户@例え.テスト") == "用户@xn--r8jz45g.xn--zckzah"
    assert sending_domain(Address("nachrichten@bücher.example")) == "xn--bcher-kva.example"
    with pytest.raises(HeaderError, match="only an SMTPUTF8 server takes it"):
        ascii_email(JURGEN)


def test_the_message_to_a_utf8_address_carries_it_in_utf8_and_reads_back():
    data = build(to=Address(JURGEN, "Jürgen Groß"))
    message = parse_utf8(data)

    (to,) = message["To"].addresses
    assert (to.addr_spec, to.display_name) == (JURGEN, "Jürgen Groß")
    head, _, body = data.partition(b"\r\n\r\n")
    assert [line for line in head.split(b"\r\n") if not line.isascii()] == [
        b"To: =?utf-8?b?SsO8cmdlbiBHcm/Dnw==?= <" + JURGEN.encode() + b">"
    ]
    assert body.isascii()  # only the address needs 8 bits: the parts stay quoted-printable
    assert_within_limits(data)
    assert parts(message) == parts(parse(build()))


def test_smtp_sends_a_utf8_address_with_smtputf8_when_the_server_offers_it(utf8_server, tmp_path):
    with open_transport(utf8_server.url, instance_path=tmp_path) as transport:
        transport.send(SENDER, JURGEN, build(to=Address(JURGEN)))
        transport.send(SENDER, "jane@example.org", build())

    utf8, plain = utf8_server.received()
    assert utf8.rcpt_tos == (JURGEN,)
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(utf8.mail_options)
    assert parse_utf8(utf8.content)["To"].addresses[0].addr_spec == JURGEN
    # The 7-bit path is unchanged: no extension for an ASCII recipient, even on the same connection.
    assert plain.rcpt_tos == ("jane@example.org",)
    assert not {"SMTPUTF8", "BODY=8BITMIME"} & set(plain.mail_options)
    assert plain.content.isascii()


def test_a_server_without_smtputf8_fails_that_recipient_alone_and_says_why(ascii_server, tmp_path):
    with open_transport(ascii_server.url, instance_path=tmp_path) as transport:
        with pytest.raises(PermanentError, match=r"jürgen@example\.de: .* needs SMTPUTF8, .* does not offer it"):
            transport.send(SENDER, JURGEN, build(to=Address(JURGEN)))
        transport.send(SENDER, "jane@example.org", build())

    assert [message.rcpt_tos for message in ascii_server.received()] == [("jane@example.org",)]


def test_the_outbox_stores_a_message_to_a_utf8_address(tmp_path):
    with open_transport(f"outbox://{tmp_path / 'mail'}", instance_path=tmp_path) as transport:
        transport.send(SENDER, JURGEN, build(to=Address(JURGEN)))

    (stored,) = (tmp_path / "mail" / "new").iterdir()
    message = parse_utf8(stored.read_bytes())
    assert str(message["Delivered-To"]) == JURGEN
    assert message["To"].addresses[0].addr_spec == JURGEN


@pytest.mark.parametrize("offers_smtputf8", [True, False], ids=["with SMTPUTF8", "without SMTPUTF8"])
def test_a_campaign_reaches_a_utf8_address_or_fails_that_row_alone(session, engine, tmp_path, pack, offers_smtputf8):
    add_contacts(session, [{"email": JURGEN, "first_name": "Jürgen"}, {"email": "ana@example.com"}])
    campaign = add_campaign(session)
    run = start_run(session, campaign.id)
    session.commit()
    with SmtpServer(smtputf8=offers_smtputf8) as server:
        execute_run(worker_config(engine, tmp_path, server.url), run.id)
        received = sorted(rcpt for message in server.received() for rcpt in message.rcpt_tos)
    session.expire_all()

    rows = {row.email: (row.status, row.reason) for row in session.scalars(select(Delivery))}
    assert rows["ana@example.com"] == ("sent", None)
    if offers_smtputf8:
        assert rows[JURGEN] == ("sent", None)
        assert received == ["ana@example.com", JURGEN]
    else:
        assert rows[JURGEN][0] == "failed" and "needs SMTPUTF8" in rows[JURGEN][1]
        assert received == ["ana@example.com"]
