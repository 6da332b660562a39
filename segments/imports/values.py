"""Checking and normalizing one imported value; each failure is a ``BadValue`` saying why."""

from __future__ import annotations

import math
import re
import unicodedata
import zoneinfo
from collections.abc import Callable
from datetime import datetime, timezone
from functools import cache
from typing import TypeVar

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import DOT_ATOM_TEXT, EMAIL_MAX_LENGTH, LOCAL_PART_MAX_LENGTH
from marshmallow import ValidationError

from segments.event_times import implausible
from segments.interests import MAX_SCORE
from segments.models import (
    CHANNEL_LENGTH,
    EMAIL_LENGTH,
    IDENTIFIER_LENGTH,
    LOCALE_LENGTH,
    TAG_LENGTH,
    TIMEZONE_LENGTH,
)
from segments.plain_data import refused_char

T = TypeVar("T")
ATTRIBUTE_NAME_LENGTH = TAG_LENGTH
ATTRIBUTE_VALUE_LENGTH = 1000
EVENT_TYPE_LENGTH = 64

# BCP 47 language tags as mail clients and browsers send them: language,
# optional script, optional region, optional variants.
LOCALE = re.compile(
    r"([A-Za-z]{2,3})(?:-([A-Za-z]{4}))?(?:-([A-Za-z]{2}|[0-9]{3}))?((?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*)"
)
PHONE = re.compile(r"\+[1-9][0-9]{6,14}")
PHONE_PUNCTUATION = re.compile(r"[\s().-]")
CHANNEL = re.compile(r"[a-z][a-z0-9_]*")
KEY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,15})")
DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+")
# Bidirectional classes of the embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069):
# invisible, they make text display in another order than it holds ("Hi Eve" + U+202E + "moc.elpmaxe").
BIDI_CONTROLS = frozenset({"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"})


def _unseen(char: str) -> bool:
    """Whether ``char`` never belongs in imported text: a control (C0, DEL, C1), a line or paragraph
    separator, or a bidirectional formatting control."""
    category = unicodedata.category(char)
    return category in ("Cc", "Zl", "Zp") or (category == "Cf" and unicodedata.bidirectional(char) in BIDI_CONTROLS)


# All of them are in the Basic Multilingual Plane. Lone surrogates from U+DC80
# to U+DCFF are bytes that were not UTF-8 (the reader decodes with
# surrogateescape); any other lone surrogate came from a JSON escape such as
# "\ud800", and no database can store it.
_UNSEEN = [chr(code) for code in range(0x10000) if _unseen(chr(code))]


def _class(chars: list[str]) -> re.Pattern:
    return re.compile("[" + "".join(map(re.escape, chars)) + "\ud800-\udfff]")


ONE_LINE_FORBIDDEN = _class(_UNSEEN)
MULTI_LINE_FORBIDDEN = _class([char for char in _UNSEEN if char not in "\t\n\r"])
# What trimming removes: whitespace, but not the controls and separators Python also counts as
# whitespace (U+001C-U+001F, U+0085, U+2028, U+2029), which are refused wherever they stand.
TRIMMED = "".join(c for c in map(chr, range(0x10000)) if c.isspace() and (c in "\t\n\r" or not _unseen(c)))
TRUE_WORDS = frozenset({"true", "yes", "1", "y"})
FALSE_WORDS = frozenset({"false", "no", "0", "n"})


class BadValue(ValueError):
    """One value that cannot be imported; the message says why."""


def remembered(check: Callable[[str], T], size: int = 4096) -> Callable[[str], T]:
    """``check`` with its recent good answers remembered.

    Locales, time zones, cities, tiers and scores repeat on most rows of an
    import; looking the answer up costs a fraction of checking it again.
    """
    memo: dict[str, T] = {}

    def checked(raw: str) -> T:
        try:
            return memo[raw]
        except KeyError:
            pass
        value = check(raw)
        if len(memo) >= size:
            memo.clear()
        memo[raw] = value
        return value

    return checked


def printable_text(value: str) -> None:
    """A marshmallow validator for one line of text from outside (an API field, a campaign's or a pack's name):
    nothing an import refuses there (:func:`unseen_char`: controls, line breaks, invisible and bidirectional
    controls, lone surrogates)."""
    problem = unseen_char(value)
    if problem is not None:
        raise ValidationError(problem.replace("contains", "must not contain", 1))


