"""Transports against real things: an aiosmtpd server on localhost, and Maildir folders on disk."""

from __future__ import annotations

import contextlib
import email
import email.policy
import mailbox
import multiprocessing
import socket
import threading
import time
from pathlib import Path

import pytest

from delivery.message import Address, MessageTemplate, new_message_id
from delivery.transports import (
    TRANSPORTS,
    DeliveryError,
    OutboxTransport,
    PermanentError,
    SmtpTransport,
    TransientError,
    Transport,
    deliver,
    open_transport,
)
from delivery.transports.smtp import Pacer
from tests.delivery import smtp_server as helpers
from tests.delivery.smtp_server import SmtpServer

smtp_server = helpers.smtp_server  # the fixture, for this module's tests

SENDER = "bounces@shop.example.com"
HTML = '<p>¡Hola!</p>\n.<b>a line starting with a dot</b>\nFrom here on, a line starting with "From "\n' + "x" * 300
TEXT = "¡Hola!\n.\n..\nFrom me\ntrailing space \n"
TEMPLATE = MessageTemplate(
    sender=Address("news@shop.example.com", "Shop News"),
    reply_to=None,
    feedback_id="c1:r1:patron:shop",
    unsubscribe_mailto="unsubscribe@shop.example.com",
)


def message(to: str = "jane@example.org", subject: str = "Hello") -> bytes:
    return TEMPLATE.build(
        to=Address(to, "Jane"),
        subject=subject,
        html=HTML,
        text=TEXT,
        message_id=new_message_id("shop.example.com"),
        language="es",
        unsubscribe_url="https://shop.example.com/u/token",
    )


def parts(data: bytes) -> tuple[str, str]:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    return tuple(part.get_content().replace("\r\n", "\n") for part in parsed.iter_parts())


@pytest.fixture
def smtp(smtp_server, tmp_path):
    transport = open_transport(smtp_server.url, instance_path=tmp_path)
    yield transport
    transport.close()


def test_registry_names_both_transports():
    assert TRANSPORTS == {"outbox": OutboxTransport, "smtp": SmtpTransport}


def test_smtp_message_arrives_intact(smtp_server, smtp):
    sent = message()
    smtp.send(SENDER, "jane@example.org", sent)

    (received,) = smtp_server.received()
    assert received.mail_from == SENDER and received.rcpt_tos == ("jane@example.org",)
    assert received.content == sent  # dot-stuffed on the way, unstuffed on arrival
    assert parts(received.content) == (TEXT, HTML)


def test_smtp_reuses_one_connection(smtp_server, smtp):
    for number in range(100):
        smtp.send(SENDER, f"user{number}@example.org", message(f"user{number}@example.org"))

    assert len(smtp_server.received()) == 100
    assert smtp_server.ehlos == 1


def test_a_451_is_retried_and_arrives_once(smtp_server, smtp):
    smtp_server.reply_next("jane@example.org", "451 4.7.1 try later")
    sleeps = []

    assert deliver(smtp, SENDER, "jane@example.org", message(), sleep=sleeps.append) == 2
    assert len(smtp_server.received()) == 1
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 0.55


def test_a_550_fails_at_once_and_the_next_message_goes_through(smtp_server, smtp):
    smtp_server.reply_next("gone@example.org", "550 5.1.1 no such user")
    sleeps = []

    with pytest.raises(PermanentError) as raised:
        deliver(smtp, SENDER, "gone@example.org", message("gone@example.org"), sleep=sleeps.append)
    assert raised.value.code == 550 and "no such user" in raised.value.detail
    assert sleeps == []

    smtp.send(SENDER, "jane@example.org", message())
    assert [received.rcpt_tos for received in smtp_server.received()] == [("jane@example.org",)]
    assert smtp_server.ehlos == 1  # the refused transaction was reset, not the connection


