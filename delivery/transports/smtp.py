"""The SMTP transport: ``smtp://[user:password@]host[:port][?security=none|starttls|ssl&max_rate=N&timeout=S&helo=NAME]``.

One connection per transport instance, opened on the first send (EHLO and login once) and reused
for every message after it. Replies map to errors: 4xx → TransientError, 5xx → PermanentError, both
with the code. After a refused transaction the transport sends RSET (or closes on 421), so the
connection stays usable for the next recipient. ``max_rate`` is messages per second across all
workers: each instance paces itself to ``max_rate / workers``.

A failure is classed by where in the transaction it happened, which is why the transport drives
MAIL, RCPT and DATA itself rather than through ``smtplib.sendmail`` (which does not say):

- before the final "." of DATA was written (connect, greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, the
  DATA command, a write of the message that fails): the server cannot hold the message. A dropped
  connection is reopened and the message tried once more on it; otherwise TransientError.
- after the final "." was written, with no reply (a drop, a reset, a timeout) or one that is not an
  SMTP reply: AmbiguousError, never retried (RFC 5321 §4.1.1.4, RFC 1047). A drop the client only
  notices once the whole message is written counts here too, even if the server dropped earlier:
  the client cannot tell, so it errs towards no duplicate.
- a 4xx or 5xx reply at any step: TransientError or PermanentError.

A message to or from an address with a non-ASCII local part (UTF-8 in the envelope and headers, RFC
6532) goes with ``SMTPUTF8`` and ``BODY=8BITMIME`` (RFC 6531) when the server offers SMTPUTF8; when it
does not, that recipient fails permanently, saying so, and the others go on. Everything else is sent
as plain 7-bit SMTP, without the extension.

Not thread-safe, on purpose: a worker thread or process opens its own transport, so no locking.
"""

from __future__ import annotations

import math
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import SplitResult, parse_qsl, unquote

from delivery.message import HeaderError, header_email
from delivery.transports.base import AmbiguousError, DeliveryError, PermanentError, TransientError, Transport

SECURITY = ("none", "starttls", "ssl")
_OPTIONS = ("security", "max_rate", "timeout", "helo")
# What a dropped connection looks like, wherever in the transaction the drop is noticed.
_DROPPED = (smtplib.SMTPServerDisconnected, ConnectionError)


class _Dropped(Exception):
    pass


