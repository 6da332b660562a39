"""Rendering in the sandbox: escapes fail, limits hold, CSS is inlined once per version."""

from __future__ import annotations

import pytest
from lxml import html as lxml_html

from content.rendering import Budget, Inliner, Links, RenderError, compile_part, render_part

CSS = "p { color: #333; } .button { background: #b3261e; }"
CONTEXT = {
    "contact": {"first_name": "Ana", "last_name": None, "attributes": {}},
    "strings": {},
    "unsubscribe_url": "https://patron.example/u/1/sig",
    "link": Links(
        lambda link_id: f"https://patron.example/r/1/{link_id}/sig",
        lambda url, block_version: f"https://patron.example/dynamic?{url}",
    ),
}


def compiled(html: str, text: str | None = None):
    inlined = Inliner().inline("v1", html, CSS, fragment=True)
    return compile_part(inlined, text, fragment=True, register_links=lambda urls: [7 + i for i in range(len(urls))])


def rendered(html: str, **context) -> str:
    return render_part(compiled(html), {**CONTEXT, **context}, Budget())[0]


def parsed(html: str):
    """The rendered fragment as lxml reads it, under one <div>."""
    return lxml_html.fragment_fromstring(html, create_parent="div")


@pytest.mark.parametrize(
    "escape",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__ }}",
        "{{ contact.__class__.__init__.__globals__ }}",
        "{{ '{0.__class__}'.format(contact) }}",
        "{{ '{x.__class__}'.format_map({'x': contact}) }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{% set x = contact.attributes.update({'a': 1}) %}",
    ],
)
def test_sandbox_escapes_fail_the_recipient_with_an_error(escape):
    with pytest.raises(RenderError):
        rendered(f"<p>{escape}</p>")


def test_merge_fields_are_escaped_and_have_fallbacks():
    html = rendered(
        "<p>Hi {{ contact.first_name | fallback('friend') }} from {{ contact.attributes.city | fallback('town') }}</p>"
    )
    assert parsed(html).text_content() == "Hi Ana from town"
    html = rendered("<p>Hi {{ contact.first_name | fallback('friend') }}</p>", contact={"first_name": "  "})
    assert parsed(html).text_content() == "Hi friend"
    html = rendered("<p>{{ contact.first_name }}</p>", contact={"first_name": "<script>x</script>"})
    tree = parsed(html)
    assert tree.find(".//script") is None and tree.text_content() == "<script>x</script>"


def test_output_cap_and_time_budget_fail_the_recipient():
    with pytest.raises(RenderError, match="larger than"):
        rendered("{% for i in range(90000) %}<p>{{ 'x' * 100 }}</p>{% endfor %}")
    # Under the step limit (900,000 steps), so only the clock can stop it: a tenth of a millisecond is too little.
    slow = "{% for i in range(900) %}{% for j in range(999) %}{{ '' }}{% endfor %}{% endfor %}"
    with pytest.raises(RenderError, match="longer than"):
        render_part(compiled(slow), CONTEXT, Budget(seconds=0.0001))


def test_link_reaches_only_the_links_of_the_part_being_rendered():
    """link(N) of a link another pack or version registered is refused; the part's own links sign as before."""
    part = compiled('<p><a href="https://shop.example.com/a">A</a></p>')  # registers link 7
    assert part.link_ids == frozenset({7})
    own = compile_part("<p>{{ link(7) }}</p>", None, fragment=True, register_links=lambda urls: [])
    with pytest.raises(RenderError, match=r"link\(7\) is not a link of this template"):
        render_part(own, dict(CONTEXT), Budget())  # 7 is another part's link, not this one's
    html, _, _ = render_part(part, dict(CONTEXT), Budget())
    assert [a.get("href") for a in parsed(html).iter("a")] == ["https://patron.example/r/1/7/sig"]
    for reach in ("link._mint(99)", "link._ids", "link._within", "'https://x.example'|track"):
        part = compile_part(f"<p>{{{{ {reach} }}}}</p>", None, fragment=True, register_links=lambda urls: [])
        fake = (lambda i: i) if "track" in reach else CONTEXT["link"]  # |track needs Patron's own link()
        with pytest.raises(RenderError):
            render_part(part, {**CONTEXT, "link": fake}, Budget())


def test_links_become_signed_tracking_calls_and_unsubscribe_is_left_alone():
    part = compiled(
        '<p><a href="https://shop.example.com/a?x=1&amp;y=2">A</a> <a href="mailto:hi@shop.example.com">mail</a>'
        ' <a href="{{ unsubscribe_url }}">stop</a>'
        ' <a href="https://shop.example.com/c/{{ contact.first_name }}">me</a></p>'
    )
    assert part.links == ("https://shop.example.com/a?x=1&y=2",)
    html, _, _ = render_part(part, CONTEXT, Budget())
    assert [a.get("href") for a in parsed(html).iter("a")] == [
        "https://patron.example/r/1/7/sig",
        "mailto:hi@shop.example.com",
        "https://patron.example/u/1/sig",
        "https://patron.example/dynamic?https://shop.example.com/c/Ana",
    ]


def test_css_is_inlined_and_the_text_part_is_derived_from_the_html():
    part = compiled('<h2>Pizza</h2><p>Two for one <a class="button" href="https://shop.example.com/p">Order</a></p>')
    html, text, _ = render_part(part, CONTEXT, Budget())
    tree = parsed(html)
    assert (tree.find("p").get("style"), tree.find(".//a").get("style")) == ("color:#333", "background:#b3261e")
    assert text.startswith("Pizza\n\nTwo for one Order <https://patron.example/r/1/7/sig>")


def test_premailer_runs_once_per_version_whatever_the_recipients(monkeypatch):
    import premailer

    calls = []
    original = premailer.Premailer.transform
    monkeypatch.setattr(
        premailer.Premailer, "transform", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    inliner = Inliner()
    for _ in range(50):
        inliner.inline(("block", 1), "<p>One</p>", CSS, fragment=True)
        inliner.inline(("block", 2), "<p>Two</p>", CSS, fragment=True)
    assert len(calls) == inliner.calls == 2


def test_links_in_a_hand_written_text_part_are_tracked_too():
    inlined = Inliner().inline("v1", '<p><a href="https://shop.example.com/a">A</a></p>', CSS, fragment=True)
    text = "Order: https://shop.example.com/b.\nAgain: https://shop.example.com/a\nStop: {{ unsubscribe_url }}\n"
    part = compile_part(inlined, text, fragment=True, register_links=lambda urls: [7 + i for i in range(len(urls))])
    _, rendered_text, _ = render_part(part, CONTEXT, Budget())
    assert "shop.example.com" not in rendered_text
    assert "Order: https://patron.example/r/1/7/sig." in rendered_text  # the full stop is not part of the URL
    assert "Again: https://patron.example/r/1/8/sig" in rendered_text
    assert "Stop: https://patron.example/u/1/sig" in rendered_text
