"""The demo's emails, as SpamAssassin scores them: nothing about how they are built counts against them.

SpamAssassin (Debian's ``spamassassin`` package) runs offline (``--local``: no DNS blocklists, Razor
or Pyzor) with Bayes off, so the score is what the message itself earns: its structure, HTML, headers
and wording. The test skips when spamassassin is not installed, except under ``CI=true``, where
``.ci/run`` installs it and a skip would hide a failure.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from delivery.message import Address, MessageTemplate

# Rules that fire on any newsletter Patron could send, worth nothing, and saying nothing about its build.
INFORMATIONAL = {
    "HTML_MESSAGE": "the message has an HTML part",
    "NO_RECEIVED": "it comes straight from the outbox: no server has added a Received header yet",
    "NO_RELAYS": "the same: it was not relayed",
}
PER_LANGUAGE = 6  # messages scored in each language: SpamAssassin takes about 0.2 s for each, after 1.5 s to start


@pytest.fixture(autouse=True)
def _public_base_url(monkeypatch):
    """Links as a deployment writes them: the demo's default base URL is the development server's."""
    monkeypatch.setenv("PATRON_BASE_URL", "https://corner-shop.example.com")


@pytest.fixture(scope="module")
def spamassassin() -> str:
    path = shutil.which("spamassassin")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but spamassassin is not installed: .ci/run installs Debian's package")
        pytest.skip("spamassassin is not installed (apt-get install spamassassin)")
    return path


def score(spamassassin: str, messages: list[bytes], tmp_path: Path) -> list[tuple[str, float, list[str]]]:
    """(To, score, the rules that fired) for each message, scored in one offline SpamAssassin run."""
    prefs = tmp_path / "user_prefs"
    prefs.write_text("use_bayes 0\nbayes_auto_learn 0\n")
    inbox = mailbox.mbox(tmp_path / "in.mbox")
    for message in messages:
        inbox.add(message)
    inbox.flush()
    result = subprocess.run(
        [spamassassin, "--local", "--nocreate-prefs", "--prefspath", str(prefs), "--mbox", str(tmp_path / "in.mbox")],
        capture_output=True,
        timeout=120,
        env=os.environ | {"HOME": str(tmp_path)},  # whatever it would keep per user stays in the test's folder
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    (tmp_path / "out.mbox").write_bytes(result.stdout)
    scores = []
    for scored in mailbox.mbox(tmp_path / "out.mbox", factory=None, create=False):
        status = re.sub(r",\s+", ",", " ".join(scored["X-Spam-Status"].split()))  # unfolded
        found = re.search(r"score=(-?[\d.]+) required=\S+ tests=(\S+)", status)
        assert found, status
        rules = [] if found.group(2) == "none" else found.group(2).split(",")
        scores.append((scored["To"], float(found.group(1)), rules))
    assert len(scores) == len(messages)
    return scores


def sample(outbox: Path) -> list[bytes]:
    """The first few messages in each language of the outbox (Content-Language), in file name order."""
    by_language: dict[bytes, list[bytes]] = defaultdict(list)
    for path in sorted(outbox.iterdir()):
        message = path.read_bytes()
        language = re.search(rb"^Content-Language: ([^\r]+)", message, re.M).group(1)
        if len(by_language[language]) < PER_LANGUAGE:
            by_language[language].append(message)
    return [message for messages in by_language.values() for message in messages]


def test_the_demo_emails_score_nothing_with_spamassassin(spamassassin, runner, app, tmp_path):
    result = runner.invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    messages = sample(Path(app.instance_path) / "outbox" / "new")
    languages = {str(email.message_from_bytes(m, policy=email.policy.default)["Content-Language"]) for m in messages}
    assert {"en", "es"} <= languages

    for to, points, rules in score(spamassassin, messages, tmp_path):
        assert points <= 0, f"the email to {to} scores {points}: {rules}"
        assert set(rules) <= set(INFORMATIONAL), f"the email to {to} fires {sorted(set(rules) - set(INFORMATIONAL))}"


def test_a_hidden_preheader_is_what_spamassassin_flags(spamassassin, tmp_path):
    """The check above can fail: the demo's old preheader, text in the background's colour in a 1px
    font, fires HTML_FONT_LOW_CONTRAST."""
    template = MessageTemplate(
        sender=Address("news@corner-shop.example.com", "Corner Shop"),
        reply_to=None,
        feedback_id="1:1:campaign:patron",
        unsubscribe_mailto="",
    )
    hidden = (
        '<html><body style="background-color:#f4efe6" bgcolor="#f4efe6">'
        '<span style="display:none; max-height:0; overflow:hidden; font-size:1px; line-height:1px; '
        'color:#f4efe6; opacity:0">Picked for you: what is new in the kitchen this week.</span>'
        "<p>Hi John, here is what is cooking at Corner Shop this week.</p></body></html>"
    )
    message = template.build(
        to=Address("john@example.org", "John"),
        subject="John, this week at Corner Shop",
        html=hidden,
        text="Hi John, here is what is cooking at Corner Shop this week.\n",
        message_id="<0123456789abcdef@corner-shop.example.com>",
        language="en",
        unsubscribe_url="https://corner-shop.example.com/u/1",
    )
    ((_, points, rules),) = score(spamassassin, [message], tmp_path)
    assert "HTML_FONT_LOW_CONTRAST" in rules and points > 0
