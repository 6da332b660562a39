"""Transports: where finished messages go, chosen by the scheme of a delivery URL.

``outbox:`` writes a Maildir on disk (the embedded default); ``smtp://host:port?…`` sends through an
SMTP server. Each transport is one module beside this one, registered in :data:`TRANSPORTS`, like
listmonk's messengers: adding one is a module and a line here.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from delivery.transports.base import (
    AmbiguousError,
    DeliveryError,
    PermanentError,
    TransientError,
    Transport,
    deliver,
)
from delivery.transports.outbox import OutboxTransport
from delivery.transports.smtp import SmtpTransport

__all__ = [
    "TRANSPORTS",
    "AmbiguousError",
    "DeliveryError",
    "OutboxTransport",
    "PermanentError",
    "SmtpTransport",
    "TransientError",
    "Transport",
    "deliver",
    "open_transport",
    "redact_url",
]

TRANSPORTS: dict[str, type[Transport]] = {"outbox": OutboxTransport, "smtp": SmtpTransport}


def open_transport(url: str, *, instance_path: Path, workers: int = 1) -> Transport:
    """The transport a delivery URL names, for one of ``workers`` workers sharing its rate limit."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"delivery URL {redact_url(url)!r} cannot be parsed: {exc}") from None
    transport = TRANSPORTS.get(parts.scheme.lower())
    if transport is None:
        known = ", ".join(f"{scheme}:" for scheme in TRANSPORTS)
        raise ValueError(f"delivery URL {redact_url(url)!r}: unknown scheme {parts.scheme!r}; known: {known}")
    try:
        return transport.from_url(parts, instance_path=instance_path, workers=workers)
    except ValueError as exc:
        raise ValueError(f"delivery URL {redact_url(url)!r}: {exc}") from None


def redact_url(url: str) -> str:
    """The URL with its password (if any) shown as ***, for messages and logs.

    It errs on the side of hiding: everything between the user name and the last "@" goes, so a
    password with an unescaped "@", "/" or "#" does not leak either.
    """
    scheme, separator, rest = url.partition("://")
    userinfo, at, tail = rest.rpartition("@")
    if not (separator and at and ":" in userinfo):
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{tail}"
