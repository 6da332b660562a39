"""A misbehaving SMTP server for tests, on raw sockets: it fails each transaction the way it is told.

aiosmtpd cannot fail at the moments that matter here (after the final "." of DATA, before the reply),
so this one speaks just enough SMTP (RFC 5321: greeting, EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
QUIT) over a socket of its own, one thread per connection. ``fault(n, recipient)`` is asked for each
transaction (n counts from 0 across all connections) and answers one of :data:`FAULTS` or None:

- ``drop_at_rcpt``: close the connection, no reply, when RCPT TO arrives;
- ``drop_at_data``: close it, no reply, when the DATA command arrives;
- ``drop_in_data``: reply 354, read a little of the message, then reset the connection (RST);
- ``drop_after_dot``: read the whole message and close, no reply;
- ``reset_after_dot``: read the whole message and reset the connection (RST);
- ``timeout_after_dot``: read the whole message and say nothing until the client gives up;
- ``hold_after_dot``: read the whole message and say nothing until :meth:`release` (then 250);
- ``slow_reply``: read the whole message and answer 250 after :attr:`SLOW` seconds;
- ``reply_451`` / ``reply_550``: refuse the message after its "." with that code.

A message whose final "." arrived is in :attr:`messages` whatever happens next (the server had it),
unless the server refused it.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable

FAULTS = (
    "drop_at_rcpt",
    "drop_at_data",
    "drop_in_data",
    "drop_after_dot",
    "reset_after_dot",
    "timeout_after_dot",
    "hold_after_dot",
    "slow_reply",
    "reply_451",
    "reply_550",
)


class _Closed(Exception):
    pass


class FaultySmtp:
    """A started server: ``url``, ``messages`` [(recipient, bytes)], ``copies`` (a Counter per recipient)."""

    SLOW = 0.2

    def __init__(self, fault: Callable[[int, str], str | None] = lambda n, rcpt: None) -> None:
        self.fault = fault
        self.messages: list[tuple[str, bytes]] = []
        self.connections = 0
        self._transactions = 0
        self._holding = 0
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._stopping = threading.Event()
        self._clients: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def copies(self) -> Counter[str]:
        """How many messages each recipient received."""
        with self._lock:
            return Counter(recipient for recipient, _ in self.messages)

    def held(self) -> int:
        """Messages received whose reply is held (``hold_after_dot``) right now."""
        with self._lock:
            return self._holding

    def release(self) -> None:
        """Answer 250 to every held message, and hold no more."""
        self._released.set()

    def __enter__(self) -> FaultySmtp:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        self._released.set()
        self._thread.join()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            _close(client)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
                self._clients.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        reader = client.makefile("rb")
        try:
            self._session(client, reader)
        except (_Closed, OSError):
            pass
        finally:
            reader.close()
            _close(client)

    def _session(self, client: socket.socket, reader) -> None:
        client.sendall(b"220 faulty.test ESMTP\r\n")
        recipient, fault = None, None
        while True:
            line = reader.readline(1000)
            if not line:
                raise _Closed
            verb = line[:4].upper()
            if verb == b"EHLO":
                client.sendall(b"250-faulty.test\r\n250 8BITMIME\r\n")
            elif verb in (b"HELO", b"NOOP"):
                client.sendall(b"250 OK\r\n")
            elif verb == b"RSET":
                recipient = None
                client.sendall(b"250 OK\r\n")
            elif verb == b"QUIT":
                client.sendall(b"221 bye\r\n")
                raise _Closed
            elif verb == b"MAIL":
                client.sendall(b"250 OK\r\n")
            elif verb == b"RCPT":
                recipient = line.partition(b"<")[2].partition(b">")[0].decode()
                with self._lock:
                    number, self._transactions = self._transactions, self._transactions + 1
                fault = self.fault(number, recipient)
                assert fault is None or fault in FAULTS, fault
                if fault == "drop_at_rcpt":
                    raise _Closed
                client.sendall(b"250 OK\r\n")
            elif verb == b"DATA":
                if fault == "drop_at_data":
                    raise _Closed
                client.sendall(b"354 go ahead\r\n")
                if fault == "drop_in_data":
                    reader.read(100)
                    _reset(client)
                    raise _Closed
                content = _read_data(reader)
                if fault not in ("reply_451", "reply_550"):
                    with self._lock:
                        self.messages.append((recipient, content))
                self._after_dot(client, fault)
                recipient = None
            else:
                client.sendall(b"502 not implemented\r\n")

    def _after_dot(self, client: socket.socket, fault: str | None) -> None:
        if fault == "drop_after_dot":
            raise _Closed
        if fault == "reset_after_dot":
            _reset(client)
            raise _Closed
        if fault == "timeout_after_dot":
            self._stopping.wait(60)  # the client's timeout is far shorter
            raise _Closed
        if fault == "slow_reply":
            self._stopping.wait(self.SLOW)
        if fault == "hold_after_dot":
            with self._lock:
                self._holding += 1
            self._released.wait()
            with self._lock:
                self._holding -= 1
        if fault in ("reply_451", "reply_550"):
            client.sendall(f"{fault[-3:]} {'try later' if fault == 'reply_451' else 'no such user'}\r\n".encode())
        else:
            client.sendall(b"250 2.0.0 accepted\r\n")


def _read_data(reader) -> bytes:
    lines = []
    while (line := reader.readline()) != b".\r\n":
        if not line:
            raise _Closed  # the client went away before the end of the message: the server does not have it
        lines.append(line[1:] if line.startswith(b".") else line)
    return b"".join(lines)


def _reset(client: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0) rather than an orderly FIN."""
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def _close(client: socket.socket) -> None:
    try:
        client.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    client.close()
