"""Inlining keeps what email clients need: premailer's known traps, each with a block of its own.

Every case goes through the real path (a pack imported, a campaign previewed
for a contact: the layout and the block inlined, compiled and rendered) and
reads the email with lxml: attribute values, the style declarations a browser
would compute, and the ``<style>`` elements in ``<head>``.
"""

from __future__ import annotations

import hashlib

import cssutils
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from lxml import html as lxml_html

from campaigns.preview import preview
from content.inlining import SharedInliner
from content.models import InlinedPart
from content.packs import import_pack
from content.rendering import Budget, Inliner, compile_part, render_part
from delivery.tracking import LinkSigner
from segments.db import make_session_factory
from tests.campaigns.conftest import BASE_URL, SECRET, add_campaign, add_contacts
from tests.packs import LAYOUT, block, write_pack


def email_for(session, tmp_path, body: str, css: str, *, people=None, layout: str = LAYOUT) -> dict:
    """The rendered email (an lxml tree) per contact, for a pack whose one block is ``body``."""
    root = write_pack(
        tmp_path / "pack", [block("case", interests={"news": 1.0}, default=True, body=body)], layout=layout
    )
    (root / "style.css").write_text(css, encoding="utf-8")
    report = import_pack(session, root)
    session.commit()
    assert not report.problems
    people = people or [{"email": "ana@example.com", "first_name": "Ana"}]
    add_contacts(session, [dict(p) for p in people])
    campaign = add_campaign(session)
    signer = LinkSigner(SECRET, BASE_URL)
    return {
        p["email"]: lxml_html.document_fromstring(
            preview(session, campaign.id, p["email"], signer=signer, half_life_days=30).rendered.html
        )
        for p in people
    }


def computed(element) -> dict[str, str]:
    """The element's style as a browser computes it from the attribute (cssutils: last wins, !important first)."""
    style = cssutils.parseStyle(element.get("style") or "", validate=False)
    return {prop.name: prop.value for prop in style.getProperties()}


def one(tree, class_name: str):
    (element,) = tree.find_class(class_name)
    return element


def head_rules(tree) -> list:
    """Every CSS rule of the ``<style>`` elements in ``<head>``."""
    return [rule for style in tree.find("head").iter("style") for rule in cssutils.parseString(style.text or "")]


def media_selectors(tree, media: str) -> set[str]:
    return {
        inner.selectorText
        for rule in head_rules(tree)
        if rule.type == rule.MEDIA_RULE and rule.media.mediaText == media
        for inner in rule.cssRules
    }


def conditional_comments(element) -> list[str]:
    return [c.text for c in element.iter(etree.Comment) if c.text.lstrip().startswith("[if")]


# -- Jinja tags survive ----------------------------------------------------------------------------

TAGGED = """<p class="note" style="color: #123456; {% if contact.attributes.vip %}font-weight: bold;
 border-top: 1px solid #ab8801;{% endif %} padding-left: 2px">Hi {{ contact.first_name | fallback('friend') }}</p>
<p class="swatch" style="background-color: {{ contact.attributes.color | fallback('#fafafa') }}">colour</p>
<p class="city" title="{{ contact.attributes.city | fallback('all') }}"
 {% if contact.attributes.vip %}data-vip="yes"{% endif %}>{{ contact.attributes.city | fallback('Anywhere') }}</p>
"""
TAGGED_CSS = ".note { color: #999999; margin-top: 0; font-weight: normal; } .swatch { background-color: #000000; }"
VIP = {"email": "vip@example.com", "first_name": "Vi", "attributes": {"vip": True, "color": "#ff0001", "city": "Rome"}}
PLAIN = {"email": "plain@example.com", "first_name": None, "attributes": {}}


