"""Assembly: for each claimed recipient, select blocks, render, and build the message.

An ``Assembly`` is one worker's view of one run: the run's frozen layout and
block versions, compiled on first use (premailer once per version), a
``Selector`` built once, and the message headers encoded once. Per recipient
it does only what differs: choose blocks, render templates, build bytes.
A recipient whose email cannot be rendered fails alone; ``campaigns.batches``
claims the rows, sends what this builds and records the outcomes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from jinja2 import TemplateError
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.models import Campaign, Run
from content.models import Block, BlockVersion, LayoutVersion, Pack
from content.rendering import (
    Additions,
    Budget,
    CompiledPart,
    Inliner,
    Links,
    RenderError,
    compile_part,
    compile_text,
    render,
    render_context,
    render_part,
    variables,
)
from content.selection import (
    Candidate,
    Choice,
    Recipient,
    Selector,
    SlotSpec,
    locale_chain,
    locale_key,
    locale_tag,
    normalize_locale,
    phrases_by_locale,
    phrases_for,
)
from delivery import ledger
from delivery.message import Address, MessageTemplate, new_message_id, sending_domain
from delivery.models import ShownBlock
from delivery.tracking import LinkSigner, register_links
from segments.db import utcnow
from segments.interests import decayed_score
from segments.models import PROFILING, TRACKING, Consent, Contact, Interest

CLOCK_STEP = timedelta(minutes=1)  # how often a running send re-reads the clock for validity windows
DYNAMIC_LINKS_KEPT = 10_000  # merge-field URLs remembered per run (one per city, say), so memory stays bounded
STAGES = ("segment", "select", "render", "build", "send", "db")
# What Patron adds to every HTML email, as template markup compiled into the layout (see content.rendering.Additions).
# A contact without tracking consent gets no pixel (open_url is empty for them).
OPEN_PIXEL = (
    '{% if open_url %}<img src="{{ open_url }}" width="1" height="1" alt="" style="display:block;border:0">{% endif %}'
)
HIDDEN_PREHEADER = '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">{{ preheader }}</div>'


@dataclass
class Profile:
    """One claimed recipient as the pipeline needs them."""

    contact: dict[str, Any]
    recipient: Recipient
    skip: str | None = None
    tracking: bool = False  # granted tracking consent: an open pixel and tracked links


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
        self.cap = ledger.FrequencyCap.from_definition(self.definition.get("frequency_cap"))
        self.signer, self.inliner, self.half_life_days, self.sign = signer, inliner, half_life_days, sign
        self.now = now or utcnow()
        layout = session.get(LayoutVersion, run.content["layout_version"])
        pack = session.get(Pack, run.content["pack"])
        self.default_locale = pack.default_locale
        self.strings_by_locale = phrases_by_locale(pack.strings)
        self.slots = list(layout.slots)
        self.css = layout.css
        self._session = session
        self._layout_version = layout
        self._layout: CompiledPart | None = None
        self._blocks: dict[int, CompiledPart] = {}
        self._strings: dict[tuple[str, ...], dict[str, str]] = {}
        self._dynamic_links: dict[tuple[str, int | None], int] = {}
        self._link_urls: dict[int, str] = {}  # the templates' own links, for recipients who are not tracked
        self._plain_links = Links(self._link_urls.__getitem__, _plain_url)  # the same for every untracked one
        versions = session.execute(
            select(BlockVersion, Block.key, Block.locale)
            .join(Block, Block.id == BlockVersion.block_id)
            .where(BlockVersion.id.in_(run.content["blocks"]))
        ).all()
        self._versions = {version.id: version for version, _, _ in versions}
        self.candidates = [_candidate(version, key, locale) for version, key, locale in versions]
        filters = self.definition.get("slots") or {}
        self._slot_specs = [_slot_spec(name, filters.get(name) or {}) for name in self.slots]
        self.set_clock(self.now)
        self.subjects = _PerLocale({locale: compile_text(text) for locale, text in self.definition["subject"].items()})
        self.preheaders = _PerLocale(
            {locale: compile_text(text) for locale, text in (self.definition.get("preheader") or {}).items()}
        )
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
            # A layout that does not place the preheader itself gets it, hidden, first in the body.
            preheader = self.preheaders and "preheader" not in variables(version.html)
            additions = Additions(
                lang="{{ language }}",
                head_end="{{ block_heads }}",
                body_start=HIDDEN_PREHEADER if preheader else "",
                body_end=OPEN_PIXEL,
            )
            with _compiling(f"layout version {version.id} (v{version.version})"):
                self._layout = compile_part(
                    inlined,
                    version.text,
                    fragment=False,
                    register_links=partial(self._register_static, block_version_id=None),
                    additions=additions,
                )
        return self._layout

    def block(self, version_id: int) -> CompiledPart:
        part = self._blocks.get(version_id)
        if part is None:
            version = self._versions[version_id]
            inlined = self.inliner.inline(("block", version_id), version.html, self.css, fragment=True)
            with _compiling(f"block version {version_id} (v{version.version})"):
                part = compile_part(
                    inlined,
                    version.text,
                    fragment=True,
                    register_links=partial(self._register_static, block_version_id=version_id),
                    block_version=version_id,
                )
            self._blocks[version_id] = part
        return part

    def _register(self, urls: Sequence[str], block_version_id: int | None) -> Sequence[int]:
        # The assembly's session belongs to this worker: end any read snapshot first
        # (SQLite cannot turn an outdated read into a write), and commit at once.
        self._session.commit()
        interests = None if block_version_id is None else dict(self._versions[block_version_id].interests or {})
        ids = register_links(self._session, urls, block_version_id, interests=interests)
        self._session.commit()
        return ids

    def _register_static(self, urls: Sequence[str], block_version_id: int | None) -> Sequence[int]:
        """A template's fixed links, remembered by id so an untracked recipient gets the URL itself."""
        ids = self._register(urls, block_version_id)
        self._link_urls.update(zip(ids, urls))
        return ids

    def strings(self, chain: tuple[str, ...]) -> dict[str, str]:
        """The pack's phrases for a locale chain: the first locale that has each phrase."""
        strings = self._strings.get(chain)
        if strings is None:
            strings = self._strings[chain] = phrases_for(self.strings_by_locale, chain)
        return strings

    # -- one recipient -------------------------------------------------------------------

    def set_clock(self, now: datetime) -> None:
        """Select as of ``now``: a long run stops using a block whose validity window has closed."""
        if getattr(self, "selector", None) is None or now - self.now >= CLOCK_STEP:
            self.now = now
            self.selector = Selector(self._slot_specs, self.candidates, now=now, default_locale=self.default_locale)

    def choose(self, profile: Profile) -> dict[str, Choice]:
        return self.selector.choose(profile.recipient)

    def render(self, delivery_id: int, profile: Profile, choices: dict[str, Choice]) -> Rendered:
        """The recipient's subject, HTML and text; RenderError if any template fails.

        The parts are compiled (CSS inlined, perhaps by another worker) before
        the recipient's budget starts: that is the run's work, done once. A
        render that ran out of time because the machine was busy (``RenderError
        .retryable``) is tried once more with a new budget before it fails.
        """
        parts = [self.block(c.candidate.version_id) for c in choices.values() if c.candidate is not None]
        self.layout()
        try:
            return self._render(delivery_id, profile, choices, parts)
        except RenderError as exc:
            if not exc.retryable:
                raise
            return self._render(delivery_id, profile, choices, parts)

    def _render(self, delivery_id: int, profile: Profile, choices: dict[str, Choice], parts) -> Rendered:
        chain = locale_chain(profile.recipient.locale, self.default_locale)
        unsubscribe_url = self.signer.unsubscribe_url(delivery_id)
        context = render_context(
            contact=profile.contact,
            strings=self.strings(chain),
            campaign=self.campaign,
            unsubscribe_url=unsubscribe_url,
            preferences_url=self.signer.preferences_url(delivery_id),
            link=self._links(delivery_id, profile.tracking),
        )
        budget = Budget()
        html_slots: dict[str, Markup] = {}
        text_slots: dict[str, str] = {}
        heads: dict[str, None] = {}
        locales = list(dict.fromkeys(c.locale for c in choices.values() if c.candidate is not None))
        language = _language(locales, self.subjects, chain, self.default_locale)
        context["language"] = language.partition(",")[0]  # <html lang> takes one tag: the first block's
        chosen = iter(parts)
        for slot, choice in choices.items():
            if choice.candidate is None:
                html_slots[slot], text_slots[slot] = Markup(""), ""
                continue
            html_slots[slot], text, head = render_part(next(chosen), context, budget)
            text_slots[slot] = text.strip()
            heads[head] = None
        context["subject"] = subject = _one_line(render(self.subjects.get(chain), context, budget))
        preheader = self.preheaders.get(chain)
        context["preheader"] = _one_line(render(preheader, context, budget)) if preheader else ""
        context["slots"], context["text_slots"] = html_slots, text_slots
        context["block_heads"] = Markup("".join(heads))  # the blocks' @media and :hover rules, for <head>
        context["open_url"] = self.signer.open_url(delivery_id) if profile.tracking else ""
        html, text, _ = render_part(self.layout(), context, budget)
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
            unsubscribe_mailto=self.signer.unsubscribe_mailto(delivery_id, self.domain),
        )
        return (self.sign(message) if self.sign else message), message_id

    def _links(self, delivery_id: int, tracking: bool) -> Links:
        """Signed click URLs for a tracked recipient; the registered URLs themselves for one who is not."""
        if tracking:
            return Links(partial(self.signer.click_url, delivery_id), partial(self._track_url, delivery_id))
        return self._plain_links

    def _track_url(self, delivery_id: int, url: str, block_version_id: int | None) -> str:
        """A link built from merge fields: registered the first time any recipient's email has it."""
        if not url.startswith(("http://", "https://")):
            return url
        link_id = self._dynamic_links.get((url, block_version_id))
        if link_id is None:
            (link_id,) = self._register([url], block_version_id)
            if len(self._dynamic_links) < DYNAMIC_LINKS_KEPT:
                self._dynamic_links[url, block_version_id] = link_id
        return self.signer.click_url(delivery_id, link_id)