def test_a_421_closes_and_the_next_send_reconnects(smtp_server, smtp):
    smtp_server.reply_next("jane@example.org", "421 4.3.2 shutting down")
    with pytest.raises(TransientError) as raised:
        smtp.send(SENDER, "jane@example.org", message())
    assert raised.value.code == 421

    smtp.send(SENDER, "jane@example.org", message())
    assert len(smtp_server.received()) == 1
    assert smtp_server.ehlos == 2


def test_an_idle_connection_the_server_closed_is_reopened(smtp_server, smtp):
    smtp.send(SENDER, "jane@example.org", message())
    smtp_server.drop_connections()
    time.sleep(0.05)

    smtp.send(SENDER, "jane@example.org", message())
    assert len(smtp_server.received()) == 2
    assert smtp_server.ehlos == 2


def test_a_connection_dropped_mid_transaction_is_retried_once(smtp_server, smtp):
    smtp.send(SENDER, "jane@example.org", message())
    smtp_server.drop_next()
    smtp.send(SENDER, "jane@example.org", message())
    assert len(smtp_server.received()) == 2

    smtp_server.drop_next(2)
    with pytest.raises(TransientError, match="dropped the connection twice"):
        smtp.send(SENDER, "jane@example.org", message())
    smtp_server.drop_next(2)
    assert deliver(smtp, SENDER, "jane@example.org", message(), sleep=lambda seconds: None) == 2
    assert len(smtp_server.received()) == 3


def test_max_rate_paces_the_sends(smtp_server, tmp_path):
    with open_transport(smtp_server.url + "?max_rate=50", instance_path=tmp_path) as transport:
        started = time.monotonic()
        for _ in range(20):
            transport.send(SENDER, "jane@example.org", message())
        elapsed = time.monotonic() - started
    assert len(smtp_server.received()) == 20
    assert elapsed >= 0.36  # 19 gaps of 20 ms; a behaviour test, so no upper bound to flake on


def test_max_rate_is_shared_by_the_workers(smtp_server, tmp_path):
    with open_transport(smtp_server.url + "?max_rate=100", instance_path=tmp_path, workers=4) as transport:
        started = time.monotonic()
        for _ in range(6):
            transport.send(SENDER, "jane@example.org", message())
        assert time.monotonic() - started >= 0.19  # 25 a second for this worker: 5 gaps of 40 ms