def test_jinja_tags_survive_in_text_attributes_and_style_attributes(session, tmp_path):
    emails = email_for(session, tmp_path, TAGGED, TAGGED_CSS, people=[VIP, PLAIN])
    vip, plain = emails["vip@example.com"], emails["plain@example.com"]

    assert one(vip, "note").text_content() == "Hi Vi" and one(plain, "note").text_content() == "Hi friend"
    # The {% if %} inside style="…" still guards its declarations; the element's own colour beats the rule's.
    assert computed(one(vip, "note")) == {
        "margin-top": "0",
        "color": "#123456",
        "font-weight": "bold",
        "border-top": "1px solid #ab8801",
        "padding-left": "2px",
    }
    assert computed(one(plain, "note")) == {
        "margin-top": "0",
        "color": "#123456",
        "font-weight": "normal",
        "padding-left": "2px",
    }
    assert computed(one(vip, "swatch"))["background-color"] == "#ff0001"
    assert computed(one(plain, "swatch"))["background-color"] == "#fafafa"
    # In an attribute's value, and between attributes.
    assert (one(vip, "city").get("title"), one(vip, "city").get("data-vip")) == ("Rome", "yes")
    assert (one(plain, "city").get("title"), one(plain, "city").get("data-vip")) == ("all", None)
    assert one(plain, "city").text_content() == "Anywhere"


# -- !important ------------------------------------------------------------------------------------

IMPORTANT = """<table class="deal"><tr><td class="highlight">Two for one</td></tr></table>
<div class="box" style="height: 10px; color: #123456">Box</div>"""
IMPORTANT_CSS = """
.frame { width: 600px !important; }
.deal { width: 480px !important; }
.highlight { background-color: #fec !important; text-align: center !important; }
.box { height: 40px !important; color: #654321; }
"""


def test_important_never_reaches_an_attribute_and_beats_an_inline_declaration(session, tmp_path):
    tree = email_for(session, tmp_path, IMPORTANT, IMPORTANT_CSS)["ana@example.com"]

    values = [(element.tag, name, value) for element in tree.iter() for name, value in element.attrib.items()]
    assert [v for v in values if "important" in v[2].lower()] == []
    assert one(tree, "frame").get("width") == "600"  # the layout's table
    assert one(tree, "deal").get("width") == "480"  # the block's table
    assert (one(tree, "highlight").get("bgcolor"), one(tree, "highlight").get("align")) == ("#ffeecc", "center")
    # The !important rule wins over the element's own height; its own colour wins over a plain rule.
    assert computed(one(tree, "box")) == {"height": "40px", "color": "#123456"}


_PROPERTIES = ("color", "height", "padding-left")
_VALUES = st.sampled_from(["#123456", "#654321", "7px", "9px"])
_DECLARATIONS = st.dictionaries(st.sampled_from(_PROPERTIES), st.tuples(_VALUES, st.booleans()), max_size=3)


def _css(declarations: dict) -> str:
    return "; ".join(
        f"{name}: {value}{' !important' if important else ''}" for name, (value, important) in declarations.items()
    )


@given(rule=_DECLARATIONS, own=_DECLARATIONS)
def test_the_inlined_style_is_the_cascade_a_browser_computes(rule, own):
    html = f'<p class="x" style="{_css(own)}">x</p>' if own else '<p class="x">x</p>'
    inlined = Inliner().inline(("block", 1), html, f".x {{ {_css(rule)} }}", fragment=True)
    part = compile_part(inlined, None, fragment=True, register_links=lambda urls: [])
    (element,) = lxml_html.fragment_fromstring(render_part(part, {}, Budget())[0], create_parent="div")

    expected = {}
    for name in _PROPERTIES:
        if name in rule and rule[name][1] and not (name in own and own[name][1]):
            expected[name] = rule[name][0]
        elif name in own:
            expected[name] = own[name][0]
        elif name in rule:
            expected[name] = rule[name][0]
    assert computed(element) == expected
    assert "important" not in (element.get("style") or "")


# -- what cannot be inlined goes to the head ---------------------------------------------------------

HEAD_BLOCK = """<style>
@media (max-width: 480px) { .hero-title { font-size: 20px; } }
.hero-link:hover { color: #ff0000; }
.hero-title { color: #0000ab; }
</style>
<!--[if mso]><style>.hero-title { font-family: Arial, sans-serif; }</style><![endif]-->
<h2 class="hero-title">Pizza</h2>
<!--[if mso]><v:rect style="width:200px">Outlook button</v:rect><![endif]-->
<a class="hero-link" href="https://shop.example.com/p">Go</a>"""


