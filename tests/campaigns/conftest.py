"""Campaign fixtures: a pack, an audience and a campaign, each in one line."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
from collections.abc import Iterable

import pytest

from campaigns.definition import parse_definition
from campaigns.executors import WorkerConfig
from campaigns.runs import create_campaign
from content.packs import import_pack
from segments.db import utcnow
from segments.models import Consent, Contact, Interest
from tests.packs import block, write_pack

SECRET = "s" * 40
BASE_URL = "https://patron.example.com"

# Enough blocks that two runs never need to repeat one, in two locales.
TOPICS = {"pizza": ["pizza-night", "pizza-two", "pizza-slice"], "pasta": ["pasta-kit", "pasta-fresh", "pasta-bake"]}


def pack_blocks() -> list[dict]:
    blocks = []
    for locale in ("en", "es"):
        for topic, keys in TOPICS.items():
            for key in keys:
                blocks.append(block(key, locale, interests={topic: 1.0}, slots=("hero", "offer")))
        blocks.append(block("this-week", locale, interests={"news": 0.1}, slots=("hero",), default=True))
        blocks.append(block("card", locale, interests={"news": 0.1}, slots=("offer",), default=True))
    return blocks


@pytest.fixture
def pack(session, tmp_path):
    """The test pack, imported."""
    report = import_pack(session, write_pack(tmp_path / "pack", pack_blocks()))
    session.commit()
    assert not report.problems
    return report


def add_contacts(session, people: Iterable[dict], *, tracking: bool = True) -> list[Contact]:
    """Contacts with interests and marketing consent from short dicts: email, first_name, locale, interests.

    Each also grants ``tracking`` (an open pixel and tracked links) unless ``tracking`` is False.
    """
    contacts = []
    for person in people:
        interests = person.pop("interests", {})
        contact = Contact(**{"status": "active", **person})
        session.add(contact)
        session.flush()
        for tag, score in interests.items():
            session.add(Interest(contact_id=contact.id, tag=tag, score=score, updated_at=utcnow()))
        session.add(Consent(contact_id=contact.id, purpose="marketing", granted=True, source="test"))
        if tracking:
            session.add(Consent(contact_id=contact.id, purpose="tracking", granted=True, source="test"))
        contacts.append(contact)
    session.commit()
    return contacts


# The parts of a campaign file every test shares: everyone with marketing consent, the test pack's layout.
CAMPAIGN = {
    "name": "Weekly",
    "rules": {"consent": "marketing", "op": "eq", "value": True},
    "layout": "mail",
    "from": "Corner Shop <news@shop.example.com>",
}


def add_campaign(session, **overrides):
    definition = {
        **CAMPAIGN,
        "reply_to": "help@shop.example.com",
        "subject": {
            "en": "{{ contact.first_name | fallback('Hello') }}, this week",
            "es": "{{ contact.first_name | fallback('Hola') }}, esta semana",
        },
        "preheader": "Fresh picks",
    }
    definition.update(overrides)
    campaign = create_campaign(session, parse_definition(definition))
    session.commit()
    return campaign


def worker_config(engine, tmp_path, delivery_url: str, workers: int = 1) -> WorkerConfig:
    return WorkerConfig(
        database_url=engine.url.render_as_string(hide_password=False),
        delivery_url=delivery_url,
        secret_key=SECRET,
        base_url=BASE_URL,
        instance_path=str(tmp_path / "instance"),
        half_life_days=30.0,
        workers=workers,
    )


def patron_environment(engine, tmp_path, delivery_url: str) -> dict[str, str]:
    """The environment a ``patron`` process needs to send through ``delivery_url`` on the test database."""
    return {
        **os.environ,
        "PATRON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PATRON_INSTANCE_PATH": str(tmp_path / "instance"),
        "PATRON_DELIVERY_URL": delivery_url,
        "PATRON_SECRET_KEY": SECRET,
    }


def start_send(env: dict[str, str], campaign_id: int, *options: str) -> subprocess.Popen:
    """``patron campaigns send ID --wait [options]`` in a process of its own, stderr kept for messages."""
    return subprocess.Popen(
        [sys.executable, "-m", "web.cli", "campaigns", "send", str(campaign_id), "--wait", *options],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def parts(message) -> tuple[str, str]:
    """(text, html) of a parsed message."""
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()
