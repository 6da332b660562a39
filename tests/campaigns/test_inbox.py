"""What arrives in the inbox, read as the recipient's mail client reads it.

Two fault kinds live here, each tested on sent messages parsed with the stdlib
email parser and their HTML parsed with lxml:

- markup Patron adds (the open pixel, a preheader, ``<html lang>``) arrives as
  elements, never as escaped text;
- a missing merge field (None in the database, an absent attribute, an
  undefined name) prints as its fallback or as nothing, never "None".
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import cssutils
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from lxml import html as lxml_html

from campaigns.executors import execute_run
from campaigns.runs import start_run
from content.packs import import_pack
from content.rendering import Budget, compile_text, render, render_context
from tests.campaigns.conftest import (
    BASE_URL,
    add_campaign,
    add_contacts,
    pack_blocks,
    parse,
    parts,
    worker_config,
)
from tests.conftest import empty_tables
from tests.packs import LAYOUT, block, write_pack

_TAG_IN_TEXT = re.compile(r"<[A-Za-z!/?]")


def send_to_outbox(session, engine, tmp_path: Path, campaign_id: int) -> dict[str, object]:
    """Run the campaign into a fresh outbox; the parsed messages by recipient."""
    run = start_run(session, campaign_id)
    session.commit()
    outbox = tmp_path / "outbox" / uuid.uuid4().hex
    execute_run(worker_config(engine, tmp_path, f"outbox://{outbox}"), run.id)
    session.expire_all()
    messages = [parse(path.read_bytes()) for path in (outbox / "new").iterdir()]
    return {message["To"].addresses[0].addr_spec: message for message in messages}


def html_tree(message):
    return lxml_html.document_fromstring(parts(message)[1])


def text_nodes(tree) -> list[str]:
    """Every piece of text a mail client shows or keeps: element text and tails (comments, scripts aside)."""
    found = []
    for element in tree.iter():
        if isinstance(element.tag, str) and element.tag not in ("style", "script") and element.text:
            found.append(element.text)
        if element.tail:
            found.append(element.tail)
    return found


def import_test_pack(session, tmp_path: Path, *, layout: str = LAYOUT, blocks=None) -> None:
    report = import_pack(session, write_pack(tmp_path / "pack", blocks or pack_blocks(), layout=layout))
    session.commit()
    assert not report.problems


# -- markup Patron adds is markup ------------------------------------------------------------------

PEOPLE = [
    {"email": "ana@example.com", "first_name": "Ana", "locale": "es-MX", "interests": {"pizza": 5}},
    {"email": "bob@example.com", "first_name": "Bob", "locale": "en", "interests": {"pasta": 4}},
    {"email": "chloe@example.com", "first_name": "Chloé", "locale": "fr"},
    {"email": "jose@example.com", "first_name": "José", "last_name": "Müller-Ñúñez", "locale": "es"},
]
# The language each one reads: es-MX falls back to es, fr (which the pack lacks) to the default, en.
LANGUAGE = {"ana@example.com": "es", "bob@example.com": "en", "chloe@example.com": "en", "jose@example.com": "es"}


def test_the_open_pixel_is_an_image_and_no_text_holds_a_tag(session, engine, tmp_path):
    import_test_pack(session, tmp_path)
    add_contacts(session, [dict(p) for p in PEOPLE])
    received = send_to_outbox(session, engine, tmp_path, add_campaign(session).id)

    assert sorted(received) == sorted(LANGUAGE)
    for address, message in received.items():
        tree = html_tree(message)
        pixels = [img for img in tree.iter("img") if "/o/" in img.get("src", "")]
        assert len(pixels) == 1, address
        (pixel,) = pixels
        assert pixel.get("src").startswith(f"{BASE_URL}/o/") and pixel.get("src").endswith(".gif")
        assert (pixel.get("width"), pixel.get("height"), pixel.get("alt")) == ("1", "1", "")
        assert pixel.getparent().tag == "body"
        assert [t for t in text_nodes(tree) if _TAG_IN_TEXT.search(t)] == []
        assert tree.get("lang") == LANGUAGE[address]


def test_html_lang_is_the_language_sent_even_where_the_layout_says_another(session, engine, tmp_path):
    layout = LAYOUT.replace("<html>", '<html lang="en">')
    import_test_pack(session, tmp_path, layout=layout)
    add_contacts(session, [dict(p) for p in PEOPLE])
    received = send_to_outbox(session, engine, tmp_path, add_campaign(session).id)
    assert {address: html_tree(m).get("lang") for address, m in received.items()} == LANGUAGE


def test_a_layout_without_a_preheader_gets_it_hidden_first_in_the_body(session, engine, tmp_path):
    layout = LAYOUT.replace('<div class="preheader" style="display:none">{{ preheader }}</div>', "")
    assert "preheader" not in layout
    import_test_pack(session, tmp_path, layout=layout)
    add_contacts(session, [dict(PEOPLE[1])])
    received = send_to_outbox(session, engine, tmp_path, add_campaign(session, preheader="Fresh picks").id)

    tree = html_tree(received["bob@example.com"])
    first = tree.body[0]
    assert first.tag == "div" and first.text_content() == "Fresh picks"
    assert "display:none" in first.get("style").replace(" ", "")
    assert [t for t in text_nodes(tree) if _TAG_IN_TEXT.search(t)] == []
    # Where the layout places {{ preheader }} itself, it is not added a second time.
    import_test_pack(session, tmp_path)
    received = send_to_outbox(session, engine, tmp_path, add_campaign(session, name="Again").id)
    body = html_tree(received["bob@example.com"]).body
    assert [e.text_content() for e in body.iter("div") if e.text_content() == "Fresh picks"] == ["Fresh picks"]


# -- no value prints as "None" ---------------------------------------------------------------------

CONTEXT = {"unsubscribe_url": "https://patron.example/u/1", "strings": {}, "campaign": {"name": "Weekly"}}


def text_render(source: str, **contact) -> str:
    return render(compile_text(source), render_context(**CONTEXT, contact=contact), Budget())


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Hi {{ contact.first_name }}, deals", "Hi , deals"),
        ("Dear {{ contact.first_name }} {{ contact.last_name }}", "Dear  "),
        ("Dear {{ contact.first_name | fallback('friend') }}", "Dear friend"),
        ("Dear {{ contact.first_name | default('friend') }}", "Dear friend"),
        ("Dear {{ contact.first_name | default('friend', true) }}", "Dear friend"),
        ("{{ contact.first_name ~ ' ' ~ contact.last_name }}|", " |"),
        ("{{ contact.first_name | upper }}{{ contact.last_name | title }}|", "|"),
        ("{{ contact.attributes.city }}{{ contact.attributes['tier'] }}|", "|"),
        ("{{ contact.attributes.city.name | default('town') }}", "town"),
        ("{{ contact.attributes.get('city') | default('town') }}", "town"),
        ("{{ contact.nickname | fallback('pal') }} {{ nosuchthing }}|", "pal |"),
        ("{% if contact.first_name %}Hi {{ contact.first_name }}{% else %}Hello{% endif %}", "Hello"),
        ("{% set name = contact.first_name %}{{ name }}|{{ name | string }}|", "||"),
        ("{{ contact.first_name | default(none) }}|{{ none }}|", "||"),
    ],
)
def test_a_missing_value_prints_as_its_fallback_or_nothing(source, expected):
    assert text_render(source, first_name=None, last_name=None, attributes={"city": None}) == expected


def test_present_values_still_print():
    source = "{{ contact.first_name | default('friend') }} {{ contact.attributes.city | fallback('town') }}"
    assert text_render(source, first_name="Ana", attributes={"city": "Lyon"}) == "Ana Lyon"
    assert text_render("{{ contact.attributes.count }}|{{ contact.vip }}", attributes={"count": 0}, vip=False) == (
        "0|False"
    )


NONE_LAYOUT = """<!DOCTYPE html>
<html><head><title>{{ subject }}</title></head>
<body><div class="preheader" style="display:none">{{ preheader }}</div>
<p class="dear">Dear {{ contact.first_name }} {{ contact.last_name }},</p>
<p class="hi">Hi {{ contact.first_name | fallback('friend') }}, {{ contact.attributes.city | default('your town') }}</p>
<p class="tier" title="{{ contact.attributes.tier }}" style="color: {{ contact.attributes.color | fallback('#333') }}">
{{ contact.attributes.tier | upper }} {{ contact.first_name ~ ' ' ~ contact.last_name }}
{% if contact.attributes.vip %}VIP {{ contact.attributes.vip }}{% endif %} {{ contact.attributes.get('city') }}</p>
{{ slots.hero }}
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>
"""
NONE_BLOCK = block(
    "greeting",
    interests={"news": 1.0},
    default=True,
    body="<h2>For {{ contact.first_name }}</h2><p>In {{ contact.attributes.city }}"
    " <a href=\"https://shop.example.com/{{ contact.attributes.city | fallback('all') }}\">shop</a></p>",
)
NONE_SUBJECT = "Hi {{ contact.first_name }}, deals in {{ contact.attributes.city }}"
NONE_PREHEADER = "{{ contact.last_name }} {{ contact.attributes.tier | default('') }} picks"


def none_campaign(session, tmp_path):
    import_pack(session, write_pack(tmp_path / "none-pack", [NONE_BLOCK], layout=NONE_LAYOUT, slots=("hero",)))
    session.commit()
    return add_campaign(session, subject=NONE_SUBJECT, preheader=NONE_PREHEADER)


def assert_no_missing_value_shows(message) -> None:
    text, html = parts(message)
    subject = str(message["Subject"])
    tree = lxml_html.document_fromstring(html)
    shown = [subject, text, "".join(text_nodes(tree)), *(v for e in tree.iter() for v in e.attrib.values())]
    for piece in shown:
        for word in ("None", "Undefined", "{{", "{%"):
            assert word not in piece, (word, piece)


def test_a_contact_without_a_name_is_greeted_by_the_fallback_not_none(session, engine, tmp_path):
    campaign = none_campaign(session, tmp_path)
    add_contacts(session, [{"email": "anon@example.com", "interests": {"news": 1}}])
    received = send_to_outbox(session, engine, tmp_path, campaign.id)

    message = received["anon@example.com"]
    assert_no_missing_value_shows(message)
    assert message["Subject"] == "Hi , deals in"
    tree = html_tree(message)
    assert " ".join(tree.find_class("dear")[0].text_content().split()) == "Dear ,"
    assert tree.find_class("hi")[0].text_content() == "Hi friend, your town"
    assert tree.find_class("preheader")[0].text_content() == "picks"
    assert tree.find_class("tier")[0].get("title") == ""
    assert cssutils.parseStyle(tree.find_class("tier")[0].get("style")).getPropertyValue("color") == "#333"
    assert "Hi friend, your town" in parts(message)[0]


def test_preview_of_a_contact_without_a_name_shows_no_none(session, runner, tmp_path):
    campaign = none_campaign(session, tmp_path)
    add_contacts(session, [{"email": "anon@example.com", "attributes": {"city": None}, "interests": {"news": 1}}])
    html_path = tmp_path / "preview.html"
    result = runner.invoke(
        args=["campaigns", "preview", str(campaign.id), "--contact", "anon@example.com", "--html", str(html_path)]
    )
    assert result.exit_code == 0, result.output
    assert "subject: Hi , deals in\n" in result.output
    for word in ("None", "Undefined", "{{"):
        assert word not in result.output
    tree = lxml_html.document_fromstring(html_path.read_text(encoding="utf-8"))
    assert tree.find_class("hi")[0].text_content() == "Hi friend, your town"
    assert not [t for t in text_nodes(tree) if "None" in t]


_NAME = st.text(st.characters(categories=["L"]), min_size=1, max_size=10).filter(
    lambda s: "None" not in s and "Undefined" not in s
)
_MISSING = st.sampled_from([None, ""])
_ATTRIBUTES = st.dictionaries(
    st.sampled_from(["city", "tier", "color", "vip"]), st.one_of(_MISSING, _NAME, st.booleans()), max_size=4
)
_CONTACT = st.fixed_dictionaries(
    {
        "first_name": st.one_of(_MISSING, _NAME),
        "last_name": st.one_of(_MISSING, _NAME),
        "locale": st.sampled_from([None, "en", "es", "es-MX", "fr"]),
        "attributes": st.one_of(st.none(), _ATTRIBUTES),
    }
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contacts=st.lists(_CONTACT, min_size=1, max_size=4))
def test_no_message_part_ever_shows_none_undefined_or_a_template_tag(session, engine, tmp_path, contacts):
    empty_tables(engine)
    session.expire_all()
    campaign = none_campaign(session, tmp_path)
    people = [{**c, "email": f"p{i}@example.com", "interests": {"news": 1}} for i, c in enumerate(contacts)]
    add_contacts(session, people)
    received = send_to_outbox(session, engine, tmp_path, campaign.id)
    assert len(received) == len(people)
    for message in received.values():
        assert_no_missing_value_shows(message)
        assert etree.iselement(html_tree(message).body)
