"""The outbox transport: every message lands as a file in a Maildir instead of leaving the machine.

The embedded default, and what demos and tests read. ``outbox:`` (or ``outbox://``) writes to
``<instance_path>/outbox``; ``outbox:///absolute/path`` writes there. Any mail reader that opens a
Maildir (mutt -f, Python's ``mailbox.Maildir``) shows what was sent.

Each message is written to ``tmp/`` under a name unique across threads, processes and hosts, then
renamed into ``new/``, as the Maildir spec says: a reader never sees half a message. The rename is
the moment of delivery, and it is atomic (POSIX rename(2)): a failure before or at it leaves nothing in
``new/`` (the file in ``tmp/`` is removed) and raises DeliveryError, so the message may be written again
without a duplicate; once it succeeds nothing else can fail. An outbox therefore never has an
ambiguous outcome (on a network file system, where a rename can be reported failed after it happened,
a message could appear twice: keep the outbox on a local disk). It is done by
hand rather than with ``mailbox.Maildir.add``, which measured ~460 µs a message against ~35 µs here
(it stats, links and unlinks, and its counter is not thread-safe). Files are not fsynced: this is a
development outbox, not a mail store.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import socket
import time
from pathlib import Path
from urllib.parse import SplitResult, unquote

from delivery.transports.base import DeliveryError, Transport, check_envelope

_HOST = socket.gethostname().replace("/", r"\057").replace(":", r"\072")


class OutboxTransport(Transport):
    """Writes each message, with Return-Path and Delivered-To as a mailbox would add them, to a Maildir."""

    _deliveries = itertools.count()  # next() on a count is atomic under the GIL: safe across threads

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        for folder in ("tmp", "new", "cur"):
            (self.path / folder).mkdir(parents=True, exist_ok=True)
        self._tmp = os.fspath(self.path / "tmp")
        self._new = os.fspath(self.path / "new")

    @classmethod
    def from_url(cls, url: SplitResult, *, instance_path: Path, workers: int) -> OutboxTransport:
        if url.netloc:
            raise ValueError(
                "the outbox takes an absolute path (outbox:///var/mail/patron) or none (outbox:), "
                f"not a host ({url.hostname!r})"
            )
        if url.query or url.fragment:
            raise ValueError("the outbox takes no options")
        path = unquote(url.path)
        if path in ("", "/"):
            return cls(Path(instance_path) / "outbox")
        if not path.startswith("/"):
            raise ValueError(f"the outbox path must be absolute (outbox:///{path}), not {path!r}")
        return cls(Path(path))

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        check_envelope(sender, recipient)
        now = time.time()
        name = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(self._deliveries)}R{secrets.token_hex(4)}.{_HOST}"
        temporary = os.path.join(self._tmp, name)
        data = memoryview(f"Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n".encode() + message)
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                while data:
                    data = data[os.write(descriptor, data) :]
            finally:
                os.close(descriptor)
            os.rename(temporary, os.path.join(self._new, name))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise DeliveryError(f"cannot write to the outbox {self.path}: {exc}") from exc

    def close(self) -> None:
        """Nothing to release: each message is a file written and closed in :meth:`send`."""
