"""Machine detection: real user agents and addresses, each with the reason expected (None: a person)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.machine import PREFETCH_SECONDS, machine_reason
from delivery.models import MACHINE_REASONS
from delivery.responses import Client

SENT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
LATER = SENT + timedelta(hours=2)

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
OUTLOOK = "Mozilla/4.0 (compatible; ms-office; MSOffice 16) Microsoft Outlook 16.0.17328; Pro"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"

CASES = [
    # (kind, user agent, ip, seconds after sending, expected)
    ("open", IPHONE, "203.0.113.9", 7200, None),
    ("open", CHROME, "198.51.100.4", 7200, None),
    ("open", OUTLOOK, "198.51.100.4", 7200, None),
    ("open", GMAIL_PROXY, "66.249.84.1", 7200, None),  # Gmail fetches images when the reader opens the message
    ("click", IPHONE, None, 7200, None),
    ("click", None, None, 7200, None),
    ("open", "Mozilla/5.0", "17.58.101.2", 7200, "apple_mpp"),
    ("open", "Mozilla/5.0", "203.0.113.9", 7200, "apple_mpp"),
    ("open", IPHONE, "17.122.1.1", 7200, "apple_mpp"),
    ("open", IPHONE, "::ffff:17.1.2.3", 7200, "apple_mpp"),
    ("click", IPHONE, "17.122.1.1", 7200, None),  # the proxy loads images, never follows links
    ("click", "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))", "64.235.144.1", 7200, "scanner"),
    ("click", "Mozilla/5.0 (compatible; Proofpoint URL Defense)", None, 7200, "scanner"),
    ("click", "Mimecast-URL-Protect/1.0", None, 7200, "scanner"),
    (
        "click",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) BingPreview/1.0b",
        None,
        7200,
        "scanner",
    ),
    ("open", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", None, 7200, "bot"),
    ("click", "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", None, 7200, "bot"),
    ("click", "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", None, 7200, "bot"),
    ("click", IPHONE, None, 3, "prefetch"),
    ("open", CHROME, None, 0, "prefetch"),
    ("open", CHROME, None, PREFETCH_SECONDS, None),
    ("open", CHROME, "not an address", 7200, None),
]


@pytest.mark.parametrize(("kind", "agent", "ip", "after", "expected"), CASES)
def test_machine_reason(kind, agent, ip, after, expected):
    now = SENT + timedelta(seconds=after)
    assert machine_reason(kind, Client(user_agent=agent, ip=ip), SENT, now) == expected


def test_unknown_sending_time_is_never_prefetch():
    assert machine_reason("click", Client(user_agent=CHROME), None, SENT) is None


@given(agent=st.text(max_size=3000), ip=st.text(max_size=60), seconds=st.floats(-1e6, 1e6))
def test_any_input_gives_a_known_reason_or_none(agent, ip, seconds):
    """Hostile headers never raise: the answer is None or one of the reasons the schema knows."""
    for kind in ("open", "click"):
        reason = machine_reason(kind, Client(user_agent=agent, ip=ip), SENT, SENT + timedelta(seconds=seconds))
        assert reason is None or reason in MACHINE_REASONS
