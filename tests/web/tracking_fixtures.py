"""Fixtures for the tracking tests: an app signing like the pipeline, and a campaign really sent to an outbox."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import lxml.html
import pytest
from sqlalchemy import text

from campaigns.executors import execute_run
from campaigns.runs import start_run
from delivery.models import Delivery
from segments.models import Consent
from tests.campaigns.conftest import BASE_URL, SECRET, add_campaign, add_contacts, pack, parse, worker_config  # noqa: F401
from tests.triggers import quoted, refusing_trigger
from web import create_app, db
from web.tracking import clicks

# The installed command, as a user runs it (``python -m web.cli`` warns about the package importing it first).
PATRON = str(Path(sys.executable).with_name("patron"))

PEOPLE = [
    {"email": "ana@example.com", "first_name": "Ana", "locale": "es-MX", "interests": {"pizza": 5}},
    {"email": "bob@example.com", "first_name": "Bob", "locale": "en", "interests": {"pasta": 4}},
]


@dataclass
class Mail:
    """One sent message as its recipient sees it: the tracked URLs in it, as paths on Patron."""

    email: str
    delivery_id: int
    clicks: list[str]
    pixel: str | None
    unsubscribe: str


def app_for(engine, tmp_path, monkeypatch, **config):
    monkeypatch.setenv("PATRON_INSTANCE_PATH", str(tmp_path / "instance"))
    return create_app(
        {
            "TESTING": True,
            "PATRON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "SECRET_KEY": SECRET,
            "PATRON_BASE_URL": BASE_URL,
            **config,
        }
    )


@pytest.fixture
def tracking_app(engine, tmp_path, monkeypatch):
    app = app_for(engine, tmp_path, monkeypatch)
    yield app
    clicks.stop(app)
    db.dispose(app)


@pytest.fixture
def client(tracking_app):
    return tracking_app.test_client()


def read_mail(raw: bytes, delivery_ids: dict[str, int], base_url: str = BASE_URL) -> Mail:
    """The tracked URLs of a sent message, read the way a mail client would (headers, HTML parsed by lxml)."""
    message = parse(raw)
    html = lxml.html.fromstring(message.get_body(("html",)).get_content())
    hrefs = [urlsplit(href) for href in html.xpath("//a/@href")]
    base = urlsplit(base_url)
    clicks = [f"{u.path}" for u in hrefs if u.netloc == base.netloc and u.path.startswith("/r/")]
    pixels = [urlsplit(src).path for src in html.xpath("//img/@src") if urlsplit(src).path.startswith("/o/")]
    header = str(message["List-Unsubscribe"])
    unsubscribe = next(urlsplit(part.strip(" <>")).path for part in header.split(",") if "http" in part)
    recipient = str(message["To"]).split("<")[-1].rstrip(">")
    return Mail(recipient, delivery_ids[recipient], clicks, pixels[0] if pixels else None, unsubscribe)


def send_to_outbox(session, engine, tmp_path) -> dict[str, Mail]:
    """Send one campaign to PEOPLE through the real pipeline into a maildir outbox; their mails by address."""
    for person in add_contacts(session, [dict(person) for person in PEOPLE]):
        session.merge(Consent(contact_id=person.id, purpose="tracking", granted=True, source="test"))
    session.commit()
    campaign = add_campaign(session)
    run = start_run(session, campaign.id)
    session.commit()
    outbox = tmp_path / "outbox"
    execute_run(worker_config(engine, tmp_path, f"outbox://{outbox}"), run.id)
    session.expire_all()
    ids = {email: id_ for email, id_ in session.query(Delivery.email, Delivery.id)}
    mails = [read_mail(path.read_bytes(), ids) for path in sorted((outbox / "new").iterdir())]
    return {mail.email: mail for mail in mails}


@pytest.fixture
def sent(session, engine, tmp_path, pack):  # noqa: F811
    return send_to_outbox(session, engine, tmp_path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Return once something accepts connections on ``port``; fail with the server's output if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"patron serve exited with {process.returncode}: {process.stderr.read()!r}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"patron serve did not listen on {port} within {timeout}s")


@contextmanager
def serving(
    env: dict[str, str], *options: str, port: int | None = None, own_session: bool = False
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``patron serve`` in a process of its own on a free port: (base URL, process); stopped with SIGTERM after.

    ``own_session``: in a session (process group) of its own, so that a test can kill the whole server,
    arbiter and workers, at once (``os.killpg``); whatever is left of the group is killed after.
    """
    port = port or free_port()
    process = subprocess.Popen(
        [PATRON, "serve", "--port", str(port), *options],
        env={**env, "PATRON_BASE_URL": env.get("PATRON_BASE_URL") or f"http://127.0.0.1:{port}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=own_session,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if own_session:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def table_away(engine, name: str) -> Iterator[None]:
    """A real database fault for the block: table ``name`` renamed to ``<name>_away``, and back after."""
    with engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {name} RENAME TO {name}_away"))
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE {name}_away RENAME TO {name}"))


def refusing_agents(engine, pattern: str):
    """A real database fault for some values: a trigger refuses any response whose user agent is LIKE
    ``pattern`` (PostgreSQL with a data exception, SQLite with a constraint abort), for the block."""
    condition = f"NEW.user_agent LIKE {quoted(pattern)}"
    return refusing_trigger(engine, "refuse_agent", "responses", condition, "refused agent", errcode="22023")


def unwritable_journal(app) -> Path:
    """A real journal fault: the app's journal directory is a file, so every append fails."""
    journal = Path(app.config["PATRON_CLICK_JOURNAL"])
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text("not a directory")
    return journal


def eventually(read, expected, timeout: float = 15.0):
    """``read()`` once it returns ``expected`` (polled, for what a server's click journal records a moment
    after its answer); the last value read when ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.05)
