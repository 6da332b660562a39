"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 and a free port, in a thread of its own.

It keeps every message it accepts, counts connections, and can be told to refuse the next messages
for a recipient with a given reply ("451 4.7.1 try later", "550 5.1.1 no such user") or to drop the
connection, in the middle of a transaction or while idle. Use the ``smtp_server`` fixture, or
``with SmtpServer(credentials=("user", "secret")) as server:`` for one that requires a login, or
``SmtpServer(smtputf8=True)`` for one that offers SMTPUTF8 (RFC 6531; aiosmtpd's default is not to).
Import the fixture where it is needed: ``from tests.delivery.smtp_server import smtp_server``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass(frozen=True)
class Received:
    """One accepted message: the envelope, its MAIL FROM parameters and the content bytes as they
    arrived (dots unstuffed)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    mail_options: tuple[str, ...] = ()


class _Handler:
    """aiosmtpd hooks; they run on the server's event loop thread, the test reads from its own."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_EHLO(self, smtp, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.server._lock:
            self.server.ehlos += 1
        return responses

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
        reply = self.server._take_reply(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp, session, envelope):
        while not self.server._open_gate.is_set():  # held: the message waits, its sender sees a slow server
            await asyncio.sleep(0.01)
        with self.server._lock:
            self.server.messages.append(
                Received(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content, tuple(envelope.mail_options))
            )
        return "250 2.0.0 accepted"


class _Smtp(SMTP):
    """aiosmtpd's server protocol, plus the connection bookkeeping and the drop the tests need."""

    def __init__(self, handler, server: SmtpServer, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self._owner = server

    def connection_made(self, transport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            with self._owner._lock:
                self._owner._open.add(self)

    def connection_lost(self, error) -> None:
        with self._owner._lock:
            self._owner._open.discard(self)
        super().connection_lost(error)

    async def smtp_MAIL(self, arg):
        if self._owner._take_drop():
            self.transport.abort()  # no reply at all: what a crashed or restarted server looks like
            return
        await super().smtp_MAIL(arg)


class _Controller(Controller):
    def __init__(self, server: SmtpServer, **kwargs) -> None:
        self._owner = server
        super().__init__(_Handler(server), hostname="127.0.0.1", port=0, **kwargs)

    def factory(self):
        return _Smtp(self.handler, self._owner, **self.SMTP_kwargs)

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]  # port 0 asked the OS for a free one
        super()._trigger_server()


class SmtpServer:
    """A started server: ``host``, ``port``, ``url``, ``messages``, ``ehlos`` (one per client connection)."""

    host = "127.0.0.1"

    def __init__(self, *, credentials: tuple[str, str] | None = None, smtputf8: bool = False) -> None:
        self.messages: list[Received] = []
        self.ehlos = 0
        self._lock = threading.Lock()
        self._replies: dict[str, list[str]] = {}
        self._drops = 0
        self._open_gate = threading.Event()
        self._open_gate.set()
        self._open: set[_Smtp] = set()
        self.logins: Counter[str] = Counter()
        options: dict = {"enable_SMTPUTF8": smtputf8}
        if credentials is not None:
            options |= {"authenticator": self._authenticator(credentials), "auth_require_tls": False}
        self._controller = _Controller(self, **options)

    @property
    def port(self) -> int:
        return self._controller.port

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def reply_next(self, recipient: str, reply: str, times: int = 1) -> None:
        """Answer RCPT TO for ``recipient`` with ``reply`` (e.g. "451 4.7.1 try later") the next ``times``."""
        with self._lock:
            self._replies.setdefault(recipient, []).extend([reply] * times)

    def hold(self) -> None:
        """Keep every message waiting at DATA (its sender's run stays sending) until :meth:`release`."""
        self._open_gate.clear()

    def release(self) -> None:
        self._open_gate.set()

    def drop_next(self, times: int = 1) -> None:
        """Cut the connection, without a reply, at the next ``times`` MAIL FROM commands."""
        with self._lock:
            self._drops += times

    def drop_connections(self) -> None:
        """Close every open connection now, as a server does with idle ones."""
        with self._lock:
            sessions = list(self._open)
        for session in sessions:
            if session.transport is not None:
                self._controller.loop.call_soon_threadsafe(session.transport.close)

    def received(self) -> list[Received]:
        """A snapshot of the messages accepted so far."""
        with self._lock:
            return list(self.messages)

    def _take_reply(self, recipient: str) -> str | None:
        with self._lock:
            replies = self._replies.get(recipient)
            return replies.pop(0) if replies else None

    def _take_drop(self) -> bool:
        with self._lock:
            if self._drops:
                self._drops -= 1
                return True
            return False

    def _authenticator(self, credentials: tuple[str, str]):
        def authenticate(smtp, session, envelope, mechanism, auth_data) -> AuthResult:
            ok = isinstance(auth_data, LoginPassword) and (auth_data.login.decode(), auth_data.password.decode()) == (
                credentials
            )
            if ok:
                with self._lock:
                    self.logins[auth_data.login.decode()] += 1
            return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535

        return authenticate


@pytest.fixture
def smtp_server():
    """A running :class:`SmtpServer`, stopped after the test."""
    with SmtpServer() as server:
        yield server
