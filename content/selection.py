"""Block selection: for one recipient and each slot of a layout, the content block that fits best.

A pure function of its inputs (no database, no clock): the pipeline loads a run's block versions once,
builds a ``Selector`` and calls ``choose`` per recipient. ``select_blocks`` is the one-shot form.

The rules, slot by slot in the layout's order:

1. Eligible for a slot: the slot is in ``candidate.slots``; the candidate passes the slot's filters (carries
   at least one of ``tags`` if any, none of ``exclude_tags``, is keyed to at least one of ``interests`` if
   any, has its key in ``blocks`` if any); it is valid at ``now`` (``valid_from <= now < valid_until``, each
   bound optional); and it is not sensitive unless the recipient gave profiling consent.
2. Locale: walk ``locale_chain(recipient.locale, default_locale)`` and take the first locale in which the slot
   has an eligible candidate (candidate locale equivalent to the chain entry: the same ``locale_key``, so a
   ``zh-tw`` block serves a ``zh-Hant-TW`` reader). None: the slot stays empty. A block the recipient already
   saw still counts here, so a Spanish reader who saw every Spanish block is not dropped to English.

Locales follow CLDR through Babel's copy of its data: likely subtags decide which tags are the same locale
(``zh-Hant-TW`` = ``zh-TW``, ``en-US`` = ``en``, ``pt-BR`` = ``pt``; ``sr-Latn`` is not ``sr``), and the chain
walks CLDR's parent locales (``es-MX`` → ``es-419`` → ``es``; ``zh-HK`` → ``zh-Hant``, never ``zh``, which is
Simplified), then the default locale's own chain. A string that is no locale never raises: it falls back to
the default. Chains are cached per locale string, so Babel is consulted once per locale, not per recipient.
3. In that locale, fresh = eligible, not seen in earlier runs (by ``block_id``) and not chosen for an earlier
   slot of this email. The best fresh one wins; failing that, the best eligible default (``is_default``) not
   already in this email, seen or not; failing that, the slot stays empty. A block appears once per email.
4. Score = Σ(weight × recipient interest score) + priority. Best = highest score, then higher priority, then
   lower key, then lower version_id: a total order, so the answer never depends on the candidates' order.
   The Σ is ``math.fsum`` (exactly rounded), so every summation order gives bit-identical floats.
5. Two versions of one block may both be passed; once one is chosen the block counts as used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from babel.core import get_global, parse_locale

BEST_MATCH = "best match"
DEFAULT_CHOSEN = "default: nothing fresh left"
EMPTY_NO_FRESH = "empty: nothing fresh and no default"
EMPTY_NO_ELIGIBLE = "empty: no eligible block"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A block version as selection sees it."""

    version_id: int  # unique per block version
    block_id: int  # the block, stable across versions; "already sent" is tracked by block_id
    key: str
    locale: str  # normalized: lowercase BCP 47, e.g. "en", "es", "es-mx"; matched by equivalence (locale_key)
    slots: frozenset[str]
    interests: tuple[tuple[str, float], ...]  # (tag, weight), weights > 0
    priority: float = 0.0
    valid_from: datetime | None = None  # aware UTC; inclusive
    valid_until: datetime | None = None  # aware UTC; exclusive
    tags: frozenset[str] = frozenset()
    sensitive: bool = False
    is_default: bool = False
    version: int = 1  # the block's version number, as marketers see it (v1, v2, …)


@dataclass(frozen=True, slots=True)
class SlotSpec:
    """A layout slot with the campaign's filters for it (empty filter = no restriction)."""

    name: str
    tags: frozenset[str] = frozenset()  # block must carry at least one of these tags
    exclude_tags: frozenset[str] = frozenset()  # block must carry none of these
    interests: frozenset[str] = frozenset()  # block must be keyed to at least one of these interests
    blocks: frozenset[str] = frozenset()  # block key must be one of these


@dataclass(frozen=True, slots=True)
class Recipient:
    """One contact as selection sees it."""

    locale: str | None  # the contact's preferred locale, any case ("es-MX")
    interests: Mapping[str, float]  # tag -> decayed interest score (already decayed by the caller)
    seen: frozenset[int] = frozenset()  # block_ids this contact was sent in earlier runs
    profiling_consent: bool = False