def unseen_char(value: str, *, multi_line: bool = False) -> str | None:
    """Why ``value`` cannot be imported text (a control or invisible character, a line break in one
    line, a lone surrogate, bytes that were not UTF-8), naming the character; None if it can be."""
    found = (MULTI_LINE_FORBIDDEN if multi_line else ONE_LINE_FORBIDDEN).search(value)
    if found is None:
        return None
    char = found.group()
    code = f"U+{ord(char):04X}"
    if "\udc80" <= char <= "\udcff":
        return f"is not valid UTF-8 (byte 0x{ord(char) - 0xDC00:02X})"
    if "\ud800" <= char <= "\udfff":
        return refused_char(char)
    if char in "\r\n":
        return "contains a line break"
    category = unicodedata.category(char)
    if category == "Zl":
        return f"contains the line separator {code}"
    if category == "Zp":
        return f"contains the paragraph separator {code}"
    if category == "Cf":
        return f"contains the invisible bidirectional control {code} ({unicodedata.name(char)}), which reorders text"
    return f"contains the control character {code}"


def text(value: str, limit: int, *, multi_line: bool = False) -> str:
    """Trimmed text of at most ``limit`` characters, one line unless ``multi_line``; BadValue (see
    :func:`unseen_char`) for control and invisible characters."""
    value = value.strip(TRIMMED)
    if (problem := unseen_char(value, multi_line=multi_line)) is not None:
        raise BadValue(problem)
    if len(value) > limit:
        raise BadValue(f"is {len(value)} characters long; the limit is {limit}")
    return value


def email(value: str) -> str:
    """The address in Patron's one canonical form, or BadValue: see docs/imports.md.

    Checked by email-validator (no DNS): internationalized domains and local
    parts are accepted as SMTPUTF8 allows. The local part is lower-cased (as
    Patron always has), the domain is IDNA-normalized and kept in Unicode, so
    ``Jonas@BÜCHER.example``, ``jonas@xn--bcher-kva.example`` and
    ``jonas@bücher.example`` are one address: ``jonas@bücher.example``.
    """
    value = text(value, EMAIL_LENGTH)
    local, at, domain = value.rpartition("@")
    try:
        # The common case, a plain ASCII local part, needs only its domain
        # checked, and domains repeat: most of the checking time is the domain's.
        if at and len(local) <= LOCAL_PART_MAX_LENGTH and DOT_ATOM_TEXT.match(local):
            unicode_domain, ascii_domain = _domain(domain)
            if len(local) + 1 + len(ascii_domain) <= EMAIL_MAX_LENGTH:
                return _canonical(local, unicode_domain)
        checked = validate_email(value, check_deliverability=False, strict=True)
    except EmailNotValidError as exc:
        raise BadValue(f"{value!r} is not a valid email address: {exc}") from None
    return _canonical(checked.local_part, checked.domain)


def _canonical(local: str, domain: str) -> str:
    address = f"{local.lower()}@{domain}"
    if len(address) > EMAIL_LENGTH:
        raise BadValue(f"is {len(address)} characters long; the limit is {EMAIL_LENGTH}")
    return address


@remembered
def _domain(domain: str) -> tuple[str, str]:
    """A domain's canonical Unicode and ASCII (IDNA) forms, checked as in a whole address; EmailNotValidError."""
    checked = validate_email(f"x@{domain}", check_deliverability=False, strict=True)
    return checked.domain, checked.ascii_domain


def locale(value: str) -> str:
    """A BCP 47 tag in canonical case (``es_mx`` becomes ``es-MX``)."""
    value = text(value, LOCALE_LENGTH).replace("_", "-")
    found = LOCALE.fullmatch(value)
    if not found:
        raise BadValue(f"{value!r} is not a BCP 47 language tag such as 'en' or 'es-MX'")
    language, script, region, variants = found.groups()
    parts = [language.lower()]
    if script:
        parts.append(script.title())
    if region:
        parts.append(region.upper())
    if variants:
        parts.append(variants.strip("-").lower())
    return "-".join(parts)


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def time_zone(value: str) -> str:
    """An IANA time zone name such as ``Europe/Madrid``."""
    value = text(value, TIMEZONE_LENGTH)
    if value not in _time_zones():
        raise BadValue(f"{value!r} is not an IANA time zone such as 'Europe/Madrid'")
    return value