def test_a_blocks_own_media_hover_and_mso_styles_are_kept_in_the_head(session, tmp_path):
    tree = email_for(session, tmp_path, HEAD_BLOCK, "h2 { margin: 0; }")["ana@example.com"]
    head, body = tree.find("head"), tree.body

    assert media_selectors(tree, "(max-width: 480px)") == {".hero-title"}
    hover = [r for r in head_rules(tree) if r.type == r.STYLE_RULE and r.selectorText == ".hero-link:hover"]
    assert len(hover) == 1 and hover[0].style.getPropertyValue("color") == "#f00"
    assert [c for c in conditional_comments(head) if ".hero-title" in c] != []
    # Nothing of it is left in the body, except the Outlook markup that belongs there; the rest is inlined.
    assert list(body.iter("style")) == []
    assert [c for c in conditional_comments(body)] == [
        '[if mso]><v:rect style="width:200px">Outlook button</v:rect><![endif]'
    ]
    assert computed(one(tree, "hero-title")) == {"margin": "0", "color": "#0000ab"}


TEMPLATED_STYLE = """<style>.shout { color: {{ contact.attributes.colour | fallback('#123456') }}; }
@media (max-width: 480px) { .shout { font-size: 14px; } }</style>
<p class="shout">Hey</p>"""


def test_a_style_element_holding_a_tag_is_kept_whole_in_the_head_and_rendered_per_recipient(session, tmp_path):
    people = [{"email": "red@example.com", "attributes": {"colour": "#ab0001"}}, {"email": "plain@example.com"}]
    emails = email_for(session, tmp_path, TEMPLATED_STYLE, "p { margin: 0; }", people=people)

    for address, colour in (("red@example.com", "#ab0001"), ("plain@example.com", "#123456")):
        tree = emails[address]
        shout = [r for r in head_rules(tree) if r.type == r.STYLE_RULE and r.selectorText == ".shout"]
        assert [r.style.getPropertyValue("color") for r in shout] == [colour]
        assert media_selectors(tree, "(max-width: 480px)") == {".shout"}
        assert list(tree.body.iter("style")) == []
        assert computed(one(tree, "shout")) == {"margin": "0"}


HEAD_LAYOUT = LAYOUT.replace(
    "<head>",
    "<head><style>a:hover { text-decoration: underline; } @media (max-width: 400px) { .greeting { margin: 0; } }"
    "</style><!--[if mso]><style>table { border-collapse: collapse; }</style><![endif]-->",
)
HEAD_CSS = """@import url("https://fonts.example.com/shop.css");
@font-face { font-family: Shop; src: url(https://shop.example.com/shop.woff2) format("woff2"); }
* { box-sizing: border-box; }
.frame { width: 600px; }
@media (max-width: 620px) { .frame { width: 100% !important; } }"""


def test_the_layouts_and_the_pack_css_rules_that_cannot_be_inlined_are_kept_in_the_head(session, tmp_path):
    tree = email_for(session, tmp_path, "<p>Hello</p>", HEAD_CSS, layout=HEAD_LAYOUT)["ana@example.com"]

    assert media_selectors(tree, "(max-width: 620px)") == {".frame"}
    assert media_selectors(tree, "(max-width: 400px)") == {".greeting"}
    rules = head_rules(tree)
    assert [r.href for r in rules if r.type == r.IMPORT_RULE] == ["https://fonts.example.com/shop.css"]
    assert [r.style.getPropertyValue("font-family") for r in rules if r.type == r.FONT_FACE_RULE] == ["Shop"]
    assert {r.selectorText for r in rules if r.type == r.STYLE_RULE} == {"a:hover", "*"}
    assert [c for c in conditional_comments(tree.find("head")) if "border-collapse" in c] != []
    assert computed(one(tree, "frame"))["width"] == "600px"


# -- the shared cache --------------------------------------------------------------------------------


def test_a_row_inlined_in_an_older_format_is_not_served(engine):
    css = "p { color: #123456; }"
    sessions = make_session_factory(engine)
    with sessions() as session:
        old_digest = hashlib.sha256(css.encode()).hexdigest()
        session.add(InlinedPart(kind="block", version_id=1, css_digest=old_digest, html="<p>stale</p>"))
        session.commit()
    inliner = SharedInliner(sessions)
    html = inliner.inline(("block", 1), "<p>fresh</p>", css, fragment=True)
    assert lxml_html.fragment_fromstring(html).text == "fresh" and inliner.calls == 1
    # The new row is shared: another worker gets it without running premailer.
    other = SharedInliner(sessions)
    assert other.inline(("block", 1), "<p>fresh</p>", css, fragment=True) == html and other.calls == 0