@dataclass(frozen=True, slots=True)
class Choice:
    """The block chosen for one slot, with why."""

    slot: str
    candidate: Candidate | None  # None = the slot stays empty
    score: float  # 0.0 when empty
    locale: str | None  # the locale the slot was filled in, as the chosen block is stored (None when empty)
    reason: str
    # (tag, weight, recipient's interest score) per term of the score, by tag: what explain() shows.
    terms: tuple[tuple[str, float, float], ...] = field(default=(), repr=False)

    def explain(self) -> str:
        """One human line for ``patron campaigns preview``."""
        c = self.candidate
        if c is None:
            return f"{self.slot}: (empty) — {self.reason}"
        parts = [f"{tag} {_weight(w)}×{value:.2f}" for tag, w, value in self.terms]
        parts.append(f"priority {c.priority:.2f}")
        head = f"{self.slot}: {c.key} v{c.version} ({self.locale}) score {self.score:.2f}"
        return f"{head} = {' + '.join(parts)} — {self.reason}"


def _weight(w: float) -> str:
    # 1.0 -> "1.0", 0.25 -> "0.25": as written in the pack, without float noise.
    text = f"{w:.4f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def normalize_locale(value: str | None) -> str | None:
    """A locale as lowercase BCP 47 ("es_MX" / "ES-mx" -> "es-mx"); None for "" or None. The form packs store."""
    if value is None:
        return None
    text = value.strip().replace("_", "-").lower().strip("-")
    return text or None


# A parsed locale: (language, script, region, variant), each in its canonical case ("zh", "Hant", "TW", None).
_Tag = tuple[str, str | None, str | None, str | None]
_TAG_CACHE = 4096  # distinct locale strings remembered; a campaign's audience has a few dozen


@lru_cache(maxsize=_TAG_CACHE)
def locale_key(value: str | None) -> str | None:
    """The locale's class of equivalents, as the shortest lowercase tag CLDR's likely subtags expand alike.

    ``zh-Hant-TW``, ``zh_TW`` and ``zh-hant`` are all ``zh-tw``; ``en-US`` and ``en`` are ``en``; ``sr-Latn``
    stays ``sr-latn`` (``sr`` is Cyrillic); ``pt-BR`` is ``pt``. A string that is no language tag is its own
    class (its lowercase form). None for "" or None.
    """
    text = normalize_locale(value)
    if text is None:
        return None
    tag = _parse(text)
    return text if tag is None else _minimal(tag)


@lru_cache(maxsize=_TAG_CACHE)
def locale_tag(value: str | None) -> str | None:
    """The locale as written in headers and ``lang``: BCP 47 in its conventional case ("zh-hant-tw" -> "zh-Hant-TW")."""
    text = normalize_locale(value)
    if text is None:
        return None
    tag = _parse(text)
    if tag is None:
        return text
    language, script, region, variant = tag
    return "-".join(part for part in (language, script, region, variant and variant.lower()) if part)


def phrases_by_locale(by_locale: dict[str, dict] | None) -> dict[str, dict]:
    """A pack's ``strings`` merged per ``locale_key``: ``zh-tw`` and ``zh-hant-tw`` are one locale."""
    merged: dict[str, dict] = {}
    for locale, values in (by_locale or {}).items():
        merged.setdefault(locale_key(locale), {}).update(values or {})
    return merged


def phrases_for(by_key: dict[str, dict], chain: tuple[str, ...]) -> dict[str, str]:
    """The phrases ``strings.<name>`` reads along a locale chain: each from the first locale that has it."""
    phrases: dict[str, str] = {}
    for key in reversed(chain):
        phrases.update(by_key.get(key) or {})
    return phrases


@lru_cache(maxsize=_TAG_CACHE)
def locale_chain(preferred: str | None, default: str) -> tuple[str, ...]:
    """The locales to try, as ``locale_key``s: the preferred one and its CLDR parents, then the default and its own.

    ``es-MX`` → ``es-mx, es-419, es``; ``zh-HK`` → ``zh-hk, zh-tw`` (Traditional Chinese, never ``zh``, which
    is Simplified); ``pt-PT`` → ``pt-pt, pt``; ``en-US`` → ``en``. Cached: Babel is consulted once per locale.
    """
    chain: list[str] = []
    for value in (preferred, default):
        for key in _own_chain(normalize_locale(value)):
            if key not in chain:
                chain.append(key)
    return tuple(chain)


