"""Reading what comes back to the bounce mailbox: DSNs, ARF complaints, auto-replies and odd bounces.

:func:`read_report` turns raw bytes into a :class:`Report`: what the message is (a hard or soft
bounce, a delay, a complaint, an auto-reply, or unrecognized), for which recipient, with which RFC 3463
enhanced status code, and the clues that tie it to the message Patron sent (the addresses it was
delivered to, for VERP, and the original's Message-ID). It touches no database.

- RFC 3464 delivery status notifications (``multipart/report; report-type=delivery-status``) are read
  with the standard ``email`` package: per recipient, Action, Status, Final-Recipient, Diagnostic-Code.
  ``Action: failed`` with 5.x.x is hard, with 4.x.x soft (X.2.2, mailbox full, is soft whatever its
  class: RFC 3463 calls it useful as either); ``Action: delayed`` is a delay, not a bounce.
- RFC 5965 ARF reports (``report-type=feedback-report``) are complaints.
- Anything else goes through ``flufl.bounce`` (GNU Mailman's detectors) for the non-standard forms of
  Exim, qmail, Exchange and others: hard, unless the detector or the status code in the text says
  temporary.
- Auto-replies (RFC 3834 ``Auto-Submitted``, ``X-Autoreply``, ``Precedence: auto_reply``, subjects like
  "Out of Office" or "Automatic reply") and challenge-response messages are never bounces.

Hostile input is bounded: over :data:`MAX_BYTES`, more than :data:`MAX_PARTS` MIME parts, or anything
the parser chokes on is ``unrecognized`` with the reason; :func:`read_report` never raises.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses

from flufl.bounce import all_failures

# flufl.bounce logs a detector's exception with its traceback before re-raising it; read_report reports
# such a message as unrecognized, so the traceback must not reach a terminal (or the app's log handlers).
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").propagate = False

MAX_BYTES = 10 * 1024 * 1024  # a bounce quotes at most the original message; 10 MiB is plenty
MAX_PARTS = 200  # MIME parts (and so nesting depth): a real DSN has three or four
MAX_SCAN = 1024 * 1024  # characters of text searched for an address or a Message-ID
MAX_CANDIDATES = 20

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID = re.compile(r"^[ \t]*Message-ID:[ \t]*(<[^<>\s]{3,250}>)", re.IGNORECASE | re.MULTILINE)
_ADDRESS = re.compile(r"[^\s<>;:\"']{1,64}@[A-Za-z0-9.-]{1,253}")
_VERP = re.compile(r"bounces\+[0-9]{1,19}-[A-Za-z0-9_.-]{16,21}@[A-Za-z0-9.-]{1,253}", re.IGNORECASE)
_CONTAINER = re.compile(rb"content-type:\s*(?:multipart|message)/", re.IGNORECASE)  # parts that hold parts
# Where a mailbox writes the address it delivered to (the VERP address, for a bounce or a mailto).
DELIVERED_TO = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to")
# At the start of the subject (after any "Re:"): a bounce of a campaign called "Our automatic reply" is no auto-reply.
_AUTO_SUBJECT = re.compile(
    r"\s*(?:(?:re|aw|sv|fw|fwd)\s*:\s*)*"
    r"(?:out of (?:the )?office|automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|away from (?:the )?office"
    r"|on vacation|vacation reply|abwesenheit|réponse automatique|respuesta automática|absence"
    r"|please confirm your (?:e-?mail|message)|verify your (?:e-?mail|message)|challenge[- ]response"
    r"|anti-?spam check)",
    re.IGNORECASE,
)
_TEMPORARY = re.compile(
    r"temporar|try again|mailbox (is )?full|over ?quota|quota exceeded|deferred|still trying|will retry|delayed",
    re.IGNORECASE,
)


@dataclass
class Report:
    """What one message from the bounce mailbox says.

    ``kind``: hard, soft, delayed, complaint, auto_reply or unrecognized. ``addressed_to``: the addresses
    the message itself was delivered to (the VERP candidates, most telling first); ``verp``: VERP
    bounce addresses quoted inside it; ``message_ids``: Message-IDs of the quoted original.
    """

    kind: str
    recipient: str | None = None
    status: str | None = None
    diagnostic: str | None = None
    reason: str | None = None
    addressed_to: list[str] = field(default_factory=list)
    verp: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)


def read_report(raw: bytes) -> Report:
    """The :class:`Report` of one raw message; ``unrecognized`` with a reason for anything it cannot read."""
    if not isinstance(raw, (bytes, bytearray)):
        return Report("unrecognized", reason="not bytes")
    if len(raw) > MAX_BYTES:
        return Report("unrecognized", reason=f"larger than {MAX_BYTES // (1024 * 1024)} MiB ({len(raw)} bytes)")
    if len(_CONTAINER.findall(raw)) > MAX_PARTS:
        return Report("unrecognized", reason=f"more than {MAX_PARTS} nested or multipart parts")
    try:
        message = email.message_from_bytes(bytes(raw), policy=email.policy.compat32)
        parts = list(_walk(message))
        report = _classify(message, parts)
        report.addressed_to = _addressed_to(message)
        text = _text(parts)
        report.verp = _unique(_VERP.findall(text))
        report.message_ids = _unique([*_original_ids(parts), *_MESSAGE_ID.findall(text)])
        return report
    except _TooBig as exc:
        return Report("unrecognized", reason=str(exc))
    except Exception as exc:  # noqa: BLE001  (hostile input: whatever the parser or a detector trips on)
        return Report("unrecognized", reason=f"cannot be parsed: {type(exc).__name__}")


class _TooBig(Exception):
    pass


def _walk(message: Message):
    """Every part, depth first, without recursion (a deeply nested message cannot exhaust the stack)."""
    stack, seen = [message], 0
    while stack:
        part = stack.pop()
        seen += 1
        if seen > MAX_PARTS:
            raise _TooBig(f"more than {MAX_PARTS} MIME parts")
        yield part
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(reversed([item for item in payload if isinstance(item, Message)]))


def _classify(message: Message, parts: list[Message]) -> Report:
    report_type = (message.get_param("report-type", header="content-type") or "") if message.is_multipart() else ""
    report_type = str(report_type).lower()
    if message.get_content_type() == "multipart/report" and report_type == "feedback-report":
        return _complaint(parts)
    if report_type == "delivery-status" or any(p.get_content_type() == "message/delivery-status" for p in parts):
        found = _delivery_status(parts)
        if found is not None:
            return found
        if any(p.get_content_type() == "message/delivery-status" for p in parts):
            return Report("unrecognized", reason="a delivery report without a failure (delivered, relayed, expanded)")
    failure = _detected(message)
    automatic = _auto_reply(message)
    if failure is not None and automatic != "strong":
        return failure
    if automatic:
        return Report("auto_reply", reason="an automatic reply (out of office, vacation, challenge): not a bounce")
    return Report("unrecognized", reason="neither a delivery report, a complaint nor a known bounce")


def _complaint(parts: list[Message]) -> Report:
    """RFC 5965: the recipient from Original-Rcpt-To, or the To of the attached original."""
    recipient = None
    for part in parts:
        if part.get_content_type() == "message/feedback-report":
            fields = _fields_of(part)
            if fields:
                recipient = _address(fields[0].get("original-rcpt-to"))
    if recipient is None:
        for original in _originals(parts):
            recipient = _address(original.get("to"))
            if recipient:
                break
    return Report("complaint", recipient=recipient, reason="a feedback report (spam complaint)")


def _delivery_status(parts: list[Message]) -> Report | None:
    """RFC 3464: the first failed recipient, else the first delayed one; None if the report has neither."""
    blocks = []
    for part in parts:
        if part.get_content_type() == "message/delivery-status":
            blocks.extend(_fields_of(part)[1:])  # the first group is per message, the rest per recipient
    failed = [block for block in blocks if str(block.get("action", "")).strip().lower() == "failed"]
    delayed = [block for block in blocks if str(block.get("action", "")).strip().lower() == "delayed"]
    if not failed and not delayed:
        return None
    block = (failed or delayed)[0]
    recipient = _address(block.get("final-recipient")) or _address(block.get("original-recipient"))
    status_match = _STATUS.search(str(block.get("status", "")))
    diagnostic = _one_line(block.get("diagnostic-code"))
    if not failed:
        status = status_match.group(0) if status_match else "4.0.0"
        return Report("delayed", recipient, status, diagnostic, reason="delivery is delayed, not failed")
    status = status_match.group(0) if status_match else "5.0.0"
    soft = status.startswith("4.") or status[1:] == ".2.2"
    return Report("soft" if soft else "hard", recipient, status, diagnostic)


def _failures(message: Message) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """flufl.bounce's ``all_failures``: (temporary, permanent) recipients; both empty when no detector knows
    the message, or when one of them fails on it (flufl.bounce then stops at that detector and re-raises).

    Its Yale detector fails on a single-part message whose From holds no address (none, or an empty one;
    ``email.utils.getaddresses`` returns no pair for it since Python 3.11.7 and 3.12.1), which stopped every
    detector after it, qmail's among them. Such a message is shown to the detectors with the null sender
    ``From: <>`` (RFC 5321's, a bounce's own), which no detector takes for anything, and the original From
    is put back afterwards."""
    senders = message.get_all("from") or []
    if getaddresses(senders):
        return _detectors(message)
    del message["from"]
    message["From"] = "<>"
    try:
        return _detectors(message)
    finally:
        del message["from"]
        for sender in senders:
            message["From"] = sender


def _detectors(message: Message) -> tuple[frozenset[bytes], frozenset[bytes]]:
    try:
        return all_failures(message)
    except Exception:  # noqa: BLE001  (a detector's own bug on hostile input: the rest of the report still holds)
        return frozenset(), frozenset()


def _detected(message: Message) -> Report | None:
    """flufl.bounce's verdict on a non-standard bounce: hard unless it, or the text, says temporary."""
    temporary, permanent = _failures(message)
    if not (temporary or permanent):
        return None
    recipient = sorted(permanent or temporary)[0].decode("ascii", "replace")
    text = _text(list(_walk(message)))
    status_match = None
    at = text.find(recipient)
    for window in (text[at : at + 2000] if at >= 0 else "", text):
        status_match = status_match or _STATUS.search(window)
    soft = bool(temporary and not permanent)
    if status_match:
        soft = status_match.group(1) == "4" or status_match.group(0)[1:] == ".2.2"
    elif _TEMPORARY.search(text[:20000]):
        soft = True
    status = status_match.group(0) if status_match else ("4.0.0" if soft else "5.0.0")
    return Report("soft" if soft else "hard", recipient, status, reason="a non-standard bounce")


