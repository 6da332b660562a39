"""Block selection: the rules as hypothesis properties, a brute-force reference, and a marketer's examples.

Pure: no database, no fixtures. Hypothesis draws candidates from small alphabets (tags, keys, locales, a
handful of block ids shared between versions, validity bounds an hour either side of ``NOW``) so that ties,
seen blocks, defaults and locale fallbacks come up in most examples.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from content.selection import (
    BEST_MATCH,
    DEFAULT_CHOSEN,
    EMPTY_NO_ELIGIBLE,
    EMPTY_NO_FRESH,
    Candidate,
    Choice,
    Recipient,
    Selector,
    SlotSpec,
    locale_chain,
    locale_key,
    score,
    select_blocks,
)

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
TAGS = ["pizza", "pasta", "outdoor", "family"]
KEYS = ["pizza-night", "pasta-bar", "hiking", "welcome", "news"]
# Stored forms as packs write them, equivalents among them (zh-tw = zh-hant-tw, en = en-us): see test_locales.py.
LOCALES = ["en", "es", "es-mx", "fr", "en-us", "es-419", "zh-tw", "zh-hant-tw", "zh"]
SLOT_NAMES = ["hero", "body", "footer"]
WEIGHTS = [0.1, 0.3, 0.4, 0.5, 1.0, 1.0, 2.0]
SCORES = [0.0, 0.1, 0.2, 0.3, 0.5, 0.5, 1.0, 1.0, 3.2]
# Round numbers recur so that a block's interest sum often equals another's priority: ties on score
# between blocks of different priority, which is what the tie-break rules are about.
PRIORITIES = [0.0, 0.0, 0.5, 1.0, 1.0, 2.0, -1.0, 0.1]

tag_sets = st.frozensets(st.sampled_from(TAGS), max_size=2)
bounds = st.sampled_from([None, None, None, None, -2, -1, 0, 1, 2]).map(lambda h: h if h is None else NOW + h * HOUR)
rarely = st.sampled_from([False, False, False, True])


def mostly_unfiltered(strategy):
    """A slot filter that is usually empty, so most slots have something to choose from."""
    return st.one_of(st.just(frozenset()), st.just(frozenset()), st.just(frozenset()), strategy)


@st.composite
def candidate_lists(draw, locales=LOCALES, crowded=False) -> list[Candidate]:
    """Candidates; ``crowded`` ones fit every slot, are always valid and score in whole numbers: ties abound."""
    count = draw(st.integers(0, 20))
    weights, priorities = ([1.0], [0.0, 1.0, 2.0]) if crowded else (WEIGHTS, PRIORITIES)
    every_slot, always = st.just(frozenset(SLOT_NAMES)), st.none()
    return [
        Candidate(
            version_id=100 + i,
            block_id=draw(st.integers(1, 8)),
            key=draw(st.sampled_from(KEYS)),
            locale=draw(st.sampled_from(locales)),
            slots=draw(every_slot if crowded else st.one_of(every_slot, st.frozensets(st.sampled_from(SLOT_NAMES)))),
            interests=tuple(
                (tag, draw(st.sampled_from(weights))) for tag in draw(st.lists(st.sampled_from(TAGS), max_size=3))
            ),
            priority=draw(st.sampled_from(priorities)),
            valid_from=draw(always if crowded else bounds),
            valid_until=draw(always if crowded else bounds),
            tags=draw(tag_sets),
            sensitive=draw(rarely),
            is_default=draw(st.booleans()),
        )
        for i in range(count)
    ]


slot_specs = st.lists(st.sampled_from(SLOT_NAMES), min_size=1, max_size=3, unique=True).flatmap(
    lambda names: st.tuples(
        *[
            st.builds(
                SlotSpec,
                name=st.just(name),
                tags=mostly_unfiltered(tag_sets),
                exclude_tags=mostly_unfiltered(tag_sets),
                interests=mostly_unfiltered(tag_sets),
                blocks=mostly_unfiltered(st.frozensets(st.sampled_from(KEYS), max_size=3)),
            )
            for name in names
        ]
    )
)
recipients = st.builds(
    Recipient,
    locale=st.sampled_from(
        [None, "", "en", "es", "ES-mx", "es_MX", "es-ar", "fr", "de", "en_US", "zh-Hant-TW", "zh-HK", "zh-CN", "xx-YY"]
    ),
    interests=st.dictionaries(st.sampled_from(TAGS), st.sampled_from(SCORES)),
    seen=st.frozensets(st.integers(1, 8)),
    profiling_consent=st.booleans(),
)
default_locales = st.sampled_from(["en", "es", "fr"])


# The reference: the rules read straight off the brief, one slot at a time, nothing precomputed.


def ref_score(c: Candidate, interests: dict[str, float]) -> float:
    return math.fsum(w * interests.get(tag, 0.0) for tag, w in c.interests) + c.priority


def ref_eligible(c: Candidate, spec: SlotSpec, r: Recipient) -> bool:
    keyed_to = {tag for tag, _ in c.interests}
    return (
        spec.name in c.slots
        and (not spec.tags or bool(spec.tags & c.tags))
        and not (spec.exclude_tags & c.tags)
        and (not spec.interests or bool(spec.interests & keyed_to))
        and (not spec.blocks or c.key in spec.blocks)
        and (c.valid_from is None or c.valid_from <= NOW)
        and (c.valid_until is None or NOW < c.valid_until)
        and (not c.sensitive or r.profiling_consent)
    )


def reference(slots, candidates, r: Recipient, default_locale: str) -> list[tuple]:
    out = []
    used: set[int] = set()
    for spec in slots:
        eligible = [c for c in candidates if ref_eligible(c, spec, r)]
        # The chain and the equivalence of locales are checked on their own in test_locales.py.
        chain = locale_chain(r.locale, default_locale)
        locales = [loc for loc in chain if any(locale_key(c.locale) == loc for c in eligible)]
        if not locales:
            out.append((spec.name, None, None, EMPTY_NO_ELIGIBLE, 0.0))
            continue
        here = [c for c in eligible if locale_key(c.locale) == locales[0]]
        fresh = [c for c in here if c.block_id not in r.seen and c.block_id not in used]
        defaults = [c for c in here if c.is_default and c.block_id not in used]
        pool, reason = (fresh, BEST_MATCH) if fresh else (defaults, DEFAULT_CHOSEN)
        if not pool:
            out.append((spec.name, None, None, EMPTY_NO_FRESH, 0.0))
            continue
        best = min(pool, key=lambda c: (-ref_score(c, r.interests), -c.priority, c.key, c.version_id))
        used.add(best.block_id)
        out.append((spec.name, best.version_id, best.locale, reason, ref_score(best, r.interests)))
    return out


def summary(choices: dict[str, Choice]) -> list[tuple]:
    return [(name, c.candidate and c.candidate.version_id, c.locale, c.reason, c.score) for name, c in choices.items()]


def choose(slots, candidates, r, default_locale="en") -> dict[str, Choice]:
    return select_blocks(slots, candidates, r, now=NOW, default_locale=default_locale)


# Properties.

scenario = given(slots=slot_specs, candidates=candidate_lists(), r=recipients, default_locale=default_locales)


@scenario
@settings(max_examples=300)
def test_matches_the_brute_force_reference(slots, candidates, r, default_locale):
    assert summary(choose(slots, candidates, r, default_locale)) == reference(slots, candidates, r, default_locale)


@given(
    slots=slot_specs,
    candidates=candidate_lists(locales=["es", "es-mx", "es-es", "es-419"], crowded=True),
    r=st.builds(
        Recipient,
        locale=st.sampled_from(["es", "es-MX", "es-ES"]),
        interests=st.fixed_dictionaries({"pizza": st.sampled_from([0.0, 1.0])}),
        seen=st.frozensets(st.integers(1, 8)),
        profiling_consent=st.booleans(),
    ),
)
@settings(max_examples=200)
def test_matches_the_reference_when_one_locale_is_crowded_and_scores_tie(slots, candidates, r):
    assert summary(choose(slots, candidates, r, "es")) == reference(slots, candidates, r, "es")


@scenario
def test_a_chosen_block_fits_its_slot_passes_the_filters_is_valid_and_respects_consent(
    slots, candidates, r, default_locale
):
    choices = choose(slots, candidates, r, default_locale)
    assert list(choices) == [s.name for s in slots]
    for spec in slots:
        choice = choices[spec.name]
        assert choice.slot == spec.name
        if choice.candidate is not None:
            assert ref_eligible(choice.candidate, spec, r)
            assert choice.candidate.locale == choice.locale
            assert choice.reason in (BEST_MATCH, DEFAULT_CHOSEN)
        else:
            assert (choice.score, choice.locale) == (0.0, None)
            assert choice.reason in (EMPTY_NO_ELIGIBLE, EMPTY_NO_FRESH)


@scenario
def test_the_locale_is_the_first_in_the_chain_with_an_eligible_block(slots, candidates, r, default_locale):
    chain = locale_chain(r.locale, default_locale)
    for spec in slots:
        choice = choose(slots, candidates, r, default_locale)[spec.name]
        with_blocks = [
            loc for loc in chain if any(ref_eligible(c, spec, r) and locale_key(c.locale) == loc for c in candidates)
        ]
        if choice.candidate is not None:
            assert locale_key(choice.locale) == with_blocks[0]
        elif choice.reason == EMPTY_NO_ELIGIBLE:
            assert with_blocks == []


@scenario
def test_fresh_first_then_default_and_never_a_block_twice(slots, candidates, r, default_locale):
    used: set[int] = set()
    for spec in slots:
        choice = choose(slots, candidates, r, default_locale)[spec.name]
        c = choice.candidate
        fresh = [
            other
            for other in candidates
            if ref_eligible(other, spec, r)
            and locale_key(other.locale) == locale_key(choice.locale)
            and other.block_id not in r.seen
            and other.block_id not in used
        ]
        if c is None:
            continue
        assert c.block_id not in used
        if choice.reason == BEST_MATCH:
            assert c.block_id not in r.seen
            assert all(choice.score >= score(other, r.interests) for other in fresh)
        if c.block_id in r.seen or choice.reason == DEFAULT_CHOSEN:
            assert choice.reason == DEFAULT_CHOSEN and c.is_default
            assert fresh == []
        used.add(c.block_id)
    chosen = [c.candidate.block_id for c in choose(slots, candidates, r, default_locale).values() if c.candidate]
    assert len(chosen) == len(set(chosen))


@given(slots=slot_specs, candidates=candidate_lists(), r=recipients, default_locale=default_locales, data=st.data())
def test_the_candidates_order_changes_nothing(slots, candidates, r, default_locale, data):
    shuffled = data.draw(st.permutations(candidates))
    assert choose(slots, shuffled, r, default_locale) == choose(slots, candidates, r, default_locale)


@given(slots=slot_specs, candidates=candidate_lists(), rs=st.lists(recipients, max_size=5), locale=default_locales)
def test_a_selector_built_once_per_run_chooses_as_select_blocks_does(slots, candidates, rs, locale):
    selector = Selector(slots, iter(candidates), now=NOW, default_locale=locale)
    for r in rs:
        assert selector.choose(r) == choose(slots, candidates, r, locale)


@given(
    interests=st.lists(st.tuples(st.sampled_from(TAGS), st.floats(0.001, 1e6)), max_size=4),
    scores=st.dictionaries(st.sampled_from(TAGS), st.floats(-1e6, 1e6)),
    data=st.data(),
)
def test_the_score_does_not_depend_on_the_order_of_a_blocks_interests(interests, scores, data):
    shuffled = tuple(data.draw(st.permutations(interests)))
    a = Candidate(1, 1, "k", "en", frozenset({"hero"}), tuple(interests), priority=0.5)
    b = Candidate(1, 1, "k", "en", frozenset({"hero"}), shuffled, priority=0.5)
    assert score(a, scores) == score(b, scores)


# Examples a marketer would recognise.

HERO = [SlotSpec("hero")]


def block(version_id: int, key: str, locale: str = "en", **kwargs) -> Candidate:
    kwargs.setdefault("interests", ())
    return Candidate(version_id, kwargs.pop("block_id", version_id), key, locale, frozenset({"hero"}), **kwargs)


def pick(candidates, recipient: Recipient, slots=HERO, default_locale: str = "en") -> Candidate | None:
    return choose(slots, candidates, recipient, default_locale)["hero"].candidate


def test_a_mexican_reader_gets_spanish_when_there_is_no_mexican_block_and_english_only_without_spanish():
    mexican = Recipient("es-MX", {})
    english, spanish = block(1, "welcome", "en"), block(2, "bienvenida", "es")
    assert pick([english, spanish], mexican) == spanish
    assert pick([english, spanish, block(3, "bienvenida-mx", "es-mx")], mexican).key == "bienvenida-mx"
    assert pick([english], mexican) == english
    # A Spanish block meant for another slot does not count as Spanish for this one.
    footer_only = Candidate(4, 4, "pie", "es", frozenset({"footer"}), ())
    assert pick([english, footer_only], mexican) == english


def test_a_reader_who_loves_pizza_gets_the_pizza_block_over_the_pasta_block():
    pizza = block(1, "pizza-night", interests=(("pizza", 1.0),))
    pasta = block(2, "pasta-bar", interests=(("pasta", 1.0),))
    assert pick([pasta, pizza], Recipient("en", {"pizza": 3.2, "pasta": 0.4})) == pizza
    assert pick([pasta, pizza], Recipient("en", {"pizza": 0.1, "pasta": 0.4})) == pasta
    # No interests at all: priority, then key, decides.
    assert pick([pizza, pasta], Recipient("en", {})) == pasta
    assert pick([pizza, block(3, "pasta-bar", interests=(), priority=-1.0)], Recipient("en", {})) == pizza
    # Equal scores: the block the marketer prioritised wins, whatever its key.
    house_ad = block(4, "zz-house-ad", priority=1.0)
    assert pick([pizza, house_ad], Recipient("en", {"pizza": 1.0})) == house_ad


def test_a_reader_who_has_seen_every_fresh_block_gets_the_default():
    news, tips = block(1, "news"), block(2, "tips")
    welcome = block(3, "welcome", is_default=True)
    reader = Recipient("en", {}, seen=frozenset({1, 2, 3}))
    choice = choose(HERO, [news, tips, welcome], reader)["hero"]
    assert (choice.candidate, choice.reason) == (welcome, DEFAULT_CHOSEN)
    assert choose(HERO, [news, tips], reader)["hero"].reason == EMPTY_NO_FRESH
    # A Spanish reader who saw every Spanish block stays in Spanish: the default, not an English block.
    spanish_reader = Recipient("es", {}, seen=frozenset({4}))
    choice = choose(HERO, [news, block(4, "noticias", "es"), block(5, "hola", "es", is_default=True)], spanish_reader)
    assert (choice["hero"].candidate.key, choice["hero"].locale) == ("hola", "es")


def test_a_block_goes_once_per_email_and_two_versions_of_one_block_do_not_crash():
    slots = [SlotSpec("hero"), SlotSpec("body")]
    both = frozenset({"hero", "body"})
    v1 = Candidate(10, 7, "sale", "en", both, (), priority=1.0)
    v2 = Candidate(11, 7, "sale", "en", both, ())
    other = Candidate(12, 8, "news", "en", both, ())
    choices = choose(slots, [v2, other, v1], Recipient("en", {}))
    assert [c.candidate for c in choices.values()] == [v1, other]


def test_expired_and_not_yet_valid_blocks_are_never_chosen():
    reader = Recipient("en", {})
    expired = block(1, "spring-sale", valid_until=NOW)
    upcoming = block(2, "summer-sale", valid_from=NOW + timedelta(seconds=1))
    current = block(3, "news", valid_from=NOW, valid_until=NOW + HOUR)
    assert pick([expired, upcoming], reader) is None
    assert pick([expired, upcoming, current], reader) == current


def test_sensitive_blocks_only_with_profiling_consent():
    health = block(1, "diet-tips", interests=(("health", 1.0),), priority=1.0, sensitive=True)
    plain = block(2, "news")
    assert pick([health, plain], Recipient("en", {"health": 2.0})) == plain
    assert pick([health, plain], Recipient("en", {"health": 2.0}, profiling_consent=True)) == health
    assert choose(HERO, [health], Recipient("en", {}))["hero"].reason == EMPTY_NO_ELIGIBLE


def test_the_slot_filters_narrow_the_blocks():
    pizza = block(1, "pizza-night", interests=(("pizza", 1.0),), tags=frozenset({"food"}))
    hike = block(2, "hiking", interests=(("outdoor", 1.0),), tags=frozenset({"travel", "promo"}))
    both, reader = [pizza, hike], Recipient("en", {"outdoor": 5.0})
    assert pick(both, reader, [SlotSpec("hero", tags=frozenset({"food"}))]) == pizza
    assert pick(both, reader, [SlotSpec("hero", exclude_tags=frozenset({"promo"}))]) == pizza
    assert pick(both, reader, [SlotSpec("hero", interests=frozenset({"pizza"}))]) == pizza
    assert pick(both, reader, [SlotSpec("hero", blocks=frozenset({"pizza-night"}))]) == pizza
    assert pick(both, reader, [SlotSpec("hero")]) == hike


def test_explain_shows_the_arithmetic():
    pizza = Candidate(12, 3, "pizza-night", "es", frozenset({"hero"}), (("pizza", 1.0), ("family", 0.4)), version=2)
    choice = choose(HERO, [pizza], Recipient("es-MX", {"pizza": 3.2, "family": 0.9}))["hero"]
    assert choice.score == score(pizza, {"pizza": 3.2, "family": 0.9})
    assert choice.explain() == (
        "hero: pizza-night v2 (es) score 3.56 = family 0.4×0.90 + pizza 1.0×3.20 + priority 0.00 — best match"
    )
    assert choose(HERO, [], Recipient("es", {}))["hero"].explain() == "hero: (empty) — empty: no eligible block"
