"""A fast SMTP sink for benchmarks: accepts every message, counts messages and bytes, keeps nothing.

It runs aiosmtpd's ``Controller`` in a process of its own, so that its CPU is
not the sender's; the counters live in shared memory and the parent reads them
at any time::

    with Sink() as sink:
        send_to(sink.port)
        print(sink.messages, sink.bytes)

``raw_capacity`` measures what the sink takes from a trivial ``smtplib`` loop
of pre-built messages: if a sender gets close to that figure, the sink (not the
sender) is what limits it.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import smtplib
import socket
import time
from email.message import EmailMessage
from multiprocessing import get_context
from pathlib import Path

PORT_ATTEMPTS = 20
START_TIMEOUT = 30.0


_END_OF_DATA = b"\r\n.\r\n"


def _controller_class():
    """aiosmtpd's Controller whose server reads DATA in 64 KB chunks instead of line by line.

    Stock aiosmtpd spends about a millisecond of Python per 16 KB message
    awaiting each line; that capped it near the sender's target rate. Reading
    chunks until the terminator makes the sink several times faster, so it is
    never what a benchmark measures. (No PIPELINING is advertised, so nothing
    follows the terminator until the reply is sent.)
    """
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP, syntax

    class FastDataSMTP(SMTP):
        @syntax("DATA")
        async def smtp_DATA(self, arg: str) -> None:
            if await self.check_helo_needed():
                return
            if not self.envelope.rcpt_tos:
                await self.push("503 Error: need RCPT command")
                return
            if arg:
                await self.push("501 Syntax: DATA")
                return
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            data = bytearray(b"\r\n")  # so that an empty message's "." is found like any other end
            while not data.endswith(_END_OF_DATA):
                chunk = await self._reader.read(1 << 16)
                if not chunk:
                    return  # the client went away mid-message
                data += chunk
            content = bytes(data).replace(b"\r\n..", b"\r\n.")[2:-3]  # undo dot-stuffing, drop the "."
            self.envelope.content = self.envelope.original_content = content
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push(status)

    class FastController(Controller):
        def factory(self):
            return FastDataSMTP(self.handler, **self.SMTP_kwargs)

    return FastController


class _Counter:
    """The aiosmtpd handler: count, then discard."""

    def __init__(self, messages, size):
        self.messages, self.size = messages, size

    async def handle_DATA(self, server, session, envelope):
        # One writer (the sink's event loop thread): no lock needed.
        self.messages.value += 1
        self.size.value += len(envelope.content)
        return "250 OK: discarded"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(ready, stop, messages, size) -> None:
    """The sink process: start the controller on a free port, report it, wait for the stop signal."""
    controller_class = _controller_class()
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    error = None
    for _ in range(PORT_ATTEMPTS):  # a free port can be taken between probing and binding
        handler = _Counter(messages, size)
        controller = controller_class(handler, hostname="127.0.0.1", port=_free_port(), ready_timeout=10)
        try:
            controller.start()
        except Exception as exc:  # noqa: BLE001 - any start failure: try another port
            error = exc
            continue
        ready.put(("ready", controller.port))
        stop.wait()
        controller.stop()
        return
    ready.put(("error", f"the SMTP sink could not start: {error!r}"))


class Sink:
    """The sink process and its shared counters."""

    def __init__(self):
        context = get_context("spawn")
        self._messages = context.Value("q", 0, lock=False)
        self._bytes = context.Value("q", 0, lock=False)
        self._ready = context.Queue()
        self._stop = context.Event()
        self._process = context.Process(
            target=_serve, args=(self._ready, self._stop, self._messages, self._bytes), name="smtp-sink", daemon=True
        )
        self.port: int | None = None

    def start(self) -> int:
        """Start the sink; its port."""
        self._process.start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                status, value = self._ready.get(timeout=0.2)
                break
            except queue.Empty:
                if not self._process.is_alive() or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the SMTP sink process did not start (its error is above)") from None
        if status != "ready":
            self.stop()
            raise RuntimeError(value)
        self.port = value
        return value

    def stop(self) -> None:
        self._stop.set()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()

    @property
    def messages(self) -> int:
        return self._messages.value

    @property
    def bytes(self) -> int:
        return self._bytes.value

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def __enter__(self) -> Sink:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class PostfixSink:
    """Postfix's ``smtp-sink``, the C test server made for this, in a process of its own.

    It answers each command in microseconds (aiosmtpd takes a fraction of a
    millisecond in Python), so a single-connection sender meets the sink's
    limit later. It counts messages (its ``-c`` counters, read from its output)
    but not bytes.
    """

    def __init__(self, binary: str):
        self.binary = binary
        self.port: int | None = None
        self._process = None
        self._output = None

    def start(self) -> int:
        import subprocess
        import tempfile

        self.port = _free_port()
        libraries = Path(self.binary).resolve().parent.parent / "lib" / "postfix"
        env = {**os.environ, "LD_LIBRARY_PATH": f"{libraries}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
        self._output = tempfile.NamedTemporaryFile(prefix="smtp-sink-", suffix=".out")
        user = ["-u", "root"] if os.geteuid() == 0 else []
        self._process = subprocess.Popen(
            [self.binary, "-c", *user, f"127.0.0.1:{self.port}", "256"],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self.port
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"{self.binary} did not start: {Path(self._output.name).read_text()[-500:]}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait()
        if self._output is not None:
            self._output.close()

    @property
    def messages(self) -> int:
        counters = re.findall(rb"mesg=(\d+)", Path(self._output.name).read_bytes()[-200:])
        return int(counters[-1]) if counters else 0

    @property
    def bytes(self) -> int:
        return 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def __enter__(self) -> PostfixSink:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def postfix_sink_binary() -> str | None:
    """Where Postfix's smtp-sink is: $PATRON_BENCH_SMTP_SINK, the PATH, or /usr/sbin."""
    for candidate in (os.environ.get("PATRON_BENCH_SMTP_SINK"), shutil.which("smtp-sink"), "/usr/sbin/smtp-sink"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def sample_message(size: int = 16 * 1024) -> bytes:
    """A plain multipart message of about ``size`` bytes, like a newsletter's."""
    message = EmailMessage()
    message["From"] = "Bench <bench@sink.example.com>"
    message["To"] = "Recipient <recipient@sink.example.com>"
    message["Subject"] = "Sink capacity"
    line = "The quick brown fox jumps over the lazy dog, again and again, for the benchmark.\n"
    text = line * max(1, size // 2 // len(line))
    message.set_content(text)
    message.add_alternative(f"<html><body><pre>{text}</pre></body></html>", subtype="html")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def raw_capacity(port: int, count: int = 2000, message: bytes | None = None) -> dict:
    """Messages per second the sink takes from a trivial smtplib loop over one connection."""
    message = message or sample_message()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo()
        started = time.perf_counter()
        for _ in range(count):
            smtp.sendmail("bench@sink.example.com", ["recipient@sink.example.com"], message)
        seconds = time.perf_counter() - started
    return {"messages": count, "message_bytes": len(message), "seconds": seconds, "msgs_per_s": count / seconds}