def _own_chain(text: str | None) -> list[str]:
    if text is None:
        return []
    tag = _parse(text)
    if tag is None:
        return [text]
    keys = [_minimal(tag)]
    for parent in _parents(_cldr_id(_maximize(tag))):
        key = _minimal(parent)
        if key not in keys:
            keys.append(key)
    return keys


@lru_cache(maxsize=_TAG_CACHE)
def _parse(text: str) -> _Tag | None:
    """The tag in canonical case with CLDR's aliases applied (``iw`` → ``he``, ``UK`` → ``GB``); None if not a tag.

    Subtags Babel cannot read (extensions such as ``-u-ca-buddhist``, private use ``-x-…``) are dropped from the
    end until the rest parses; ``und`` alone (undetermined) and ``root`` are no language at all.
    """
    if not text.isascii():
        return None
    subtags = text.split("-")
    while subtags:
        try:
            language, region, script, variant, *_ = parse_locale("-".join(subtags), sep="-")
        except ValueError:
            subtags.pop()
            continue
        alias = get_global("language_aliases").get(language)
        if alias:
            language, alias_region, alias_script, *_ = parse_locale(alias)
            script, region = script or alias_script, region or alias_region
        region = get_global("territory_aliases").get(region, (region,))[0] if region else None
        script = get_global("script_aliases").get(script, script) if script else None
        if language == "root" or (language == "und" and not script and not region):
            return None
        return language, script, region, variant
    return None


@lru_cache(maxsize=_TAG_CACHE)
def _maximize(tag: _Tag) -> _Tag:
    """CLDR's "add likely subtags": ``zh-TW`` → ``zh-Hant-TW``, ``sr`` → ``sr-Cyrl-RS``; unknown languages as given."""
    language, script, region, variant = tag
    likely = get_global("likely_subtags")
    for lookup in ((language, script, region), (language, None, region), (language, script, None), (language,)):
        found = likely.get("_".join(part for part in lookup if part))
        if found:
            found_language, found_region, found_script, *_ = parse_locale(found)
            return (
                found_language if language == "und" else language,
                script or found_script,
                region or (found_region if found_region != "ZZ" else None),
                variant,
            )
    return tag


def _minimal(tag: _Tag) -> str:
    """CLDR's "remove likely subtags", lowercase: the shortest tag that expands to the same (``zh-Hant-TW`` → zh-tw)."""
    full = _maximize(tag)
    language, script, region, variant = full
    for trial in ((language, None, None, None), (language, None, region, None), (language, script, None, None)):
        if _maximize(trial)[:3] == full[:3]:
            break
    else:
        trial = full
    return "-".join(part for part in (*trial[:3], variant) if part).lower()


def _cldr_id(full: _Tag) -> _Tag:
    """The form CLDR names its locales in: the script only where it is not the language's likely one (zh-Hant-TW)."""
    language, script, region, variant = full
    return (language, None if script == _maximize((language, None, None, None))[1] else script, region, variant)


def _parents(tag: _Tag) -> Iterator[_Tag]:
    """CLDR's parent locales, up to (not including) root: ``es-MX`` → es-419 → es; ``zh-Hant-HK`` → zh-Hant."""
    while True:
        parent = get_global("parent_exceptions").get("_".join(part for part in tag if part))
        if parent == "root":
            return
        if parent:
            language, region, script, variant, *_ = parse_locale(parent)
            tag = (language, script, region, variant)
        else:
            language, script, region, variant = tag
            if variant:
                tag = (language, script, region, None)
            elif region:
                tag = (language, script, None, None)
            else:
                # A script written out is not the language's likely one (see _cldr_id): CLDR's parent is root.
                return
        yield tag


def score(candidate: Candidate, interests: Mapping[str, float]) -> float:
    """Σ(weight × interest score) + priority."""
    return _score(candidate.interests, candidate.priority, interests)


