"""The second half of ``patron demo``: customers answer the email, through Patron's real HTTP endpoints.

The demo serves the app on a loopback port (werkzeug's threaded server: real HTTP, one process) and, for a
fixed sample of the messages the run left in the outbox, does what their readers would: opens them (the pixel),
clicks a block's link, buys something (the conversion API), unsubscribes (the RFC 8058 one-click POST), or bounces
(a Postfix delivery status notification from ``examples/bounces/``, posted to the bounce webhook). Then it
prints the run's report and one customer's interests before and after: the loop closed.

It uses a temporary API key (revoked at the end) and waits out the prefetch window first, so that its clicks are
not taken for a mail scanner's (see ``delivery.machine``). Nothing here is faked below the HTTP request.
"""

from __future__ import annotations

import email
import email.policy
import http.client
import json
import logging
import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import click
from flask import Flask
from lxml import html as lxml_html
from sqlalchemy import func, select
from werkzeug.serving import make_server

from campaigns.reports import report
from content.models import Block, BlockVersion
from delivery.machine import PREFETCH_SECONDS
from delivery.models import Delivery, Link
from delivery.transports import OutboxTransport, open_transport
from segments.db import utcnow
from segments.interests import decayed_score
from segments.models import PROFILING, TRACKING, Consent, Interest
from web.api.keys import create_key, revoke_key
from web.reports_cli import text_report
from web.tracking import clicks as clicks_journal

SAMPLE = 300
SHOWN_BLOCKS = 8  # blocks in the report's table: the most clicked
HUMAN = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel URL scanner)"
BOUNCE_TEMPLATE = "postfix-user-unknown.eml"


@dataclass
class Message:
    """One sent message of the run as its reader sees it."""

    delivery_id: int
    contact_id: int
    email: str
    message_id: str
    return_path: str
    pixel: str | None
    clicks: list[str]  # tracked links of the blocks, in order
    unsubscribe: str


@dataclass
class Tally:
    """The HTTP answers the simulated readers got, by what they did."""

    answers: dict[str, dict[int, int]] = field(default_factory=dict)

    def add(self, what: str, status: int) -> None:
        by_status = self.answers.setdefault(what, {})
        by_status[status] = by_status.get(status, 0) + 1

    def line(self) -> str:
        return "; ".join(
            f"{what} {sum(by.values())} ({', '.join(f'{n} × {status}' for status, n in sorted(by.items()))})"
            for what, by in self.answers.items()
        )


def simulate_responses(session, app: Flask, examples_dir: Path, campaign_id: int, run_id: int) -> None:
    """Answer a sample of run ``run_id``'s messages through the HTTP endpoints; print the report and what changed."""
    transport = open_transport(app.config["PATRON_DELIVERY_URL"], instance_path=Path(app.instance_path))
    transport.close()
    if not isinstance(transport, OutboxTransport):
        click.echo("\n(Responses are simulated only when the demo sends to the outbox.)")
        return
    messages = _messages(session, transport.path / "new", run_id, app.config["PATRON_BASE_URL"])
    if not messages:
        return
    _block_links(session, messages)
    featured = _featured(session, messages)
    click.echo(
        f"\nResponses: {min(SAMPLE, len(messages))} of the {len(messages):,} readers answer, through the HTTP endpoints"
        " (pixel, click, one-click unsubscribe, conversion and bounce APIs):"
    )
    before = _interests(session, featured.contact_id, app) if featured else []
    _wait_out_prefetch(session, run_id)
    rng = random.Random(run_id)
    tally = Tally()
    name = f"patron demo, run {run_id}"
    _, key = create_key(session, name, ("conversions", "bounces"))
    session.commit()
    try:
        with _serving(app) as http:
            _answer(app, http, key, messages, featured, rng, tally, examples_dir)
    finally:
        clicks_journal.stop(app)  # what is still journalled is recorded before the report
        revoke_key(session, name)
        session.commit()
    click.echo(f"  {tally.line()}")
    session.expire_all()
    click.echo("\n" + text_report(report(session, campaign_id, run_id=run_id), most_clicked=SHOWN_BLOCKS))
    if featured is not None:
        after = _interests(session, featured.contact_id, app)
        block = _block_of(session, featured.clicks[0])
        click.echo(f"\n{featured.email} clicked {block} and bought; their interests (decayed to now):")
        click.echo(f"  before: {_scores(before)}")
        click.echo(f"  after:  {_scores(after)}")
        click.echo("  Their next email picks blocks by these scores.")
    session.rollback()


