"""Which opens and clicks a machine made: privacy proxies, link scanners, bots and prefetchers.

A machine-made response is still recorded (reports count it apart), but it never teaches a profile.
The rules, first match wins (see docs/responses.md):

1. ``apple_mpp`` (opens only): Apple Mail Privacy Protection loads every image through Apple's proxy
   as soon as a message reaches the device, whether or not anyone reads it. The proxy sends the bare
   user agent ``Mozilla/5.0`` and connects from Apple's own 17.0.0.0/8 network (ARIN allocation
   NET-17-0-0-0-1, "Apple Inc."; Apple, "Mail Privacy Protection", support.apple.com/HT212495).
2. ``scanner``: security gateways that fetch every link and image before the reader sees them, by a
   signature in the user agent (``SCANNER_SIGNATURES``: Barracuda, Proofpoint, Mimecast, Microsoft
   Defender Safe Links, Cisco, Trend Micro, Symantec, Forcepoint).
3. ``bot``: what ua-parser's kept regexes call a spider (device family ``Spider``): crawlers, preview
   fetchers, monitoring agents.
4. ``prefetch``: an open or a click within ``PREFETCH_SECONDS`` of the message being sent: no person
   reads an email and clicks that fast; servers that pre-load content do.

No user agent at all counts as human: some mail clients send none, and the signed token already
proves the request came from the message.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from functools import lru_cache

from ua_parser import parse_device

PREFETCH_SECONDS = 10.0
PREFETCH = timedelta(seconds=PREFETCH_SECONDS)
APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")
APPLE_PROXY_AGENT = "Mozilla/5.0"
# Lower-case substrings of the user agents security gateways fetch with. A signature must be specific
# to the scanner: "Microsoft Office" or "Outlook" would catch people clicking in Outlook.
SCANNER_SIGNATURES = (
    "barracuda",
    "proofpoint",
    "mimecast",
    "safelinks",
    "bingpreview",  # Microsoft Defender for Office 365 detonates links as BingPreview
    "ironport",  # Cisco Secure Email
    "trendmicro",
    "symantec",
    "messagelabs",  # Symantec's email security cloud
    "forcepoint",
)
MAX_USER_AGENT = 1000  # longer user agents are judged by their first characters only


def machine_reason(kind: str, client, sent_at: datetime | None, now: datetime) -> str | None:
    """Why an ``open`` or ``click`` (``kind``) from ``client`` (user_agent, ip) looks machine-made, or None.

    ``sent_at`` is when the message went out (None if unknown), ``now`` when the response came; both
    timezone-aware. Returns one of ``delivery.models.MACHINE_REASONS``.
    """
    reason = client_reason(kind, client)
    if reason is None and sent_at is not None and is_prefetch(sent_at, now):
        return "prefetch"
    return reason


def client_reason(kind: str, client) -> str | None:
    """The reason the request alone gives (rules 1 to 3), without the time since sending."""
    agent = (client.user_agent or "")[:MAX_USER_AGENT].strip() if client is not None else ""
    if kind == "open" and (agent == APPLE_PROXY_AGENT or _apple(client.ip if client is not None else None)):
        return "apple_mpp"
    return _agent_reason(agent) if agent else None


def is_prefetch(sent_at: datetime, now: datetime) -> bool:
    """Whether ``now`` is within ``PREFETCH_SECONDS`` after ``sent_at`` (rule 4)."""
    return timedelta(0) <= now - sent_at < PREFETCH


@lru_cache(maxsize=4096)
def _agent_reason(agent: str) -> str | None:
    """The reason a user agent alone gives (cached: a campaign's clicks come from a few hundred agents)."""
    lowered = agent.lower()
    if any(signature in lowered for signature in SCANNER_SIGNATURES):
        return "scanner"
    device = parse_device(agent)
    if device is not None and device.family == "Spider":
        return "bot"
    return None


def _apple(ip: str | None) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address in APPLE_NETWORK
