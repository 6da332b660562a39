"""Locales by the standard: equivalents, CLDR parent locales and the default, for blocks, subjects and phrases.

The fault kind (issue #7, item 6): a fallback chain that only cut subtags sent a ``zh-Hant-TW`` customer
English when the pack had ``zh-TW`` blocks, knew nothing of scripts, likely subtags or CLDR's parent locales,
and could pick a subject in another language than the body. The chain is built from CLDR's data as Babel
ships it; these tests pin the chains a marketer would check by hand, then send a campaign end to end.
"""

from __future__ import annotations

from datetime import datetime, timezone

import lxml.html
import pytest
from babel.localedata import locale_identifiers
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from campaigns.executors import execute_run
from campaigns.runs import start_run
from content.models import Block, BlockVersion
from content.packs import import_pack
from content.selection import (
    Candidate,
    Recipient,
    SlotSpec,
    locale_chain,
    locale_key,
    locale_tag,
    normalize_locale,
    select_blocks,
)
from delivery.models import Delivery
from tests.campaigns.conftest import add_campaign, add_contacts, parse, parts, worker_config
from tests.packs import block, write_pack

# -- the chain itself --------------------------------------------------------------------------------------

CHAINS = [
    # A script or region that is likely for the language is the same locale.
    ("zh-Hant-TW", "en", ("zh-tw", "en")),
    ("zh-TW", "en", ("zh-tw", "en")),
    ("zh_hant", "en", ("zh-tw", "en")),
    # Hong Kong falls back to Traditional Chinese (zh-Hant, the same as zh-TW), never to zh (Simplified).
    ("zh-HK", "en", ("zh-hk", "zh-tw", "en")),
    ("zh-Hant-MO", "en", ("zh-mo", "zh-hk", "zh-tw", "en")),
    ("zh-CN", "en", ("zh", "en")),
    ("zh-Hans-TW", "en", ("zh-hans-tw", "zh", "en")),
    # pt means Brazilian Portuguese; Portugal and the countries CLDR attaches to it fall back through pt-PT.
    ("pt-BR", "en", ("pt", "en")),
    ("pt-PT", "en", ("pt-pt", "pt", "en")),
    ("pt-AO", "en", ("pt-ao", "pt-pt", "pt", "en")),
    # en-US maximizes to en-Latn-US, as en does: the same locale, however it is written.
    ("en_US", "en", ("en",)),
    ("EN-us", "en-US", ("en",)),
    ("en-IN", "en", ("en-in", "en-001", "en")),
    ("en-GB", "en", ("en-gb", "en-001", "en")),
    # sr is Cyrillic; sr-Latn's CLDR parent is root, so it never falls to Cyrillic blocks.
    ("sr-Latn", "en", ("sr-latn", "en")),
    ("sr-Latn-RS", "en", ("sr-latn", "en")),
    ("sr-Cyrl-RS", "en", ("sr", "en")),
    ("sr-ME", "en", ("sr-me", "sr-latn", "en")),
    ("es-MX", "en", ("es-mx", "es-419", "es", "en")),
    ("es-ES", "en", ("es", "en")),
    # CLDR's aliases: iw is Hebrew's old code, eng the three-letter English one, UK the old code of GB.
    ("iw", "en", ("he", "en")),
    ("eng", "es", ("en", "es")),
    ("en-UK", "en", ("en-gb", "en-001", "en")),
    # Extensions and private use do not change the language.
    ("de-DE-u-co-phonebk", "en", ("de", "en")),
    ("en-US-x-twain", "es", ("en", "es")),
    # The default comes last, with its own fallbacks; a preferred locale that shares them keeps its order.
    ("fr-CA", "es-MX", ("fr-ca", "fr", "es-mx", "es-419", "es")),
    ("es", "es-MX", ("es", "es-mx", "es-419")),
    ("pt-PT", "pt-BR", ("pt-pt", "pt")),
    (None, "zh-Hant", ("zh-tw",)),
    ("", "en", ("en",)),
]


@pytest.mark.parametrize(("preferred", "default", "chain"), CHAINS)
def test_the_chain_follows_cldr(preferred, default, chain):
    assert locale_chain(preferred, default) == chain


