"""One message built the way the tests build it: its template, its values, the parser that reads it, and
the check that its lines keep to the RFC limits."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

from delivery.message import Address, MessageTemplate

BODY_LINE = 76  # RFC 2045 6.7 (quoted-printable) and 6.8 (base64)
LINE = 998  # RFC 5322 2.1.1

SENDER = Address("news@shop.example.com", "Shop News")
REPLY_TO = Address("help@shop.example.com", "Shop Help")
URL = "https://shop.example.com/u/eyJjIjo0MiwiciI6N30.c2lnbmF0dXJl?l=es"
MAILTO = "mailto:unsubscribe@shop.example.com?subject=unsubscribe"
HTML = (
    '<p style="color:#333">¡Hola, José! Señor Müller — 田中さん 🎉</p>\n<a href="https://x.example/?a=1&b=2">Ver</a>\n'
)
TEXT = "¡Hola, José!\n\nVer: https://x.example/?a=1&b=2\n"
# Bodies that take each path of the quoted-printable encoder.
BODIES = {
    "dots and From": ".\n..leading dots\nFrom the start\n.\nFrom \n",
    "trailing white space": "space \ntab\t\nboth \t \n  \nends with a space ",
    "long lines": "x" * 500 + "\n" + "=" * 200 + "\n" + "é" * 150 + "\n" + ("word " * 100).strip(),
    "escapes everywhere": "a=b\0c\x7fd\x0ce\tf==\n=\n",
    "line ends": "crlf\r\nlone cr\rlf\n\r\n\n",
    "non-latin text": "Привет, мир! Это проверка. 日本語のテキスト、中文文本。 " * 20,
    "empty": "",
}


def template(**overrides) -> MessageTemplate:
    arguments = {
        "sender": SENDER,
        "reply_to": REPLY_TO,
        "feedback_id": "c42:r7:patron:shop",
        "unsubscribe_mailto": MAILTO,
    }
    return MessageTemplate(**(arguments | overrides))


def build(tpl: MessageTemplate | None = None, **overrides) -> bytes:
    arguments = {
        "to": Address("jane.doe@example.org", "Jane Doe"),
        "subject": "Your weekly picks",
        "html": HTML,
        "text": TEXT,
        "message_id": "<abc123@shop.example.com>",
        "language": "es",
        "unsubscribe_url": URL,
    }
    return (tpl or template()).build(**(arguments | overrides))


def parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def crlf(text: str) -> str:
    """What a text part reads back as: MIME's canonical CRLF line ends."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def parts(message: EmailMessage) -> tuple[str, str]:
    text, html = message.iter_parts()
    return text.get_content(), html.get_content()


def lines(data: bytes) -> list[bytes]:
    """The lines of a message, split at CRLF; a lone CR or LF in them would be a fault of its own."""
    assert data.endswith(b"\r\n")
    return data[:-2].split(b"\r\n")


def assert_within_limits(data: bytes) -> None:
    """Every line of the message within 998 octets; every line of an encoded body within 76."""
    every_line = lines(data)
    assert not [line for line in every_line if b"\r" in line or b"\n" in line]
    assert max(map(len, every_line)) <= LINE
    message = parse(data)
    for part in message.walk():
        if not part.is_multipart() and part["Content-Transfer-Encoding"] in ("quoted-printable", "base64"):
            body = part.get_payload()  # as sent, still encoded
            assert max(map(len, re.split(r"\r\n|\n", body))) <= BODY_LINE, part.get_content_type()
