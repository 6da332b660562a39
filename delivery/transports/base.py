"""What every transport is: the errors it raises, its two methods, and the retry loop around them."""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from urllib.parse import SplitResult


class DeliveryError(Exception):
    """A message was not delivered. Raised as such (neither subclass), the transport itself is unusable
    (bad credentials, TLS refused): no other recipient will fare better, so stop the batch."""

    def __init__(self, detail: str, code: int | None = None) -> None:
        super().__init__(detail if code is None else f"{code} {detail}")
        self.detail = detail
        self.code = code


class TransientError(DeliveryError):
    """Worth retrying later: a 4xx reply, or a connection dropped or timed out before the server could
    hold the message (before the final "." of DATA was written)."""


class AmbiguousError(DeliveryError):
    """The outcome is unknown: the whole message, up to the final "." of DATA, was written, and then the
    connection dropped, reset or timed out with no reply (or with one that is not a reply). The server may
    have taken it (RFC 5321 §4.1.1.4 ends its responsibility there; RFC 1047 describes the duplicates
    that retrying causes), so it is never retried automatically: its ledger row becomes ``unknown``."""


class PermanentError(DeliveryError):
    """This recipient fails (a 5xx reply); the others go on."""


class Transport(ABC):
    """Hands finished messages to the next hop. One instance per worker thread or process: instances
    are not shared between threads, so they need no locking."""

    @classmethod
    @abstractmethod
    def from_url(cls, url: SplitResult, *, instance_path: Path, workers: int) -> Transport:
        """The transport a delivery URL describes; ValueError saying what is wrong with it."""

    @abstractmethod
    def send(self, sender: str, recipient: str, message: bytes) -> None:
        """Deliver one message to one recipient, or raise a DeliveryError."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and files; the transport may not be used afterwards."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def check_envelope(sender: str, recipient: str) -> None:
    """PermanentError for an envelope address that would break the protocol line it goes on."""
    for address in (sender, recipient):
        if not address or any(character in address for character in "\r\n\0<> "):
            raise PermanentError(f"not an envelope address: {address!r}")


def deliver(
    transport: Transport,
    sender: str,
    recipient: str,
    message: bytes,
    *,
    attempts: int = 4,
    backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send, retrying a TransientError with exponential backoff (backoff, 2×, 4× … plus up to 10 %
    jitter); returns the attempts used. Re-raises the last TransientError, and any other error at once:
    an AmbiguousError above all, since sending again could deliver a second copy."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            transport.send(sender, recipient, message)
        except TransientError:
            if attempt == attempts:
                raise
            delay = backoff * 2 ** (attempt - 1)
            sleep(delay + random.uniform(0, delay / 10))
        else:
            return attempt
    raise AssertionError("unreachable")  # pragma: no cover
