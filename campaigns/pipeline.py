"""Assembly: for each claimed recipient, select blocks, render, build the message, send it.

An ``Assembly`` is one worker's view of one run: the run's frozen layout and
block versions, compiled on first use (premailer once per version), a
``Selector`` built once, and the message headers encoded once. Per recipient
it does only what differs: choose blocks, render templates, build bytes, send.
A recipient whose email cannot be rendered or is refused fails alone.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns.models import Campaign, Run
from content.models import Block, BlockVersion, LayoutVersion, Pack
from content.rendering import (
    Budget,
    CompiledPart,
    Inliner,
    RenderError,
    compile_part,
    compile_text,
    render,
    render_part,
)
from content.selection import Candidate, Choice, Recipient, Selector, SlotSpec, locale_chain, normalize_locale
from delivery import ledger
from delivery.message import Address, HeaderError, MessageTemplate, new_message_id, sending_domain
from delivery.models import Delivery, ShownBlock
from delivery.tracking import LinkSigner, register_links
from delivery.transports.base import DeliveryError, PermanentError, TransientError, deliver
from segments.db import utcnow
from segments.interests import decayed_score
from segments.models import Consent, Contact, Interest, Suppression

CLAIM_SIZE = 100  # rows claimed (and at risk of "unknown" after a crash) at once per worker
PAUSE_AFTER_TRANSIENT = 5  # consecutive temporary failures that pause the run: the server is unwell
PROFILING = "profiling"
STAGES = ("segment", "select", "render", "build", "send", "db")


class TransportDown(Exception):
    """The transport cannot send anything: the run pauses until someone fixes it."""

    def __init__(self, outcome):
        super().__init__(outcome.reason)
        self.outcome = outcome


@dataclass
class Profile:
    """One claimed recipient as the pipeline needs them."""

    contact: dict[str, Any]
    recipient: Recipient
    skip: str | None = None


@dataclass
class Rendered:
    """One recipient's finished email before it becomes bytes."""

    subject: str
    html: str
    text: str
    language: str
    choices: dict[str, Choice]
    unsubscribe_url: str


