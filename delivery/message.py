"""The message: one recipient's MIME bytes, built directly instead of through ``email.message``.

A :class:`MessageTemplate` encodes once what every message of a campaign shares (From, Reply-To,
Feedback-ID, the unsubscribe mailbox); :meth:`MessageTemplate.build` adds one recipient's headers and
a multipart/alternative body (text, then HTML, both UTF-8 quoted-printable) and returns what SMTP
wants: bytes with CRLF line ends, header lines folded at 78 characters where possible and never over
998 octets (RFC 5322), body lines never over 76 (RFC 2045). The bytes are 7-bit unless an address has
a non-ASCII local part (``jürgen@example.de``): that address is written in UTF-8 as RFC 6532 allows,
and such a message can only be sent through a server that offers SMTPUTF8 (RFC 6531).

CR, LF and NUL never reach a header. In display names and subjects they become spaces (recipient
data must not stop a send); in addresses, message ids, URLs, language tags and the feedback id
they raise :class:`HeaderError` (those come from Patron's own code or configuration).
"""

from __future__ import annotations

import binascii
import re
import secrets
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from itertools import chain

HEADER_LINE = 78  # RFC 5322: header lines SHOULD stay within 78 characters
MAX_LINE = 998  # RFC 5322: a line MUST NOT exceed 998 octets (SMTP's 1000 with the CRLF)
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1, in octets
MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3: a path is at most 256 octets, "<" and ">" included
QP_LINE = 76  # RFC 2045: quoted-printable lines MUST stay within 76 characters
_EW_BYTES = 42  # UTF-8 bytes per encoded word: "=?utf-8?b?" + 56 base64 characters + "?=" is 68

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_DOMAIN = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
_LOCAL_PART = re.compile(_DOT_ATOM)
# RFC 6532: atext extended with any non-ASCII character (printable ones only: see header_email).
_UTF8_ATEXT = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])"
_UTF8_LOCAL_PART = re.compile(rf"{_UTF8_ATEXT}+(?:\.{_UTF8_ATEXT}+)*")
_ASCII_DOMAIN = re.compile(_DOMAIN)
_ADDR_SPEC = re.compile(rf"{_DOT_ATOM}@{_DOMAIN}")
# Atoms without "=": a name written this way can never be mistaken for an encoded word.
_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/?^_`{|}~-]+)*")
_MESSAGE_ID = re.compile(rf"<{_DOT_ATOM}@{_DOT_ATOM}>")
_LANGUAGE_TAG = r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*"
_LANGUAGE = re.compile(rf"{_LANGUAGE_TAG}(?:, ?{_LANGUAGE_TAG})*")
_URL_CHARACTERS = r"[!#-;=?-~]+"  # printable ASCII without space, '"', '<' and '>'
_HTTP_URL = re.compile(rf"https?://{_URL_CHARACTERS}")
_MAILTO_URL = re.compile(rf"mailto:{_URL_CHARACTERS}")
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_FEEDBACK_ID = re.compile(r"[!-~]{1,200}")
_MAX_URL = 900  # keeps the List-Unsubscribe line far below SMTP's hard limit of 998

_BREAKS = str.maketrans("\r\n\0", "   ")
_RESERVED_FIELDS = frozenset(
    "date from sender to cc bcc reply-to subject message-id mime-version content-type content-transfer-encoding "
    "content-language list-unsubscribe list-unsubscribe-post feedback-id return-path dkim-signature".split()
)
_PART_HEADERS = "Content-Type: text/{}; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
_TEXT_PART = _PART_HEADERS.format("plain")
_HTML_PART = _PART_HEADERS.format("html")


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: the email address and the display name shown beside it."""

    email: str
    name: str | None = None


class HeaderError(ValueError):
    """A value that cannot be put in a header safely: an address without @, a URL with a line break…"""


def header_email(email: str) -> str:
    """The address as written in headers and the SMTP envelope: checked, with an IDN domain in IDNA form.

    A non-ASCII local part stays as it is, in UTF-8 (RFC 6532): only a server that offers SMTPUTF8
    takes it. Lengths are RFC 5321's: at most 64 octets before the "@" and 254 in all.
    """
    if _ADDR_SPEC.fullmatch(email):
        if len(email) <= MAX_ADDRESS and email.rindex("@") <= MAX_LOCAL_PART:
            return email
        raise HeaderError(f"an address is at most {MAX_ADDRESS} octets, {MAX_LOCAL_PART} before the @: {email!r}")
    local, at, domain = email.rpartition("@")
    if at and not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            domain = ""
    local_ok = _LOCAL_PART.fullmatch(local) or (_UTF8_LOCAL_PART.fullmatch(local) and local.isprintable())
    if not (at and local_ok and _ASCII_DOMAIN.fullmatch(domain)):
        raise HeaderError(f"not an address Patron can write in a header: {email!r}")
    local_octets = len(local.encode("utf-8"))
    if local_octets > MAX_LOCAL_PART or local_octets + 1 + len(domain) > MAX_ADDRESS:
        raise HeaderError(f"an address is at most {MAX_ADDRESS} octets, {MAX_LOCAL_PART} before the @: {email!r}")
    return f"{local}@{domain}"


def ascii_email(email: str) -> str:
    """:func:`header_email`, for where only ASCII will do: HeaderError if the local part is not ASCII."""
    address = header_email(email)
    if not address.isascii():
        raise HeaderError(f"{email!r} has a non-ASCII local part: only an SMTPUTF8 server takes it")
    return address


def sending_domain(address: Address) -> str:
    """The domain an address sends from (lower case, ASCII): for Message-ID and the DKIM d= tag."""
    return header_email(address.email).rpartition("@")[2].lower()


def new_message_id(domain: str) -> str:
    """A fresh ``<unique@domain>``: 128 random bits, so unique across processes and machines."""
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise HeaderError(f"not a domain: {domain!r}") from None
    if not _ASCII_DOMAIN.fullmatch(domain):
        raise HeaderError(f"not a domain: {domain!r}")
    return f"<{secrets.token_hex(16)}@{domain.lower()}>"


class MessageTemplate:
    """The parts of a campaign's messages that are the same for every recipient, encoded once."""

    __slots__ = ("sender", "domain", "_from", "_reply_to", "_mailto", "_constant", "_languages")

    def __init__(
        self,
        *,
        sender: Address,
        reply_to: Address | None,
        feedback_id: str,
        unsubscribe_mailto: str,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.sender = sender
        self.domain = sending_domain(sender)
        self._from = _fold("From: " + _mailbox(sender))
        self._reply_to = _fold("Reply-To: " + _mailbox(reply_to)) if reply_to is not None else ""
        self._mailto = _mailto(unsubscribe_mailto)
        if not _FEEDBACK_ID.fullmatch(feedback_id):
            raise HeaderError(f"a Feedback-ID is 1 to 200 printable ASCII characters, no spaces: {feedback_id!r}")
        constant = ["List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", f"Feedback-ID: {feedback_id}\r\n"]
        for name, value in extra_headers:
            if not _FIELD_NAME.fullmatch(name) or name.lower() in _RESERVED_FIELDS:
                raise HeaderError(f"not a header Patron lets a campaign add: {name!r}")
            if _no_breaks(value) != value:
                raise HeaderError(f"header {name} has a line break or NUL in its value: {value!r}")
            constant.append(_fold(f"{name}: {_unstructured(value)}"))
        self._constant = "".join(constant)
        self._languages: dict[str, str] = {}

    def build(
        self,
        *,
        to: Address,
        subject: str,
        html: str,
        text: str,
        message_id: str,
        language: str,
        unsubscribe_url: str,
        unsubscribe_mailto: str | None = None,
        date: datetime | None = None,
    ) -> bytes:
        """One recipient's message as bytes ready for SMTP (or a Maildir).

        ``unsubscribe_mailto``: this recipient's own mailto for List-Unsubscribe (a signed VERP address),
        instead of the template's; HeaderError if it is not a mailto URL.
        """
        if not _MESSAGE_ID.fullmatch(message_id):
            raise HeaderError(f"not a message id like <unique@domain>: {message_id!r}")
        if not _HTTP_URL.fullmatch(unsubscribe_url) or len(unsubscribe_url) > _MAX_URL:
            raise HeaderError(f"not an http(s) URL for List-Unsubscribe: {unsubscribe_url!r}")
        unsubscribe = f"List-Unsubscribe: <{unsubscribe_url}>"
        mailto = self._mailto if unsubscribe_mailto is None else _mailto(unsubscribe_mailto)
        if mailto:
            separator = ", " if len(unsubscribe) + len(mailto) + 2 <= HEADER_LINE else ",\r\n "
            unsubscribe += separator + mailto
        boundary = "=_" + secrets.token_hex(12)  # "=_" never occurs in quoted-printable output
        head = (
            f"Date: {_date(date)}\r\n{self._from}{_fold('To: ' + _mailbox(to))}{self._reply_to}"
            f"{_fold('Subject: ' + _unstructured(_no_breaks(subject)))}{_fold('Message-ID: ' + message_id)}"
            f"MIME-Version: 1.0\r\n{self._language(language)}{unsubscribe}\r\n{self._constant}"
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\n{_TEXT_PART}"
        )
        return b"".join(
            (
                head.encode("utf-8"),  # ASCII but for a UTF-8 address (RFC 6532)
                quoted_printable(text),
                f"\r\n--{boundary}\r\n{_HTML_PART}".encode("ascii"),
                quoted_printable(html),
                f"\r\n--{boundary}--\r\n".encode("ascii"),
            )
        )

    def _language(self, language: str) -> str:
        line = self._languages.get(language)
        if line is None:
            if not _LANGUAGE.fullmatch(language):
                raise HeaderError(f"not a language tag list like 'es' or 'es, en': {language!r}")
            if len(self._languages) > 256:  # a campaign has a handful; never grow without bound
                self._languages.clear()
            line = self._languages[language] = _fold(f"Content-Language: {language}")
        return line


def _mailto(value: str) -> str:
    """``<mailto:…>`` for List-Unsubscribe ("" for no mailto: RFC 8058 needs only the HTTPS URL)."""
    if not value:
        return ""
    mailto = value if value.startswith("mailto:") else "mailto:" + value
    if not _MAILTO_URL.fullmatch(mailto) or len(mailto) > _MAX_URL:
        raise HeaderError(f"not a mailto URL for List-Unsubscribe: {value!r}")
    return f"<{mailto}>"


def _mailbox(address: Address) -> str:
    """``name <email>`` with the name as atoms, a quoted string or encoded words, whichever is exact."""
    spec = header_email(address.email)
    if not address.name:
        return spec
    name = _no_breaks(address.name)
    if _PLAIN_PHRASE.fullmatch(name) and _short_words(name):
        return f"{name} <{spec}>"
    if name.isascii() and name.isprintable() and "=?" not in name and _short_words(name):
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{spec}>'
    return f"{_encoded_words(name)} <{spec}>"


def _no_breaks(value: str) -> str:
    """Each CR, LF and NUL replaced by a space: nothing else changes."""
    if "\r" in value or "\n" in value or "\0" in value:
        return value.translate(_BREAKS)
    return value


def _unstructured(value: str) -> str:
    """A Subject-like value: as is when plain ASCII would read back exactly, else RFC 2047 words."""
    if (
        value.isascii()
        and value.isprintable()
        and "=?" not in value
        and "  " not in value
        and not value.startswith(" ")
        and not value.endswith(" ")
        and _short_words(value)
    ):
        return value
    return _encoded_words(value)


def _short_words(value: str) -> bool:
    return len(value) <= 64 or max(map(len, value.split(" "))) <= 64


def _encoded_words(value: str) -> str:
    """RFC 2047 base64 words of whole characters, each ending after a space where one is near."""
    data = value.encode("utf-8", "replace")  # a lone surrogate cannot be UTF-8: it becomes "?"
    words = []
    start, size = 0, len(data)
    while start < size:
        end = start + _EW_BYTES
        if end < size:
            while data[end] & 0xC0 == 0x80:  # never split a character
                end -= 1
            # Decoders that (against RFC 2047) keep the space between two encoded words, such as
            # Python's own, then show a doubled space rather than a space inside a word.
            space = data.rfind(b" ", start + 1, end)
            if space != -1:
                end = space + 1
        words.append("=?utf-8?b?" + binascii.b2a_base64(data[start:end], newline=False).decode("ascii") + "?=")
        start = end
    return " ".join(words)


def _fold(line: str) -> str:
    """The header line with CRLF, folded before spaces so that lines stay within 78 where possible.

    HeaderError if a piece that cannot be folded is over 998 octets: no receiver has to take it.
    """
    if len(line) <= HEADER_LINE:
        return line + "\r\n"
    pieces = []
    start = 0
    while len(line) - start > HEADER_LINE:
        # Fold only before the first space of a run, so no line is whitespace alone.
        cut = line.rfind(" ", start + 1, start + HEADER_LINE + 1)
        while cut > start and line[cut - 1] == " ":
            cut = line.rfind(" ", start + 1, cut)
        if cut <= start:  # a word longer than a line: fold at the next space after it
            cut = line.find(" ", start + HEADER_LINE + 1)
            while cut != -1 and line[cut - 1] == " ":
                cut = line.find(" ", cut + 1)
            if cut == -1:
                break
        pieces.append(line[start:cut])
        start = cut
    pieces.append(line[start:])
    for piece in pieces:
        if len(piece) > MAX_LINE // 4 and len(piece.encode("utf-8", "replace")) > MAX_LINE:
            field = line.partition(":")[0]
            raise HeaderError(f"the {field} header would have a line over {MAX_LINE} octets: {piece[:60]!r}…")
    return "\r\n".join(pieces) + "\r\n"


_now: tuple[int, str] = (0, "")


def _date(date: datetime | None) -> str:
    global _now
    if date is not None:
        return format_datetime(date if date.tzinfo is not None else date.replace(tzinfo=timezone.utc))
    second = int(time.time())
    if _now[0] != second:  # formatting costs more than the rest of the headers together
        _now = (second, format_datetime(datetime.fromtimestamp(second, timezone.utc)))
    return _now[1]


_QP_LITERAL = bytes(range(0x20, 0x7F)) + b"\t\n"  # bytes that may stand for themselves ("=" is replaced first)
_QP_ESCAPES = tuple(b"=%02X" % byte for byte in range(256))
_BYTES = tuple(bytes((byte,)) for byte in range(256))
_GRID = 73  # a soft break every 73 bytes; moved past an escape it would split, a piece is at most 75
_BLOCK = struct.Struct(f"{_GRID}s" * 16)
_TAILS = tuple(struct.Struct(f"{_GRID}s" * count) for count in range(16))


def quoted_printable(text: str) -> bytes:
    """A text part's body: UTF-8, quoted-printable, CRLF line ends, no line over 76 characters.

    Line breaks (LF, CRLF or a lone CR) all become CRLF, MIME's canonical form. Everything runs on
    C-speed bytes primitives, because ``binascii.b2a_qp`` walks byte by byte and costs ~8 ns a byte:
    one ``replace`` per distinct byte value to escape, and soft breaks on a fixed grid over the whole
    body (QP allows a soft break anywhere but inside an escape) cut by ``struct``. Text with many
    distinct non-ASCII bytes (CJK, Cyrillic) goes through ``b2a_qp``, which is quicker for it.
    Lines starting with "." or "From " are left alone: SMTP clients dot-stuff the first (smtplib
    does), and only mbox files mangle the second; both read back exactly.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    data = text.encode("utf-8", "replace")
    unsafe = data.translate(None, _QP_LITERAL)
    distinct = set(unsafe) if len(unsafe) <= 2048 else ()
    if len(unsafe) > 2048 or len(distinct) > 24:
        return binascii.b2a_qp(data).replace(b"\n", b"\r\n")
    data = data.replace(b"=", b"=3D")  # first, so that the escapes added next are not escaped again
    for byte in distinct:
        data = data.replace(_BYTES[byte], _QP_ESCAPES[byte])
    # Whitespace at the end of a line may be stripped in transit: it is escaped (RFC 2045, rule 3).
    # (split and join: one search for the two-byte pattern, where "in" then replace would take three)
    lines = data.split(b" \n")
    if len(lines) > 1:
        data = b"=20\n".join(lines)
    if b"\t" in data:
        data = b"=09\n".join(data.split(b"\t\n"))
    if data.endswith((b" ", b"\t")):
        data = data[:-1] + _QP_ESCAPES[data[-1]]
    if len(data) > QP_LINE:
        data = _soft_breaks(data)
    return data.replace(b"\n", b"\r\n")


def _soft_breaks(data: bytes) -> bytes:
    """``data`` with a soft break (``=`` LF) every 73 bytes, moved past any ``=XX`` it would split."""
    whole = len(data) - len(data) % _BLOCK.size
    pieces = list(chain.from_iterable(_BLOCK.iter_unpack(memoryview(data)[:whole])))
    tail = memoryview(data)[whole:]
    pieces.extend(_TAILS[len(tail) // _GRID].unpack_from(tail))
    pieces.append(data[whole + len(tail) - len(tail) % _GRID :])
    if not pieces[-1]:
        pieces.pop()
    cuts = len(pieces) - 1
    # Every "=" starts an escape, so a cut splits one exactly when "=" is one or two bytes before it.
    for before, move in ((data[_GRID - 1 :: _GRID], 2), (data[_GRID - 2 :: _GRID], 1)):
        cut = before.find(61)
        while 0 <= cut < cuts:
            pieces[cut] += pieces[cut + 1][:move]
            pieces[cut + 1] = pieces[cut + 1][move:]
            cut = before.find(61, cut + 1)
    if not pieces[-1]:
        pieces.pop()
    return b"=\n".join(pieces)
