"""Lines within the RFC limits: at most 76 characters in a quoted-printable or base64 body (RFC 2045),
at most 998 octets anywhere (RFC 5322, and SMTP's 1000 with the CRLF), whatever the text.

Checked on the final bytes, as a receiving server sees them, and read back with the standard
library's parser: what went in comes out, but for line ends, which become CRLF.
"""

from __future__ import annotations

import binascii
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.dkim import DkimSigner
from delivery.message import Address, HeaderError, quoted_printable
from tests.delivery.messages import (
    BODIES,
    BODY_LINE,
    URL,
    assert_within_limits,
    build,
    crlf,
    lines,
    parse,
    parts,
    template,
)

SCRIPTS = {
    "ASCII": (0x20, 0x7E),
    "Latin-1": (0xA0, 0xFF),
    "Cyrillic": (0x400, 0x4FF),
    "Hebrew": (0x590, 0x5FF),
    "Arabic": (0x600, 0x6FF),
    "Devanagari": (0x900, 0x97F),
    "Thai": (0xE00, 0xE7F),
    "Hangul": (0xAC00, 0xD7A3),
    "CJK": (0x4E00, 0x9FFF),
    "emoji": (0x1F300, 0x1FAFF),
}
ALPHABETS = [st.characters(min_codepoint=low, max_codepoint=high) for low, high in SCRIPTS.values()]
WORDS = st.one_of(*(st.text(alphabet, min_size=1, max_size=12) for alphabet in ALPHABETS))
LONG_WORDS = st.one_of(*(st.text(alphabet, min_size=77, max_size=400) for alphabet in ALPHABETS))
COMBINED = st.builds(
    "".join, st.lists(st.characters(min_codepoint=0x300, max_codepoint=0x36F), min_size=1, max_size=6)
).map(lambda marks: "a" + marks)  # a letter under a stack of combining marks
AWKWARD = st.sampled_from(
    [" ", "  ", "\t", " " * 80, "\t " * 50, ".", "..", "From ", "\0", "=", "=3D", "=\n", "\x7f", "\x0c",
     "\u200d", "👩\u200d👩\u200d👧", "\ufeff", "\u0085", "\u2028", "\r", "\r\n", "\n", "\n\r"]
)  # fmt: skip
PIECES = st.one_of(WORDS, WORDS, LONG_WORDS, COMBINED, AWKWARD)
LINE_ENDS = st.sampled_from(["\n", "\r\n", "\r"])
LINES = st.lists(st.builds("".join, st.lists(PIECES, max_size=10)), max_size=12)
TEXTS = st.builds(lambda lines, end: end.join(lines), LINES, LINE_ENDS)
TAGS = st.sampled_from(["<p>", "</p>", "<b>", "</b>", '<a href="https://x.example/?a=1&amp;b=2">', "</a>", "<br>"])
HTMLS = st.builds(lambda pieces: "<html><body>" + "".join(pieces) + "</body></html>", st.lists(st.one_of(TEXTS, TAGS)))


@settings(max_examples=150, deadline=None)
@given(text=TEXTS, html=HTMLS, subject=TEXTS, name=TEXTS)
def test_any_text_in_any_script_stays_within_the_line_limits_and_reads_back(text, html, subject, name):
    data = build(to=Address("jane@example.org", name), subject=subject, text=text, html=html)

    assert data.isascii()  # 7-bit: every server takes it
    assert_within_limits(data)
    assert parts(parse(data)) == (crlf(text), crlf(html))


@settings(max_examples=50, deadline=None)
@given(text=TEXTS, html=HTMLS)
def test_a_dkim_signed_message_stays_within_the_line_limits(rsa_key, text, html):
    signer = DkimSigner(selector="p1", domain="shop.example.com", private_key=rsa_key[0])
    assert_within_limits(signer.sign(build(text=text, html=html)))


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_quoted_printable_lines_are_short_plain_and_without_trailing_blanks(body):
    encoded = quoted_printable(body)
    assert encoded.isascii()
    for line in encoded.split(b"\r\n"):
        assert len(line) <= BODY_LINE
        assert b"\r" not in line and b"\n" not in line
        assert not line.endswith((b" ", b"\t"))
        assert re.fullmatch(rb"(?:[\t !-<>-~]|=[0-9A-F]{2})*=?", line), line
    assert binascii.a2b_qp(encoded) == crlf(body).encode()


def test_every_line_is_ascii_and_within_smtp_limits():
    data = build(to=Address("a@example.org", "Ñ" * 300), subject="🎉" * 300, html="<p>" + "é" * 5000 + "</p>")
    assert data.isascii()
    assert_within_limits(data)
    # Only a URL longer than a line may pass 78 (the List-Unsubscribe line); nothing comes near 998.
    assert [line for line in lines(data) if len(line) > 78] == [b"List-Unsubscribe: <" + URL.encode() + b">,"]


def test_a_long_language_list_is_folded_and_reads_back():
    language = ", ".join(["en-GB", "es-MX", "zh-Hant-TW", "pt-BR"] * 60)
    data = build(language=language)
    assert_within_limits(data)
    assert max(map(len, data.split(b"\r\n\r\n")[0].split(b"\r\n"))) <= 78 + len(URL)
    assert parse(data)["Content-Language"] == language


@pytest.mark.parametrize(
    "to",
    [
        "a" * 65 + "@example.org",  # RFC 5321: at most 64 octets before the @
        "ü" * 33 + "@example.org",  # 33 characters, 66 octets in UTF-8
        "jane@" + "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + ".example",  # over 254 in all
        "jane@" + "ü" * 300 + ".example",  # no shorter in IDNA form
    ],
)
def test_an_address_longer_than_smtp_allows_raises(to):
    with pytest.raises(HeaderError, match="at most 254 octets, 64 before the @|not an address"):
        build(to=Address(to))


def test_a_header_that_cannot_fold_within_998_octets_raises():
    with pytest.raises(HeaderError, match="Message-ID header would have a line over 998 octets"):
        build(message_id="<" + "a" * 1000 + "@shop.example.com>")
    with pytest.raises(HeaderError, match="Content-Language header would have a line over 998 octets"):
        build(language="-".join(["abcdefgh"] * 120))
    with pytest.raises(HeaderError, match="header would have a line over 998 octets"):
        template(extra_headers=[("X-" + "a" * 1000, "value")])