GARBAGE = ["xx-YY", "klingon", "", "   ", "-", "_", "123", "en--US", "español", "zh-汉字", "und", "root", "a" * 300]


@pytest.mark.parametrize("garbage", GARBAGE)
def test_a_string_that_is_no_known_locale_falls_back_to_the_default(garbage):
    chain = locale_chain(garbage, "es-MX")
    assert chain[-3:] == ("es-mx", "es-419", "es")
    assert len(chain) <= 5  # at most the string itself and one shorter prefix before the default's
    assert locale_key(garbage) in (None, *chain)


def test_equivalent_locales_have_one_key_and_different_ones_do_not():
    assert locale_key("zh-Hant-TW") == locale_key("zh_TW") == locale_key("zh-hant") == "zh-tw"
    assert locale_key("en_US") == locale_key("en-US") == locale_key("en") == locale_key("en-Latn") == "en"
    assert locale_key("pt-BR") == locale_key("pt") == "pt"
    assert len({locale_key(t) for t in ("sr", "sr-Latn", "zh", "zh-TW", "zh-HK", "pt-PT", "pt")}) == 7
    assert locale_key(None) is locale_key("") is None


def test_locales_are_stored_as_lowercase_bcp47_and_written_in_headers_in_their_usual_case():
    assert normalize_locale("es_MX") == normalize_locale(" ES-mx ") == "es-mx"
    assert normalize_locale("") is normalize_locale(None) is None
    assert [locale_tag(t) for t in ("zh-hant-tw", "sr-latn", "es-419", "en", "ca-es-valencia")] == [
        "zh-Hant-TW",
        "sr-Latn",
        "es-419",
        "en",
        "ca-ES-valencia",
    ]


def test_no_locale_cldr_knows_falls_back_across_scripts():
    """Every Traditional Chinese locale stays off zh (Simplified); every Latin Serbian one off sr (Cyrillic)."""
    known = [ident.replace("_", "-") for ident in locale_identifiers()]
    traditional = [tag for tag in known if tag.startswith("zh-Hant")]
    latin_serbian = [tag for tag in known if tag.startswith("sr-Latn")]
    assert len(traditional) >= 3 and len(latin_serbian) >= 3
    for tag in traditional:
        assert "zh" not in locale_chain(tag, "en"), tag
    for tag in latin_serbian:
        assert "sr" not in locale_chain(tag, "en"), tag
    for tag in known:
        assert locale_chain(tag, "en")[0] == locale_key(tag)


# Tag-shaped strings from real subtags (so that likely subtags and parent locales come up), and any text at all.
_SUBTAGS = ["zh", "pt", "sr", "en", "es", "und", "xx", "Hant", "Hans", "Latn", "Cyrl", "TW", "HK", "MO", "BR", "PT"]
_SUBTAGS += ["AO", "419", "001", "IN", "GB", "US", "MX", "ME", "valencia", "x", "u", "co", "1996", ""]
tag_like = st.lists(st.sampled_from(_SUBTAGS), min_size=0, max_size=5).flatmap(
    lambda parts: st.sampled_from(["-", "_"]).map(lambda sep: sep.join(parts))
)
locale_strings = st.one_of(st.none(), tag_like, st.text(max_size=40))
defaults = st.sampled_from(["en", "es", "es-MX", "pt-BR", "zh-Hant", "sr-Latn", "en-GB"])


@given(preferred=locale_strings, default=defaults)
@settings(max_examples=500)
def test_any_string_gives_a_chain_that_ends_with_the_default_and_its_fallbacks(preferred, default):
    chain = locale_chain(preferred, default)
    own, fallback = locale_chain(preferred, preferred or ""), locale_chain(None, default)
    # It always reaches the default and its fallbacks, and ends among them.
    assert locale_key(default) in chain and set(fallback) <= set(chain)
    assert chain[-1] in fallback
    # The customer's own chain first, then what the default's adds, in its order; nothing twice.
    assert chain == own + tuple(key for key in fallback if key not in own)
    assert len(set(chain)) == len(chain)
    assert chain[0] == (locale_key(preferred) or locale_key(default))