class Pacer:
    """At most ``rate`` calls to :meth:`wait` a second, evenly spaced: a token bucket holding one token."""

    def __init__(
        self, rate: float, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf

    def wait(self) -> None:
        """Return when the next call is allowed, sleeping until then if need be."""
        now = self._clock()
        if now < self._next:
            self._sleep(self._next - now)
            now = self._next  # the scheduled time, so that sleeping late does not slow the pace
        self._next = now + self.interval


class SmtpTransport(Transport):
    """Sends through one SMTP server on one reused connection (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str,
        port: int | None = None,
        security: str = "none",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        max_rate: float | None = None,
        workers: int = 1,
        helo: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if security not in SECURITY:
            raise ValueError(f"security must be one of {', '.join(SECURITY)}, not {security!r}")
        self.host = host
        self.port = port or (465 if security == "ssl" else 25)
        self.security = security
        self.timeout = timeout
        self._username = username
        self._password = password or ""
        self._helo = helo
        self._ssl_context = ssl_context
        self._pacer = Pacer(max_rate / workers) if max_rate else None
        self._connection: smtplib.SMTP | None = None

    @classmethod
    def from_url(cls, url: SplitResult, *, instance_path: Path, workers: int) -> SmtpTransport:
        try:
            host, port = url.hostname, url.port
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        if not host:
            raise ValueError("no host: smtp://host[:port]")
        if url.path not in ("", "/") or url.fragment:
            raise ValueError(f"an SMTP URL has no path or fragment, not {url.path + url.fragment!r}")
        options = {}
        for name, value in parse_qsl(url.query, keep_blank_values=True):
            if name not in _OPTIONS:
                raise ValueError(f"unknown option {name!r}: the options are {', '.join(_OPTIONS)}")
            if name in options:
                raise ValueError(f"option {name!r} given twice")
            options[name] = value
        security = options.get("security", "none")
        if security not in SECURITY:
            raise ValueError(f"security must be one of {', '.join(SECURITY)}, not {security!r}")
        return cls(
            host=host,
            port=port,
            security=security,
            username=unquote(url.username) if url.username else None,
            password=unquote(url.password) if url.password else None,
            timeout=_positive(options, "timeout", 30.0),
            max_rate=_positive(options, "max_rate", None),
            workers=workers,
            helo=options.get("helo") or None,
        )

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        try:  # also what keeps CR and LF out of the MAIL and RCPT commands
            sender, recipient = header_email(sender), header_email(recipient)
        except HeaderError as exc:
            raise PermanentError(str(exc)) from None
        utf8 = not (sender.isascii() and recipient.isascii() and _header_section(message).isascii())
        if self._pacer is not None:
            self._pacer.wait()
        try:
            self._transaction(sender, recipient, message, utf8)
        except _Dropped:
            self._discard()
            try:  # once more on a fresh connection: the server may have closed an idle one
                self._transaction(sender, recipient, message, utf8)
            except _Dropped as exc:
                self._discard()
                raise TransientError(f"{self.host}:{self.port} dropped the connection twice: {exc.__cause__}") from None

    def close(self) -> None:
        """QUIT, or just close if the server is already gone."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()

    def _transaction(self, sender: str, recipient: str, message: bytes, utf8: bool) -> None:
        connection = self._connect()
        options: list[str] = []
        if utf8:
            if not connection.has_extn("smtputf8"):
                raise PermanentError(
                    f"{recipient}: the message has a non-ASCII address, which needs SMTPUTF8, "
                    f"and {self.host}:{self.port} does not offer it"
                )
            options = ["SMTPUTF8", "BODY=8BITMIME"]
        if connection.has_extn("size"):
            options.append(f"SIZE={len(message)}")  # RFC 1870: a server may refuse a message too big at once
        try:
            code, reply = connection.mail(sender, options)
            if code == 250:
                code, reply = connection.rcpt(recipient)
            if code in (250, 251):
                connection.putcmd("data")
                code, reply = connection.getreply()
            if code == 354:
                connection.send(_data(message))  # a failed write raises here: the "." never left
        except smtplib.SMTPResponseException as exc:
            self._discard()  # a reply out of step with the transaction: start afresh next time
            raise _reply_error(exc.smtp_code, exc.smtp_error, recipient) from None
        except (smtplib.SMTPException, OSError) as exc:
            self._discard()
            raise _connection_error(exc, f"{self.host}:{self.port}") from exc
        if code != 354:
            self._end_refused(code)
            raise _reply_error(code, reply, recipient)
        self._final_reply(connection, recipient)

    def _final_reply(self, connection: smtplib.SMTP, recipient: str) -> None:
        """The reply to the final "." of DATA; AmbiguousError when there is none to read."""
        where = f"{self.host}:{self.port}"
        try:
            code, reply = connection.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            self._discard()
            timed_out = isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)
            what = f"no reply within {self.timeout:g} s" if timed_out else f"the connection was lost ({exc})"
            raise AmbiguousError(
                f"{recipient}: {where} had the whole message, then {what}: it may have been delivered"
            ) from None
        if 200 <= code < 300:
            return
        if 400 <= code < 600:
            self._end_refused(code)
            raise _reply_error(code, reply, recipient)
        self._discard()
        raise AmbiguousError(
            f"{recipient}: {where} had the whole message, then answered {_text(reply)!r}, not an SMTP reply: "
            "it may have been delivered"
        )

    def _end_refused(self, code: int) -> None:
        """After a refusal, RSET so the connection serves the next recipient; close it after a 421 or garbage."""
        if code == 421 or not 200 <= code < 600:
            self._discard()
            return
        try:
            self._connection.rset()
        except (smtplib.SMTPException, OSError):
            self._discard()

    def _connect(self) -> smtplib.SMTP:
        if self._connection is not None and self._connection.sock is not None:
            return self._connection  # smtplib sets sock to None when it closed after a 421
        where = f"{self.host}:{self.port}"
        arguments = {"local_hostname": self._helo_name(), "timeout": self.timeout}
        try:
            if self.security == "ssl":
                connection: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, context=self._context(), **arguments)
            else:
                connection = smtplib.SMTP(self.host, self.port, **arguments)
        except smtplib.SMTPResponseException as exc:  # a greeting other than 220
            raise _session_error(exc.smtp_code, exc.smtp_error, where) from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLS with {where} failed: {exc}") from None
        except smtplib.SMTPServerDisconnected as exc:
            raise _connection_error(exc, where) from exc
        except (smtplib.SMTPException, OSError) as exc:  # refused, unreachable, no such host
            raise TransientError(f"cannot connect to {where}: {exc}") from None
        try:
            connection.ehlo()
            if self.security == "starttls":
                connection.starttls(context=self._context())
                connection.ehlo()
            if self._username:
                connection.login(self._username, self._password)
        except smtplib.SMTPAuthenticationError as exc:
            connection.close()
            raise DeliveryError(f"{where} refused the login of {self._username!r}", exc.smtp_code) from None
        except (smtplib.SMTPNotSupportedError, ssl.SSLError) as exc:
            connection.close()
            raise DeliveryError(f"{where} cannot do security={self.security} or login: {exc}") from None
        except smtplib.SMTPResponseException as exc:
            connection.close()
            raise _session_error(exc.smtp_code, exc.smtp_error, where) from None
        except (smtplib.SMTPException, OSError) as exc:
            connection.close()
            raise _connection_error(exc, where) from exc
        self._connection = connection
        return connection

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _helo_name(self) -> str:
        if self._helo is None:  # getfqdn may ask DNS: once per transport, not per connection
            self._helo = socket.getfqdn()
        return self._helo

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context