def _score(terms: tuple[tuple[str, float], ...], priority: float, interests: Mapping[str, float]) -> float:
    get = interests.get
    return math.fsum([w * get(tag, 0.0) for tag, w in terms]) + priority


def _valid_at(c: Candidate, now: datetime) -> bool:
    return (c.valid_from is None or c.valid_from <= now) and (c.valid_until is None or now < c.valid_until)


def _fits(c: Candidate, spec: SlotSpec) -> bool:
    return (
        spec.name in c.slots
        and (not spec.tags or not spec.tags.isdisjoint(c.tags))
        and spec.exclude_tags.isdisjoint(c.tags)
        and (not spec.interests or any(tag in spec.interests for tag, _ in c.interests))
        and (not spec.blocks or c.key in spec.blocks)
    )


def _tiebreak(c: Candidate) -> tuple[float, str, int]:
    return (-c.priority, c.key, c.version_id)


# Per slot: locale_key -> (eligible, defaults), each sorted by the tie-break order, so the first best score wins.
_Table = dict[str, tuple[tuple[Candidate, ...], tuple[Candidate, ...]]]


def _table(eligible: Iterable[Candidate]) -> _Table:
    by_locale: dict[str, list[Candidate]] = {}
    for c in eligible:
        by_locale.setdefault(locale_key(c.locale), []).append(c)
    return {loc: (tuple(cs), tuple(c for c in cs if c.is_default)) for loc, cs in by_locale.items()}


class Selector:
    """select_blocks with the per-run work done once: built once per run, then called per recipient."""

    __slots__ = ("_slots", "_default_locale")

    def __init__(
        self, slots: Sequence[SlotSpec], candidates: Iterable[Candidate], *, now: datetime, default_locale: str
    ) -> None:
        ordered = sorted((c for c in candidates if _valid_at(c, now)), key=_tiebreak)
        self._slots: list[tuple[str, _Table, _Table]] = []
        for spec in slots:
            fitting = [c for c in ordered if _fits(c, spec)]
            self._slots.append((spec.name, _table(c for c in fitting if not c.sensitive), _table(fitting)))
        self._default_locale = default_locale

    def choose(self, recipient: Recipient) -> dict[str, Choice]:
        """The chosen block per slot for this recipient (dict in slot order)."""
        chain = locale_chain(recipient.locale, self._default_locale)  # cached per locale string
        interests = recipient.interests
        seen = recipient.seen
        consent = recipient.profiling_consent
        used: set[int] = set()
        result: dict[str, Choice] = {}
        for name, plain, everything in self._slots:
            table = everything if consent else plain
            for locale in chain:
                entry = table.get(locale)
                if entry is not None:
                    break
            else:
                result[name] = Choice(name, None, 0.0, None, EMPTY_NO_ELIGIBLE)
                continue
            eligible, defaults = entry
            best, best_score = _best(eligible, interests, used, seen)
            reason = BEST_MATCH
            if best is None:
                best, best_score = _best(defaults, interests, used, frozenset())
                reason = DEFAULT_CHOSEN
            if best is None:
                result[name] = Choice(name, None, 0.0, None, EMPTY_NO_FRESH)
                continue
            used.add(best.block_id)
            terms = tuple((tag, w, interests.get(tag, 0.0)) for tag, w in sorted(best.interests))
            result[name] = Choice(name, best, best_score, best.locale, reason, terms)
        return result


def _best(
    ordered: tuple[Candidate, ...], interests: Mapping[str, float], used: set[int], seen: frozenset[int]
) -> tuple[Candidate | None, float]:
    # ``ordered`` is in tie-break order: a later candidate wins only with a strictly higher score.
    best: Candidate | None = None
    best_score = 0.0
    for c in ordered:
        if c.block_id in used or c.block_id in seen:
            continue
        s = _score(c.interests, c.priority, interests)
        if best is None or s > best_score:
            best, best_score = c, s
    return best, best_score


def select_blocks(
    slots: Sequence[SlotSpec],
    candidates: Iterable[Candidate],
    recipient: Recipient,
    *,
    now: datetime,
    default_locale: str,
) -> dict[str, Choice]:
    """The chosen block per slot (dict in slot order); the same whatever the candidates' order."""
    return Selector(slots, candidates, now=now, default_locale=default_locale).choose(recipient)