@given(preferred=locale_strings, default=defaults)
@settings(max_examples=500)
def test_a_locale_and_its_key_have_the_same_chain(preferred, default):
    # The key is the locale's shortest equivalent spelling: it must fall back exactly as the locale does.
    assert locale_chain(preferred, default) == locale_chain(locale_key(preferred), default)
    assert locale_key(locale_key(preferred)) == locale_key(preferred)


# -- choosing blocks by equivalence -------------------------------------------------------------------------

NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)


def hero(version_id: int, locale: str) -> Candidate:
    return Candidate(version_id, version_id, f"hero-{locale}", normalize_locale(locale), frozenset({"hero"}), ())


def chosen_locale(customer: str | None, *block_locales: str, default: str = "en") -> str | None:
    """The stored locale of the hero block a customer gets, among one block per locale."""
    blocks = [hero(i, locale) for i, locale in enumerate(block_locales)]
    choice = select_blocks([SlotSpec("hero")], blocks, Recipient(customer, {}), now=NOW, default_locale=default)
    return choice["hero"].locale


def test_a_block_matches_every_spelling_of_its_locale():
    assert chosen_locale("zh-Hant-TW", "en", "zh-TW") == "zh-tw"
    assert chosen_locale("zh-TW", "en", "zh-Hant-TW") == "zh-hant-tw"
    assert chosen_locale("en_US", "es", "en", default="es") == "en"
    assert chosen_locale("en", "es", "en-US", default="es") == "en-us"
    assert chosen_locale("pt-BR", "en", "pt", "pt-PT") == "pt"
    assert chosen_locale("pt", "en", "pt-BR", "pt-PT") == "pt-br"


def test_a_block_goes_to_the_nearest_locale_by_cldr_and_never_across_scripts():
    assert chosen_locale("zh-HK", "en", "zh", "zh-TW") == "zh-tw"
    assert chosen_locale("zh-HK", "en", "zh") == "en"  # Simplified is not a fallback for Traditional
    assert chosen_locale("zh-CN", "en", "zh-TW", "zh") == "zh"
    assert chosen_locale("pt-PT", "en", "pt", "pt-PT") == "pt-pt"
    assert chosen_locale("pt-PT", "en", "pt") == "pt"
    assert chosen_locale("pt-AO", "en", "pt", "pt-PT") == "pt-pt"
    assert chosen_locale("sr-Latn", "en", "sr") == "en"
    assert chosen_locale("sr-Latn", "en", "sr", "sr-Latn") == "sr-latn"
    assert chosen_locale("sr", "en", "sr-Latn") == "en"
    assert chosen_locale("es-MX", "en", "es", "es-419") == "es-419"
    assert chosen_locale("es-AR", "en", "es", "es-MX") == "es"  # a sibling is no fallback
    assert chosen_locale("klingon", "es", "en") == "en"


# -- end to end: blocks, subject, phrases and Content-Language ------------------------------------------------


def _blocks() -> list[dict]:
    heroes = ["en", "zh-TW", "zh", "pt", "pt-PT", "sr", "sr-Latn", "es", "es-419"]
    specs = [block(f"welcome-{loc.lower()}", loc, slots=("hero",)) for loc in heroes]
    # The offer slot only in Traditional Chinese, written the long way: a zh-TW customer must still get it.
    specs.append(block("card-zh-hant-tw", "zh-Hant-TW", slots=("offer",)))
    return specs