def test_pacer_spaces_calls_evenly():
    now = [100.0]
    slept = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    pacer = Pacer(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        pacer.wait()
    now[0] += 10  # idle: no burst is saved up
    pacer.wait()
    pacer.wait()
    assert slept == [0.25, 0.25, 0.25]


def test_smtp_login_with_url_encoded_credentials(tmp_path):
    with SmtpServer(credentials=("patron", "p@ss/w:rd")) as server:
        url = f"smtp://patron:p%40ss%2Fw%3Ard@{server.host}:{server.port}"
        with open_transport(url, instance_path=tmp_path) as transport:
            transport.send(SENDER, "jane@example.org", message())
            transport.send(SENDER, "jane@example.org", message())
        assert len(server.received()) == 2
        assert server.logins == {"patron": 1}

        with open_transport(f"smtp://patron:wrong@{server.host}:{server.port}", instance_path=tmp_path) as transport:
            with pytest.raises(DeliveryError) as raised:
                deliver(transport, SENDER, "jane@example.org", message())
        assert type(raised.value) is DeliveryError  # neither transient nor permanent: stop the batch
        assert "wrong" not in str(raised.value)


def test_an_unreachable_server_is_transient(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens once it is closed
    with open_transport(f"smtp://127.0.0.1:{port}?timeout=2", instance_path=tmp_path) as transport:
        with pytest.raises(TransientError, match="cannot connect"):
            transport.send(SENDER, "jane@example.org", message())


def test_a_silent_server_times_out_once_without_an_immediate_retry(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections complete in the backlog, but no greeting ever comes
        port = listener.getsockname()[1]
        with open_transport(f"smtp://127.0.0.1:{port}?timeout=0.3", instance_path=tmp_path) as transport:
            with pytest.raises(TransientError, match="timed out"):
                transport.send(SENDER, "jane@example.org", message())
        listener.setblocking(False)
        connections = []
        with contextlib.suppress(BlockingIOError):
            while True:
                connections.append(listener.accept()[0])
        for connection in connections:
            connection.close()
    assert len(connections) == 1


@pytest.mark.parametrize(
    "greeting, error", [("421 4.3.2 busy", TransientError), ("554 5.7.1 no service", DeliveryError)]
)
def test_a_server_refusing_the_session(tmp_path, greeting, error):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def greet() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.sendall(greeting.encode() + b"\r\n")
                connection.recv(1024)

        server = threading.Thread(target=greet, daemon=True)
        server.start()
        url = f"smtp://127.0.0.1:{listener.getsockname()[1]}?timeout=5"
        with open_transport(url, instance_path=tmp_path) as transport:
            with pytest.raises(DeliveryError) as raised:
                transport.send(SENDER, "jane@example.org", message())
        server.join(5)
    assert type(raised.value) is error and raised.value.code == int(greeting[:3])


@pytest.mark.parametrize("recipient", ["jane@example.org\r\nRCPT TO:<x@example.com>", "jö sé@example.org", "nobody"])
def test_smtp_refuses_envelope_addresses_it_cannot_send(smtp_server, smtp, recipient):
    with pytest.raises(PermanentError):
        smtp.send(SENDER, recipient, message())
    assert smtp_server.received() == []


def test_smtp_sends_to_an_international_domain_in_idna(smtp_server, smtp):
    smtp.send(SENDER, "ana@bücher.example", message())
    assert smtp_server.received()[0].rcpt_tos == ("ana@xn--bcher-kva.example",)


class ScriptedTransport(Transport):
    """Raises the given errors in turn, then accepts."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    @classmethod
    def from_url(cls, url, *, instance_path, workers):  # pragma: no cover
        raise NotImplementedError

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)

    def close(self) -> None:
        pass


def test_deliver_backs_off_exponentially_then_gives_up():
    transport = ScriptedTransport(*(TransientError("busy", 451) for _ in range(4)))
    sleeps = []
    with pytest.raises(TransientError):
        deliver(transport, SENDER, "jane@example.org", b"", sleep=sleeps.append)
    assert transport.calls == 4
    assert len(sleeps) == 3
    assert all(base <= delay <= base * 1.1 for base, delay in zip((0.5, 1.0, 2.0), sleeps))


@pytest.mark.parametrize("error", [PermanentError("no such user", 550), DeliveryError("bad login", 535)])
def test_deliver_does_not_retry_other_errors(error):
    transport = ScriptedTransport(error)
    with pytest.raises(type(error)):
        deliver(transport, SENDER, "jane@example.org", b"", sleep=pytest.fail)
    assert transport.calls == 1


def read_outbox(path: Path) -> list[email.message.EmailMessage]:
    box = mailbox.Maildir(path, factory=None, create=False)
    return [email.message_from_bytes(box.get_bytes(key), policy=email.policy.default) for key in box.keys()]


def test_outbox_writes_parseable_maildir_messages(tmp_path):
    target = tmp_path / "mail"
    with open_transport(f"outbox://{target}", instance_path=tmp_path / "instance") as transport:
        for number in range(5):
            transport.send(SENDER, f"user{number}@example.org", message(f"user{number}@example.org"))

    assert sorted(path.name for path in target.iterdir()) == ["cur", "new", "tmp"]
    assert len(list((target / "new").iterdir())) == 5 and not list((target / "tmp").iterdir())
    messages = read_outbox(target)
    assert sorted(str(parsed["Delivered-To"]) for parsed in messages) == [f"user{n}@example.org" for n in range(5)]
    for parsed in messages:
        assert parsed["Return-Path"] == f"<{SENDER}>"
        assert parsed["To"].addresses[0].addr_spec == str(parsed["Delivered-To"])
        assert tuple(part.get_content().replace("\r\n", "\n") for part in parsed.iter_parts()) == (TEXT, HTML)


@pytest.mark.parametrize("url", ["outbox:", "outbox://", "outbox:///"])
def test_outbox_defaults_to_the_instance_folder(tmp_path, url):
    with open_transport(url, instance_path=tmp_path / "instance") as transport:
        transport.send(SENDER, "jane@example.org", message())
    assert len(list((tmp_path / "instance" / "outbox" / "new").iterdir())) == 1


def test_outbox_is_safe_across_threads(tmp_path):
    transports = [OutboxTransport(tmp_path / "box") for _ in range(8)]
    data = message()

    def work(transport: OutboxTransport) -> None:
        for _ in range(50):
            transport.send(SENDER, "jane@example.org", data)

    threads = [threading.Thread(target=work, args=(transport,)) for transport in transports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(list((tmp_path / "box" / "new").iterdir())) == 400


def _write_to_outbox(path: str, count: int) -> None:
    transport = OutboxTransport(Path(path))
    for _ in range(count):
        transport.send(SENDER, "jane@example.org", b"Subject: x\r\n\r\nbody\r\n")


def test_outbox_is_safe_across_processes(tmp_path):
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write_to_outbox, args=(str(tmp_path / "box"), 50)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    assert len(list((tmp_path / "box" / "new").iterdir())) == 150


@pytest.mark.parametrize(
    "url, problem",
    [
        ("smpt://mail.example.com", "unknown scheme 'smpt'"),
        ("mail.example.com:25", "unknown scheme"),
        ("smtp://", "no host"),
        ("smtp://mail.example.com:port", "port must be a number"),
        ("smtp://mail.example.com?security=tls", "security must be one of none, starttls, ssl, not 'tls'"),
        ("smtp://mail.example.com?max_rate=0", "max_rate must be a positive number"),
        ("smtp://mail.example.com?max_rate=fast", "max_rate must be a positive number"),
        ("smtp://mail.example.com?timeout=-1", "timeout must be a positive number"),
        ("smtp://mail.example.com?tls=1", "unknown option 'tls'"),
        ("smtp://mail.example.com?timeout=1&timeout=2", "given twice"),
        ("smtp://mail.example.com/path", "no path"),
        ("outbox://relative/dir", "absolute path"),
        ("outbox:relative/dir", "must be absolute"),
        ("outbox:///tmp/box?sync=1", "takes no options"),
    ],
)
def test_bad_urls_say_what_is_wrong(tmp_path, url, problem):
    with pytest.raises(ValueError, match="delivery URL") as raised:
        open_transport(url, instance_path=tmp_path)
    assert problem in str(raised.value)


def test_bad_urls_hide_the_password(tmp_path):
    with pytest.raises(ValueError) as raised:
        open_transport("smtp://patron:s3cret@mail.example.com:25?security=tls", instance_path=tmp_path)
    assert "s3cret" not in str(raised.value)
    assert "smtp://patron:***@mail.example.com:25?security=tls" in str(raised.value)


def test_smtp_url_defaults_and_options(tmp_path):
    plain = open_transport("smtp://mail.example.com", instance_path=tmp_path)
    assert (plain.host, plain.port, plain.security, plain.timeout) == ("mail.example.com", 25, "none", 30.0)
    ssl = open_transport("smtp://mail.example.com?security=ssl&timeout=5", instance_path=tmp_path)
    assert (ssl.port, ssl.security, ssl.timeout) == (465, "ssl", 5.0)
    starttls = open_transport("smtp://mail.example.com:587?security=starttls", instance_path=tmp_path)
    assert (starttls.port, starttls.security) == (587, "starttls")


def test_workers_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        open_transport("outbox:", instance_path=tmp_path, workers=0)