def _answer(
    app: Flask, http, key: str, messages: list[Message], featured, rng, tally: Tally, examples_dir: Path
) -> None:
    sample = rng.sample(messages, min(SAMPLE, len(messages)))
    others = [m for m in sample if m is not featured]
    bounced, unsubscribed = others[0], others[1]
    readers = [featured, *others[2:]] if featured else others[2:]
    buyers = []
    for number, message in enumerate(readers):
        if message.pixel and (message is featured or rng.random() < 0.45):
            agent = SCANNER if number % 10 == 9 else HUMAN
            tally.add("opens", http.request("GET", message.pixel, agent))
        if message.clicks and (message is featured or rng.random() < 0.12):
            tally.add("clicks", http.request("GET", message.clicks[0], HUMAN))
            if message is featured or rng.random() < 0.25:
                buyers.append(message)
    # The orders come in later, as a shop's do: by then the click journal has recorded the clicks they follow.
    clicks_journal.flush(app)
    for message in buyers:
        order = {"order_id": f"demo-{message.delivery_id}", "value": f"{rng.randint(900, 4900) / 100:.2f}"}
        body = json.dumps({**order, "currency": "EUR", "email": message.email}).encode()
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        tally.add("conversions", http.request("POST", "/api/v1/conversions", HUMAN, body, headers))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = b"List-Unsubscribe=One-Click"
    tally.add("one-click unsubscribes", http.request("POST", unsubscribed.unsubscribe, None, body, form))
    template = (examples_dir / "bounces" / BOUNCE_TEMPLATE).read_text(encoding="utf-8")
    bounce = (
        template.replace("@@VERP@@", bounced.return_path)
        .replace("@@RECIPIENT@@", bounced.email)
        .replace("@@MESSAGE_ID@@", bounced.message_id)
    )
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "message/rfc822"}
    tally.add("bounces", http.request("POST", "/api/v1/bounces", None, bounce.encode(), headers))


def _messages(session, folder: Path, run_id: int, base_url: str) -> list[Message]:
    """The run's sent messages in the outbox, with the tracked URLs as paths on this server."""
    rows = {
        message_id: (delivery_id, contact_id, address)
        for delivery_id, contact_id, address, message_id in session.execute(
            select(Delivery.id, Delivery.contact_id, Delivery.email, Delivery.message_id).where(
                Delivery.run_id == run_id, Delivery.status == "sent"
            )
        )
    }
    session.rollback()
    parser = email.parser.BytesParser(policy=email.policy.default)
    messages = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        with path.open("rb") as fh:
            headers = parser.parse(fh, headersonly=True)
        row = rows.get(str(headers["Message-ID"]).strip())
        if row is None:
            continue
        message = parser.parsebytes(path.read_bytes())
        document = lxml_html.fromstring(message.get_body(("html",)).get_content())
        hrefs = [_path(href, base_url) for href in document.xpath("//a/@href")]
        pixels = [_path(src, base_url) for src in document.xpath("//img/@src")]
        messages.append(
            Message(
                delivery_id=row[0],
                contact_id=row[1],
                email=row[2],
                message_id=str(headers["Message-ID"]).strip(),
                return_path=str(headers["Return-Path"]).strip().strip("<>"),
                pixel=next((p for p in pixels if p and p.startswith("/o/")), None),
                clicks=[h for h in hrefs if h and h.startswith("/r/")],
                unsubscribe=_path(str(headers["List-Unsubscribe"]).split(",")[0].strip().strip("<>"), base_url),
            )
        )
    return messages