@dataclass
class Stats:
    """Seconds per stage, messages per outcome and CSS inlinings, summed over batches."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    premailer_calls: int = 0

    def add(self, other: Stats) -> None:
        self.premailer_calls += other.premailer_calls
        for stage, value in other.seconds.items():
            self.seconds[stage] += value
        for status, value in other.outcomes.items():
            self.outcomes[status] += value


class Assembly:
    """Everything one worker needs to send one run, built once per run."""

    def __init__(
        self,
        session: Session,
        run: Run,
        *,
        signer: LinkSigner,
        inliner: Inliner,
        half_life_days: float,
        sign: Callable[[bytes], bytes] | None = None,
        now: datetime | None = None,
    ):
        run_id = self.run_id = run.id
        self.campaign_id = run.campaign_id
        self.definition = session.get(Campaign, run.campaign_id).definition
        self.campaign = {"name": self.definition["name"]}
        self.signer, self.inliner, self.half_life_days, self.sign = signer, inliner, half_life_days, sign
        self.now = now or utcnow()
        layout = session.get(LayoutVersion, run.content["layout_version"])
        pack = session.get(Pack, run.content["pack"])
        self.default_locale = pack.default_locale
        self.strings_by_locale = {normalize_locale(k): v for k, v in (pack.strings or {}).items()}
        self.slots = list(layout.slots)
        self.css = layout.css
        self._session = session
        self._layout_version = layout
        self._layout: CompiledPart | None = None
        self._blocks: dict[int, CompiledPart] = {}
        self._strings: dict[tuple[str, ...], dict[str, str]] = {}
        versions = session.execute(
            select(BlockVersion, Block.key, Block.locale)
            .join(Block, Block.id == BlockVersion.block_id)
            .where(BlockVersion.id.in_(run.content["blocks"]))
        ).all()
        self._versions = {version.id: version for version, _, _ in versions}
        self.candidates = [_candidate(version, key, locale) for version, key, locale in versions]
        filters = self.definition.get("slots") or {}
        self.selector = Selector(
            [_slot_spec(name, filters.get(name) or {}) for name in self.slots],
            self.candidates,
            now=self.now,
            default_locale=self.default_locale,
        )
        self.subjects = {locale: compile_text(source) for locale, source in self.definition["subject"].items()}
        self.preheaders = {
            locale: compile_text(source) for locale, source in (self.definition.get("preheader") or {}).items()
        }
        sender = Address(**self.definition["sender"])
        reply_to = Address(**self.definition["reply_to"]) if self.definition.get("reply_to") else None
        self.domain = sending_domain(sender)
        self.sender = sender.email
        self.template = MessageTemplate(
            sender=sender,
            reply_to=reply_to,
            feedback_id=f"{run_id}:{self.campaign_id}:campaign:patron",
            unsubscribe_mailto=f"mailto:unsubscribe@{self.domain}?subject=unsubscribe",
        )
        session.commit()  # hold no read snapshot while the run is sent

    # -- compiled content, on first use -------------------------------------------------

    def layout(self) -> CompiledPart:
        if self._layout is None:
            version = self._layout_version
            inlined = self.inliner.inline(("layout", version.id), version.html, self.css, fragment=False)
            self._layout = compile_part(inlined, version.text, fragment=False, register_links=self._register)
        return self._layout

    def block(self, version_id: int) -> CompiledPart:
        part = self._blocks.get(version_id)
        if part is None:
            version = self._versions[version_id]
            inlined = self.inliner.inline(("block", version_id), version.html, self.css, fragment=True)
            part = compile_part(inlined, version.text, fragment=True, register_links=self._register)
            self._blocks[version_id] = part
        return part

    def _register(self, urls: Sequence[str]) -> Sequence[int]:
        # The assembly's session belongs to this worker: end any read snapshot first
        # (SQLite cannot turn an outdated read into a write), and commit at once.
        self._session.commit()
        ids = register_links(self._session, urls)
        self._session.commit()
        return ids

    def strings(self, chain: tuple[str, ...]) -> dict[str, str]:
        """The pack's phrases for a locale chain: the first locale that has each phrase."""
        strings = self._strings.get(chain)
        if strings is None:
            strings = {}
            for locale in reversed(chain):
                strings.update(self.strings_by_locale.get(locale) or {})
            self._strings[chain] = strings
        return strings

    # -- one recipient -------------------------------------------------------------------

    def choose(self, profile: Profile) -> dict[str, Choice]:
        return self.selector.choose(profile.recipient)

    def render(self, delivery_id: int, profile: Profile, choices: dict[str, Choice]) -> Rendered:
        """The recipient's subject, HTML and text; RenderError if any template fails."""
        chain = locale_chain(profile.recipient.locale, self.default_locale)
        unsubscribe_url = self.signer.unsubscribe_url(delivery_id)
        context = {
            "contact": profile.contact,
            "strings": self.strings(chain),
            "campaign": self.campaign,
            "unsubscribe_url": unsubscribe_url,
            "link": partial(self.signer.click_url, delivery_id),
            "track_url": partial(self._track_url, delivery_id),
        }
        budget = Budget()
        html_slots: dict[str, Markup] = {}
        text_slots: dict[str, str] = {}
        locales: list[str] = []
        for slot, choice in choices.items():
            if choice.candidate is None:
                html_slots[slot], text_slots[slot] = Markup(""), ""
                continue
            html_slots[slot], text = render_part(self.block(choice.candidate.version_id), context, budget)
            text_slots[slot] = text.strip()
            if choice.locale not in locales:
                locales.append(choice.locale)
        context["subject"] = subject = _one_line(render(_for_chain(self.subjects, chain), context, budget))
        preheader = _for_chain(self.preheaders, chain)
        context["preheader"] = _one_line(render(preheader, context, budget)) if preheader else ""
        context["slots"], context["text_slots"] = html_slots, text_slots
        html, text = render_part(self.layout(), context, budget)
        html = _with_pixel(html, self.signer.open_url(delivery_id))
        language = ", ".join(locales) or chain[0]
        return Rendered(subject, html, text, language, choices, unsubscribe_url)

    def build(self, delivery_id: int, profile: Profile, rendered: Rendered) -> tuple[bytes, str]:
        """The MIME bytes (DKIM-signed when a key is set) and their Message-ID."""
        contact = profile.contact
        name = " ".join(part for part in (contact["first_name"], contact["last_name"]) if part) or None
        message_id = new_message_id(self.domain)
        message = self.template.build(
            to=Address(contact["email"], name),
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            message_id=message_id,
            language=rendered.language,
            unsubscribe_url=rendered.unsubscribe_url,
        )
        return (self.sign(message) if self.sign else message), message_id

    def _track_url(self, delivery_id: int, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            return url
        (link_id,) = self._register([url])
        return self.signer.click_url(delivery_id, link_id)


def send_batch(
    assembly: Assembly,
    session_factory,
    transport,
    first: int,
    last: int,
    *,
    parent_pid: int | None = None,
    sleep=time.sleep,
) -> Stats:
    """Claim, assemble and send the run's pending rows between ledger ids ``first`` and ``last``."""
    stats = Stats()
    seconds = stats.seconds
    transient_streak = 0
    while True:
        started = time.perf_counter()
        with session_factory() as session:
            run = session.get(Run, assembly.run_id)
            if run.state != "sending":
                break
            now = utcnow()
            claimed = ledger.claim(session, assembly.run_id, first, last, CLAIM_SIZE, now)
            session.commit()
            if not claimed:
                break
            profiles = load_profiles(session, [contact for _, contact in claimed], assembly, now)
        seconds["db"] += time.perf_counter() - started
        outcomes: list[ledger.Outcome] = []
        orphaned = False
        for delivery_id, contact_id in claimed:
            if parent_pid is not None and os.getppid() != parent_pid:
                orphaned = True  # whoever ran us is gone: stop; the rest become "unknown"
                break
            try:
                outcome = _one(assembly, transport, delivery_id, contact_id, profiles[contact_id], seconds, sleep)
            except TransportDown as down:
                outcome, transient_streak = down.outcome, PAUSE_AFTER_TRANSIENT - 1
            transient_streak = transient_streak + 1 if outcome.status == "pending" else 0
            outcomes.append(outcome)
            stats.outcomes[outcome.status] += 1
            if transient_streak >= PAUSE_AFTER_TRANSIENT:
                break
        started = time.perf_counter()
        with session_factory() as session:
            ledger.record(session, outcomes)
            if transient_streak >= PAUSE_AFTER_TRANSIENT:
                # The server keeps refusing for now: hand back what was not tried and pause the run.
                tried = {o.delivery_id for o in outcomes}
                ledger.record(
                    session,
                    [ledger.Outcome(d, "pending", "not tried: run paused") for d, _ in claimed if d not in tried],
                )
                _pause(session, assembly.run_id, outcomes[-1].reason)
            session.execute(
                Run.__table__.update().where(Run.__table__.c.id == assembly.run_id).values(heartbeat_at=utcnow())
            )
            session.commit()
        seconds["db"] += time.perf_counter() - started
        if orphaned or transient_streak >= PAUSE_AFTER_TRANSIENT:
            break
    return stats


def pause_run(session_factory, run_id: int, reason: str) -> None:
    """Pause a run that cannot go on for now, saying why (shown by ``patron campaigns status``)."""
    with session_factory() as session:
        _pause(session, run_id, reason)
        session.commit()


def _pause(session: Session, run_id: int, reason: str) -> None:
    run = session.get(Run, run_id)
    if run.state == "sending":
        run.state, run.note = "paused", f"paused: {reason}"


def _one(assembly, transport, delivery_id, contact_id, profile, seconds, sleep) -> ledger.Outcome:
    """Assemble and send one recipient; the ledger outcome, whatever happens."""
    if profile is None or profile.skip:
        if profile is None:
            return ledger.Outcome(delivery_id, "skipped", "contact no longer exists")
        return ledger.Outcome(delivery_id, "skipped", profile.skip, email=profile.contact["email"])
    email = profile.contact["email"]
    try:
        t0 = time.perf_counter()
        choices = assembly.choose(profile)
        t1 = time.perf_counter()
        rendered = assembly.render(delivery_id, profile, choices)
        t2 = time.perf_counter()
        message, message_id = assembly.build(delivery_id, profile, rendered)
        t3 = time.perf_counter()
        seconds["select"] += t1 - t0
        seconds["render"] += t2 - t1
        seconds["build"] += t3 - t2
    except (RenderError, HeaderError) as exc:
        return ledger.Outcome(delivery_id, "failed", f"{type(exc).__name__}: {exc}", email=email)
    t3 = time.perf_counter()
    try:
        deliver(transport, assembly.sender, email, message, sleep=sleep)
    except PermanentError as exc:
        return ledger.Outcome(delivery_id, "failed", f"refused: {exc}", email=email)
    except TransientError as exc:
        return ledger.Outcome(delivery_id, "pending", f"temporary failure, will retry: {exc}", email=email)
    except DeliveryError as exc:
        # The transport itself is unusable (a rejected login, a TLS failure, an unwritable outbox).
        raise TransportDown(ledger.Outcome(delivery_id, "pending", f"transport unusable: {exc}", email=email)) from exc
    finally:
        seconds["send"] += time.perf_counter() - t3
    chosen = [c.candidate for c in rendered.choices.values() if c.candidate is not None]
    return ledger.Outcome(
        delivery_id,
        "sent",
        email=email,
        message_id=message_id,
        locale=rendered.language,
        blocks=[c.version_id for c in chosen],
        block_ids=[c.block_id for c in chosen],
        contact_id=contact_id,
        sent_at=utcnow(),
    )


def load_profiles(session: Session, contact_ids: list[int], assembly: Assembly, now: datetime) -> dict[int, Profile]:
    """The claimed contacts with interests, consent and shown blocks, in a handful of queries."""
    interests: dict[int, dict[str, float]] = defaultdict(dict)
    for contact_id, tag, score, updated_at in session.execute(
        select(Interest.contact_id, Interest.tag, Interest.score, Interest.updated_at).where(
            Interest.contact_id.in_(contact_ids)
        )
    ):
        interests[contact_id][tag] = decayed_score(score, updated_at, now, assembly.half_life_days)
    consented = set(
        session.scalars(
            select(Consent.contact_id).where(
                Consent.contact_id.in_(contact_ids), Consent.purpose == PROFILING, Consent.granted.is_(True)
            )
        )
    )
    seen: dict[int, set[int]] = defaultdict(set)
    for contact_id, block_id in session.execute(
        select(ShownBlock.contact_id, ShownBlock.block_id).where(ShownBlock.contact_id.in_(contact_ids))
    ):
        seen[contact_id].add(block_id)
    rows = session.execute(
        select(
            Contact.id,
            Contact.email,
            Contact.first_name,
            Contact.last_name,
            Contact.locale,
            Contact.timezone,
            Contact.attributes,
            Contact.status,
            Suppression.reason,
        )
        .outerjoin(Suppression, Suppression.email == Contact.email)
        .where(Contact.id.in_(contact_ids))
    ).all()
    capped = _capped(session, contact_ids, assembly.definition.get("frequency_cap"), now)
    profiles = {}
    for contact_id, email, first, last, locale, timezone, attributes, status, suppressed in rows:
        skip = (
            "no email address"
            if not email
            else f"contact status: {status}"
            if status != "active"
            else f"suppressed: {suppressed}"
            if suppressed
            else capped.get(contact_id)
        )
        contact = {
            "email": email,
            "first_name": first,
            "last_name": last,
            "locale": locale,
            "timezone": timezone,
            "attributes": attributes or {},
        }
        recipient = Recipient(
            locale=locale,
            interests=interests.get(contact_id, {}),
            seen=frozenset(seen.get(contact_id, ())),
            profiling_consent=contact_id in consented,
        )
        profiles[contact_id] = Profile(contact, recipient, skip)
    return profiles


def _capped(session: Session, contact_ids: list[int], cap: dict | None, now: datetime) -> dict[int, str]:
    """The contacts a frequency cap holds back now (another run may have sent since planning)."""
    if not cap:
        return {}
    limit = ledger.FrequencyCap(cap["max"], cap["days"])
    rows = session.execute(
        select(Delivery.contact_id)
        .where(Delivery.contact_id.in_(contact_ids), Delivery.status == "sent", Delivery.sent_at >= limit.since(now))
        .group_by(Delivery.contact_id)
        .having(func.count() >= limit.limit)
    )
    return {contact_id: limit.reason() for (contact_id,) in rows}


def _candidate(version: BlockVersion, key: str, locale: str) -> Candidate:
    return Candidate(
        version_id=version.id,
        block_id=version.block_id,
        key=key,
        locale=normalize_locale(locale),
        slots=frozenset(version.slots),
        interests=tuple(sorted(version.interests.items())),
        priority=version.priority,
        valid_from=version.valid_from,
        valid_until=version.valid_until,
        tags=frozenset(version.tags or ()),
        sensitive=version.sensitive,
        is_default=version.is_default,
        version=version.version,
    )


def _slot_spec(name: str, options: dict) -> SlotSpec:
    return SlotSpec(
        name=name,
        tags=frozenset(options.get("tags") or ()),
        exclude_tags=frozenset(options.get("exclude_tags") or ()),
        interests=frozenset(options.get("interests") or ()),
        blocks=frozenset(options.get("blocks") or ()),
    )


def _for_chain(templates: dict, chain: tuple[str, ...]):
    for locale in chain:
        if locale in templates:
            return templates[locale]
    return templates.get("*") or next(iter(templates.values()), None)


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _with_pixel(html: str, url: str) -> str:
    pixel = f'<img src="{url}" width="1" height="1" alt="" style="display:block;border:0">'
    end = html.rfind("</body>")
    return html[:end] + pixel + html[end:] if end >= 0 else html + pixel