def _auto_reply(message: Message) -> str | None:
    """ "strong" for a marked auto-reply (an auto-reply header or subject), "weak" for only Auto-Submitted."""
    subject = _decoded(message.get("subject"))
    precedence = str(message.get("precedence", "")).strip().lower()
    if (
        message.get("x-autoreply")
        or message.get("x-autorespond")
        or precedence == "auto_reply"
        or _AUTO_SUBJECT.match(subject)
    ):
        return "strong"
    submitted = str(message.get("auto-submitted", "")).strip().lower()
    if submitted and submitted != "no":
        return "weak"
    return None


def _fields_of(part: Message) -> list[Message]:
    """The header groups of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [item for item in payload if isinstance(item, Message)]
    if isinstance(payload, str):  # some writers base64 the part: parse its text as header groups
        data = part.get_payload(decode=True) or b""
        groups = re.split(rb"\r?\n\r?\n", data.strip())
        return [email.message_from_bytes(group + b"\n", policy=email.policy.compat32) for group in groups if group]
    return []


def _originals(parts: list[Message]) -> list[Message]:
    """The quoted original messages (message/rfc822) or their headers (text/rfc822-headers)."""
    found = []
    for part in parts:
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            found.extend(item for item in (payload if isinstance(payload, list) else []) if isinstance(item, Message))
        elif kind in ("text/rfc822-headers", "text/rfc822-header"):
            data = part.get_payload(decode=True) or b""
            found.append(email.message_from_bytes(data[:MAX_SCAN], policy=email.policy.compat32))
    return found


def _original_ids(parts: list[Message]) -> list[str]:
    ids = []
    for original in _originals(parts):
        match = re.search(r"<[^<>\s]{3,250}>", str(original.get("message-id", "")))
        if match:
            ids.append(match.group(0))
    return ids


def _addressed_to(message: Message) -> list[str]:
    """The addresses the message itself went to, from the headers a mailbox writes, most telling first."""
    found = []
    for name in DELIVERED_TO:
        for value in message.get_all(name) or []:
            found.extend(_ADDRESS.findall(str(value)[:2000]))
    return _unique(found)


def _text(parts: list[Message]) -> str:
    """The headers and decoded text of the parts (the first one's body only), at most MAX_SCAN characters.

    The first part is the message itself: its own headers (its own Message-ID) are not the original's.
    """
    chunks, size = [], 0
    for number, part in enumerate(parts):
        if size >= MAX_SCAN:
            break
        pieces = ["".join(f"{key}: {value}\n" for key, value in part.items())] if number else []
        if part.get_content_maintype() == "text":
            pieces.append((part.get_payload(decode=True) or b"")[:MAX_SCAN].decode("utf-8", "replace"))
        for piece in pieces:
            chunks.append(piece[: MAX_SCAN - size])
            size += len(chunks[-1])
    return "\n".join(chunks)


def _address(value) -> str | None:
    """The address in a header value like ``rfc822; someone@example.com`` or ``<someone@example.com>``."""
    if value is None:
        return None
    match = _ADDRESS.search(str(value)[:2000].rpartition(";")[2] if ";" in str(value) else str(value)[:2000])
    return match.group(0).lower() if match else None


def _decoded(value) -> str:
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value)[:2000])))
    except Exception:  # noqa: BLE001  (a malformed encoded word: read it as it is)
        return str(value)[:2000]


def _one_line(value) -> str | None:
    if value is None:
        return None
    return " ".join(str(value).split())[:500] or None


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))[:MAX_CANDIDATES]