STRINGS = {
    "en": {"greeting": "Hi", "friend": "friend", "unsubscribe": "Unsubscribe"},
    "zh-Hant": {"greeting": "您好", "friend": "朋友"},
    "zh": {"greeting": "你好", "friend": "朋友"},
    "pt": {"greeting": "Oi", "friend": "amigo"},
    "pt-PT": {"greeting": "Olá", "friend": "amigo"},
    "sr": {"greeting": "Здраво", "friend": "пријатељу"},
    "sr-Latn": {"greeting": "Zdravo", "friend": "prijatelju"},
    "es": {"greeting": "Hola", "friend": "amigo"},
}
SUBJECTS = {
    "en": "This week",
    "zh-Hant": "本週精選",
    "zh_CN": "本周精选",
    "pt": "Novidades da semana",
    "pt-PT": "As novidades da semana",
    "sr": "Ове недеље",
    "sr-Latn": "Ove nedelje",
    "es": "Esta semana",
}
# The same locales spelt otherwise: the preheader must follow the subject's choice, whatever the spelling.
PREHEADERS = {
    "en-US": "This week",
    "zh-TW": "本週精選",
    "zh-Hans-CN": "本周精选",
    "pt-BR": "Novidades da semana",
    "pt_PT": "As novidades da semana",
    "sr-Cyrl": "Ове недеље",
    "sr-Latn-RS": "Ove nedelje",
    "es-ES": "Esta semana",
}
PREHEADERS = {locale: f"Preheader: {text}" for locale, text in PREHEADERS.items()}

# customer's locale -> (hero block, offer block or None, subject, greeting, Content-Language)
EXPECTED = {
    "zh-Hant-TW": ("welcome-zh-tw", "card-zh-hant-tw", "本週精選", "您好", "zh-TW"),
    "zh-TW": ("welcome-zh-tw", "card-zh-hant-tw", "本週精選", "您好", "zh-TW"),
    "zh-HK": ("welcome-zh-tw", "card-zh-hant-tw", "本週精選", "您好", "zh-TW"),
    "zh-CN": ("welcome-zh", None, "本周精选", "你好", "zh"),
    "pt-BR": ("welcome-pt", None, "Novidades da semana", "Oi", "pt"),
    "pt-PT": ("welcome-pt-pt", None, "As novidades da semana", "Olá", "pt-PT"),
    "pt-AO": ("welcome-pt-pt", None, "As novidades da semana", "Olá", "pt-PT"),
    "en_US": ("welcome-en", None, "This week", "Hi", "en"),
    "sr-Latn": ("welcome-sr-latn", None, "Ove nedelje", "Zdravo", "sr-Latn"),
    "sr-Cyrl-RS": ("welcome-sr", None, "Ове недеље", "Здраво", "sr"),
    "es-MX": ("welcome-es-419", None, "Esta semana", "Hola", "es-419"),
    "klingon": ("welcome-en", None, "This week", "Hi", "en"),
}


def test_each_customer_gets_blocks_subject_and_phrases_in_one_locale_chosen_by_cldr(
    session, engine, tmp_path, smtp_server
):
    report = import_pack(session, write_pack(tmp_path / "pack", _blocks(), strings=STRINGS))
    session.commit()
    assert not report.problems
    people = [
        {"email": f"c{i}@example.com", "first_name": f"N{i}", "locale": locale} for i, locale in enumerate(EXPECTED)
    ]
    add_contacts(session, [dict(p) for p in people])
    campaign = add_campaign(session, subject=SUBJECTS, preheader=PREHEADERS)
    run = start_run(session, campaign.id)
    session.commit()
    execute_run(worker_config(engine, tmp_path, smtp_server.url), run.id)
    session.expire_all()

    keys = dict(session.execute(select(BlockVersion.id, Block.key).join(Block)).all())
    shown = dict(session.execute(select(Delivery.email, Delivery.blocks)).all())
    received = {rcpt: parse(envelope.content) for envelope in smtp_server.messages for rcpt in envelope.rcpt_tos}
    got = {}
    for person in people:
        message = received[person["email"]]
        _, html = parts(message)
        document = lxml.html.fromstring(html)
        greeting = document.find_class("greeting")[0].text_content()
        assert greeting.endswith(f" {person['first_name']},")
        preheaders = [text for text in PREHEADERS.values() if text in document.text_content()]
        assert preheaders == [f"Preheader: {message['Subject']}"]
        hero_key, *offer = [keys[version] for version in shown[person["email"]]]
        got[person["locale"]] = (
            hero_key,
            offer[0] if offer else None,
            message["Subject"],
            greeting.rpartition(" ")[0],
            message["Content-Language"],
        )
    assert got == EXPECTED
