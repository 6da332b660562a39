"""What a contact tells us about themselves once ("tell us once"): language, interests, frequency, consent.

The preference page (web/tracking) reads :func:`current_preferences` and stores the contact's answer with
:func:`save_preferences`. Each change lands where the next run reads it:

- language → ``Contact.locale`` (block selection walks its CLDR chain);
- frequency → ``Contact.frequency_cap`` (``FREQUENCIES``: none, at most weekly, at most monthly);
- consent per purpose (``PURPOSES``) → a ``Consent`` row with the source, the client's IP and the wording's
  version (``text_version``), the proof of how it was given;
- interests → ``Interest`` rows: a ticked tag is raised to ``STATED_INTEREST_SCORE`` (never lowered, if clicks
  already made it higher) and starts decaying from now like any score; an unticked tag that was ticked
  is set to 0. A tag counts as ticked while its decayed score is at least half the stated score.

Every save that changes something also writes one ``Event`` (channel ``email``, type ``preferences``) with
the changes as its properties, so the timeline and segments see it.

What the contact chose here outranks an import (``segments.imports.resolve``): the locale they picked
(``Contact.locale_chosen_at``), the tags they ticked or unticked (``Interest.chosen_at``) and a purpose they
withdrew (``Consent.own_choice``) are never set back by a file from the CRM.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from segments.db import utcnow
from segments.interests import decayed_score
from segments.models import CONSENT_PURPOSES, Consent, Contact, Event, Interest

PURPOSES = CONSENT_PURPOSES
FREQUENCIES: dict[str, dict | None] = {
    "none": None,
    "weekly": {"max": 1, "days": 7},
    "monthly": {"max": 1, "days": 30},
}
STATED_INTEREST_SCORE = 10.0
EVENT_TYPE = "preferences"


@dataclass(frozen=True)
class Preferences:
    """One contact's answers: a locale key or None, ticked tags, a FREQUENCIES key, purpose → granted."""

    locale: str | None = None
    interests: frozenset[str] = frozenset()
    frequency: str = "none"
    consents: Mapping[str, bool] = field(default_factory=dict)


def frequency_of(cap: Mapping | None) -> str:
    """The FREQUENCIES key of a stored cap; a cap set elsewhere maps to the nearest stricter choice."""
    if not cap:
        return "none"
    for key, value in FREQUENCIES.items():
        if value == {"max": cap.get("max"), "days": cap.get("days")}:
            return key
    return "monthly" if (cap.get("days") or 0) >= 30 else "weekly"


def current_preferences(session: Session, contact: Contact, *, half_life_days: float, now: datetime | None = None):
    """The contact's answers as the page shows them (ticked tags: decayed score ≥ half the stated score)."""
    now = now or utcnow()
    rows = session.execute(
        select(Interest.tag, Interest.score, Interest.updated_at).where(Interest.contact_id == contact.id)
    ).all()
    ticked = {
        tag
        for tag, score, updated_at in rows
        if decayed_score(score, updated_at, now, half_life_days) >= STATED_INTEREST_SCORE / 2
    }
    consents = dict(
        session.execute(select(Consent.purpose, Consent.granted).where(Consent.contact_id == contact.id)).all()
    )
    return Preferences(
        locale=contact.locale,
        interests=frozenset(ticked),
        frequency=frequency_of(contact.frequency_cap),
        consents={purpose: bool(consents.get(purpose)) for purpose in PURPOSES},
    )


def save_preferences(
    session: Session,
    contact: Contact,
    chosen: Preferences,
    *,
    offered_tags: Collection[str],
    source: str,
    ip: str | None,
    text_version: str,
    half_life_days: float,
    now: datetime | None = None,
) -> dict:
    """Store what changed between the contact's current answers and ``chosen``; return the changes.

    Only tags in ``offered_tags`` are touched (the page's checkboxes). Purposes missing from
    ``chosen.consents`` are left alone. Raises ValueError for an unknown frequency or purpose. Flushes.
    """
    if chosen.frequency not in FREQUENCIES:
        raise ValueError(f"frequency must be one of {', '.join(FREQUENCIES)}, not {chosen.frequency!r}")
    unknown = set(chosen.consents) - set(PURPOSES)
    if unknown:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, not {sorted(unknown)[0]!r}")
    now = now or utcnow()
    before = current_preferences(session, contact, half_life_days=half_life_days, now=now)
    changes: dict = {}
    if chosen.locale and chosen.locale != before.locale:
        contact.locale, contact.locale_chosen_at = chosen.locale, now
        changes["locale"] = chosen.locale
    if chosen.frequency != before.frequency:
        contact.frequency_cap = FREQUENCIES[chosen.frequency]
        changes["frequency"] = chosen.frequency
    consents = {
        purpose: granted for purpose, granted in chosen.consents.items() if before.consents.get(purpose) != granted
    }
    for purpose, granted in consents.items():
        session.merge(
            Consent(
                contact_id=contact.id,
                purpose=purpose,
                granted=granted,
                source=source,
                ip=ip,
                text_version=text_version,
                recorded_at=now,
                own_choice=True,
            )
        )
    if consents:
        changes["consents"] = consents
    offered = set(offered_tags)
    stated = sorted((set(chosen.interests) & offered) - before.interests)
    dropped = sorted((before.interests & offered) - set(chosen.interests))
    _set_interests(session, contact.id, stated, dropped, half_life_days=half_life_days, now=now)
    if stated:
        changes["interests_added"] = stated
    if dropped:
        changes["interests_removed"] = dropped
    if changes:
        contact.updated_at = now
        session.add(
            Event(
                contact_id=contact.id,
                channel="email",
                type=EVENT_TYPE,
                occurred_at=now,
                properties=changes,
                source=source,
                external_id=f"{EVENT_TYPE}:{uuid.uuid4().hex}",
                received_at=now,
            )
        )
    session.flush()
    return changes


def _set_interests(session, contact_id, stated, dropped, *, half_life_days, now) -> None:
    tags = [*stated, *dropped]
    if not tags:
        return
    rows = {
        row.tag: row
        for row in session.scalars(select(Interest).where(Interest.contact_id == contact_id, Interest.tag.in_(tags)))
    }
    for tag in tags:
        row = rows.get(tag)
        if tag in stated:
            current = decayed_score(row.score, row.updated_at, now, half_life_days) if row else 0.0
            score = max(current, STATED_INTEREST_SCORE)
        else:
            score = 0.0
        if row is None:
            session.add(Interest(contact_id=contact_id, tag=tag, score=score, updated_at=now, chosen_at=now))
        else:
            row.score, row.updated_at, row.chosen_at = score, now, now