def _path(url: str, base_url: str) -> str | None:
    """``url``'s path when it points at this Patron (its base URL), else None."""
    return url[len(base_url) :] if url.startswith(base_url + "/") else None


def _featured(session, messages: list[Message]) -> Message | None:
    """A reader who lets us learn from them (tracking and profiling consent) and got a block link to click."""
    granted: dict[int, set[str]] = {}
    for contact_id, purpose in session.execute(
        select(Consent.contact_id, Consent.purpose).where(
            Consent.purpose.in_((TRACKING, PROFILING)), Consent.granted.is_(True)
        )
    ):
        granted.setdefault(contact_id, set()).add(purpose)
    session.rollback()
    return next((m for m in messages if len(granted.get(m.contact_id, ())) == 2 and m.clicks), None)


def _link_id(path: str) -> int:
    """The link id of a click path ``/r/<delivery>/<link>/<token>``."""
    return int(path.split("/")[3])


def _block_links(session, messages: list[Message]) -> None:
    """Keep in each message's ``clicks`` only the links of its blocks (those whose clicks teach interests)."""
    ids = {_link_id(path) for message in messages for path in message.clicks}
    taught = {
        link_id
        for link_id, weights in session.execute(select(Link.id, Link.interests).where(Link.id.in_(ids)))
        if weights
    }
    session.rollback()
    for message in messages:
        message.clicks = [path for path in message.clicks if _link_id(path) in taught]


def _block_of(session, path: str) -> str:
    """The key of the block a click path's link is in."""
    link_id = _link_id(path)
    key = session.scalar(
        select(Block.key)
        .join(BlockVersion, BlockVersion.block_id == Block.id)
        .join(Link, Link.block_version_id == BlockVersion.id)
        .where(Link.id == link_id)
    )
    session.rollback()
    return f"the block {key}" if key else "a block"


def _interests(session, contact_id: int, app: Flask) -> list[tuple[str, float]]:
    now = utcnow()
    half_life = app.config["PATRON_INTEREST_HALF_LIFE_DAYS"]
    rows = session.execute(
        select(Interest.tag, Interest.score, Interest.updated_at).where(Interest.contact_id == contact_id)
    ).all()
    session.rollback()
    scores = [(tag, decayed_score(score, updated_at, now, half_life)) for tag, score, updated_at in rows]
    return sorted(scores, key=lambda item: (-item[1], item[0]))


def _scores(scores: list[tuple[str, float]]) -> str:
    return ", ".join(f"{tag} {score:.2f}" for tag, score in scores) or "(none)"


def _wait_out_prefetch(session, run_id: int) -> None:
    """Sleep until the run's last message is older than the prefetch window, as a person's answer would be."""
    last = session.scalar(select(func.max(Delivery.sent_at)).where(Delivery.run_id == run_id))
    session.rollback()
    if last is None:
        return
    wait = PREFETCH_SECONDS + 1 - (utcnow() - last).total_seconds()
    if wait > 0:
        click.echo(f"  (waiting {wait:.0f} s: an answer in the first {PREFETCH_SECONDS:g} s looks like a scanner's)")
        time.sleep(wait)


class _Client:
    """Keep-alive HTTP/1.1 requests to the demo's server; never follows redirects (the 302 is the answer)."""

    def __init__(self, host: str, port: int):
        self.connection = http.client.HTTPConnection(host, port, timeout=30)

    def request(self, method: str, path: str, agent: str | None, body: bytes | None = None, headers=None) -> int:
        headers = dict(headers or {})
        if agent:
            headers["User-Agent"] = agent
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        response.read()
        return response.status


@contextmanager
def _serving(app: Flask):
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access line per simulated request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="patron-demo-http", daemon=True)
    thread.start()
    client_ = _Client("127.0.0.1", server.server_port)
    try:
        yield client_
    finally:
        client_.connection.close()
        server.shutdown()
        thread.join()