def _data(message: bytes) -> bytes:
    """The message as DATA sends it: lines starting with "." doubled (RFC 5321 §4.5.2), then CRLF.CRLF."""
    quoted = re.sub(rb"(?m)^\.", b"..", message)
    return quoted + (b"." if quoted.endswith(b"\r\n") else b"\r\n.") + b"\r\n"


def _header_section(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end == -1 else message[:end]


def _reply_error(code: int, reply: bytes | str, recipient: str) -> DeliveryError:
    """A reply to one message's transaction: 5xx fails this recipient, anything else may go better later."""
    detail = f"{recipient}: {_text(reply)}"
    if 500 <= code < 600:
        return PermanentError(detail, code)
    return TransientError(detail, code)


def _session_error(code: int, reply: bytes | str, where: str) -> DeliveryError:
    """A reply refusing the session itself (greeting, EHLO): 4xx may pass; 5xx means no message will go."""
    detail = f"{where} refused the session: {_text(reply)}"
    return TransientError(detail, code) if 400 <= code < 500 else DeliveryError(detail, code)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _connection_error(error: Exception, where: str) -> Exception:
    """A dropped connection (worth one more try on a fresh one at once), or else a TransientError."""
    # smtplib reports a timeout as SMTPServerDisconnected; trying again at once would only wait again.
    timed_out = isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError)
    if isinstance(error, _DROPPED) and not timed_out:
        return _Dropped()
    return TransientError(f"{where}: {'timed out' if timed_out else error}")


def _positive(options: dict[str, str], name: str, default: float | None) -> float | None:
    if name not in options:
        return default
    try:
        value = float(options[name])
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number, not {options[name]!r}")
    return value
