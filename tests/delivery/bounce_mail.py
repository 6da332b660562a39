"""Bounce fixtures filled in with a real send's addresses: its VERP envelope, Message-ID and mailto.

The fixtures in ``fixtures/bounces/`` are written in the shapes real servers send, with placeholders
(``@@VERP@@``, ``@@RECIPIENT@@``, ``@@MESSAGE_ID@@``, ``@@MAILTO@@``) for what only a send knows.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from campaigns.executors import execute_run
from campaigns.runs import start_run
from delivery.models import Delivery
from tests.campaigns.conftest import add_campaign, add_contacts, worker_config

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"


@dataclass(frozen=True)
class Sent:
    """One message of a real send, as the server got it."""

    delivery_id: int
    email: str
    verp: str  # MAIL FROM
    message_id: str
    mailto: str  # the address in List-Unsubscribe's mailto

    def fill(self, fixture: str, **changes: str) -> bytes:
        """The fixture's bytes with this message's addresses in place (``changes`` override them)."""
        values = {"VERP": self.verp, "RECIPIENT": self.email, "MESSAGE_ID": self.message_id, "MAILTO": self.mailto}
        values.update(changes)
        text = (FIXTURES / fixture).read_text()
        for name, value in values.items():
            text = text.replace(f"@@{name}@@", value)
        assert "@@" not in text
        return text.encode()


def send_to(session, engine, tmp_path, server, emails: list[str], secret: str | None = None) -> dict[str, Sent]:
    """Send the test campaign to ``emails`` through the real SMTP ``server``; each address's message."""
    add_contacts(session, [{"email": address, "first_name": address.split("@")[0]} for address in emails])
    campaign = add_campaign(session)
    run = start_run(session, campaign.id)
    session.commit()
    config = worker_config(engine, tmp_path, server.url)
    execute_run(dataclasses.replace(config, secret_key=secret) if secret else config, run.id)
    session.expire_all()
    ids = dict(session.execute(select(Delivery.email, Delivery.id).where(Delivery.run_id == run.id)).all())
    sent = {}
    for envelope in server.messages:
        (recipient,) = envelope.rcpt_tos
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        mailto = re.search(r"<mailto:([^?>]+)", str(message["List-Unsubscribe"])).group(1)
        sent[recipient] = Sent(ids[recipient], recipient, envelope.mail_from, str(message["Message-ID"]), mailto)
    return sent