def _plain_url(url: str, block_version_id: int | None) -> str:
    """A link built from merge fields, for a recipient who is not tracked: as it is, unregistered."""
    return url


@contextmanager
def _compiling(what: str):
    """A template that does not compile fails each recipient with a RenderError naming its version."""
    try:
        yield
    except (TemplateError, RecursionError) as exc:
        raise RenderError(f"{what} could not be compiled: {exc}") from None


def load_profiles(session: Session, contact_ids: list[int], assembly: Assembly, now: datetime) -> dict[int, Profile]:
    """The claimed contacts with interests, consent and shown blocks, in a handful of queries."""
    interests: dict[int, dict[str, float]] = defaultdict(dict)
    for contact_id, tag, score, updated_at in session.execute(
        select(Interest.contact_id, Interest.tag, Interest.score, Interest.updated_at).where(
            Interest.contact_id.in_(contact_ids)
        )
    ):
        interests[contact_id][tag] = decayed_score(score, updated_at, now, assembly.half_life_days)
    consented: dict[str, set[int]] = {PROFILING: set(), TRACKING: set()}
    for contact_id, purpose in session.execute(
        select(Consent.contact_id, Consent.purpose).where(
            Consent.contact_id.in_(contact_ids), Consent.purpose.in_(consented), Consent.granted.is_(True)
        )
    ):
        consented[purpose].add(contact_id)
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
        ).where(Contact.id.in_(contact_ids))
    ).all()
    # Suppressed, unsubscribed or capped since planning: the same checks planning made.
    skips = ledger.skip_reasons(session, contact_ids, assembly.cap, now)
    profiles = {}
    for contact_id, email, first, last, locale, timezone, attributes in rows:
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
            profiling_consent=contact_id in consented[PROFILING],
        )
        profiles[contact_id] = Profile(contact, recipient, skips.get(contact_id), contact_id in consented[TRACKING])
    return profiles


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