def phone(value: str) -> str:
    """The number in E.164 form, spaces and punctuation removed."""
    value = PHONE_PUNCTUATION.sub("", text(value, IDENTIFIER_LENGTH))
    if not PHONE.fullmatch(value):
        raise BadValue(f"{value!r} is not a phone number in E.164 form such as '+34600123456'")
    return value


def required_text(value: str, limit: int) -> str:
    """One line of text that must not be empty."""
    value = text(value, limit)
    if not value:
        raise BadValue("is empty")
    return value


def identifier(value: str) -> str:
    """A channel's identifier for a contact: one line, case kept."""
    return required_text(value, IDENTIFIER_LENGTH)


def score(value: str | float) -> float:
    """An interest score: a finite number from 0 to MAX_SCORE, the top of the scale learning keeps scores on."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadValue(f"{value!r} is not a number") from None
    if not math.isfinite(number) or not 0 <= number <= MAX_SCORE:
        raise BadValue(f"{value!r} is not a score from 0 to {MAX_SCORE:g}")
    return number


def boolean(value: str | bool) -> bool:
    """true/false, yes/no, 1/0, y/n in any case."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise BadValue(f"{value!r} is not true or false")


def typed(value: str) -> str | int | float | bool:
    """A CSV cell as the JSON value it spells: booleans and plain numbers, else text.

    Numbers with leading zeros (postcodes, card numbers) stay text.
    """
    value = text(value, ATTRIBUTE_VALUE_LENGTH, multi_line=True)
    lowered = value.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if INTEGER.fullmatch(value):
        return int(value)
    if DECIMAL.fullmatch(value):
        number = float(value)
        if math.isfinite(number):
            return number
    return value


def json_scalar(value) -> str | int | float | bool:
    """A property or attribute that arrived as JSON: a scalar within the limits."""
    if isinstance(value, bool) or isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadValue(f"{value!r} is not a finite number")
        return value
    if isinstance(value, str):
        return text(value, ATTRIBUTE_VALUE_LENGTH, multi_line=True)
    raise BadValue(f"must be text, a number or true/false, not {type(value).__name__}")


def key_name(value: str, what: str) -> str:
    """An attribute, property or interest tag or a consent purpose."""
    if not (0 < len(value) <= ATTRIBUTE_NAME_LENGTH) or not KEY_NAME.fullmatch(value):
        raise BadValue(f"{what} {value!r} must be 1 to {ATTRIBUTE_NAME_LENGTH} letters, digits, '_', '.' or '-'")
    return value


def channel(value: str) -> str:
    """A channel name such as ``pos`` or ``call_centre``."""
    if not (0 < len(value) <= CHANNEL_LENGTH) or not CHANNEL.fullmatch(value):
        raise BadValue(f"channel {value!r} must be lower-case letters, digits and '_', starting with a letter")
    return value


def event_type(value: str) -> str:
    """An event's type such as ``purchase`` or ``call``."""
    return required_text(value, EVENT_TYPE_LENGTH)


def timestamp(value: str) -> datetime:
    """An ISO 8601 time; without an offset it is taken as UTC."""
    raw = value.strip() if isinstance(value, str) else value
    if not isinstance(raw, str) or not raw:
        raise BadValue("is empty" if raw in ("", None) else f"{raw!r} is not an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(raw)
        return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    except ValueError:
        raise BadValue(f"{raw!r} is not an ISO 8601 time such as '2026-11-23T10:00:00Z'") from None
    except OverflowError:  # 0001-01-01T00:00:00+02:00 is a moment before year 1 in UTC
        raise BadValue(f"{raw!r} is outside the years 1 to 9999 in UTC") from None


def occurred_at(value: str, now: datetime | None = None) -> datetime:
    """When an event happened: an ISO 8601 time (see :func:`timestamp`) that
    :func:`segments.event_times.implausible` allows at ``now`` (default: the clock)."""
    moment = timestamp(value)
    problem = implausible(moment, now or datetime.now(timezone.utc))
    if problem is not None:
        raise BadValue(problem)
    return moment