class _PerLocale:
    """Templates per locale as the campaign writes them ("es", "zh_TW", "*"), found for a chain by equivalence.

    The index from ``locale_key`` to the locale as written is built once per run, not per recipient.
    """

    __slots__ = ("templates", "_by_key")

    def __init__(self, templates: dict):
        self.templates = templates
        self._by_key: dict[str | None, str] = {}
        for locale in templates:
            self._by_key.setdefault(locale_key(locale), locale)

    def __bool__(self) -> bool:
        return bool(self.templates)

    def locale(self, chain: tuple[str, ...]) -> str | None:
        """The locale as written (or "*") that serves ``chain``: the first equivalent, then "*", then any."""
        for key in chain:
            if key in self._by_key:
                return self._by_key[key]
        return "*" if "*" in self.templates else next(iter(self.templates), None)

    def get(self, chain: tuple[str, ...]):
        locale = self.locale(chain)
        return None if locale is None else self.templates[locale]


def _language(block_locales: list[str], subjects: _PerLocale, chain: tuple[str, ...], default: str) -> str:
    """Content-Language: the locales the blocks were chosen in or, with no block, the subject's (or the default)."""
    if not block_locales:
        subject = subjects.locale(chain)
        block_locales = [default if subject in (None, "*") else subject]
    tags: dict[str | None, str | None] = {}
    for locale in block_locales:  # one tag per locale however its blocks spell it (zh-TW, zh-Hant-TW)
        tags.setdefault(locale_key(locale), locale_tag(locale))
    return ", ".join(tags.values())


def _one_line(value: str) -> str:
    return " ".join(value.split())
