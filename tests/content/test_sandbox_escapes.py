"""Known Jinja sandbox escapes, through Patron's own entry points: each fails the recipient, none leaks.

CVE-2025-27516 (Jinja2 before 3.1.6): the ``|attr`` filter fetched ``str.format`` past the
sandbox's attribute lookup, so ``"{0.__class__}"|attr("format")(x)`` formatted any attribute of
any object, up to ``__globals__`` and code execution. pyproject.toml's floor, ``jinja2>=3.1.6``,
keeps those versions out; these tests fail on them.
"""

from __future__ import annotations

import pytest

from content.rendering import (
    Budget,
    Links,
    RenderError,
    compile_part,
    compile_text,
    render,
    render_context,
    render_part,
)

ESCAPES = [
    '{{ "{0.__class__}"|attr("format")(contact) }}',
    '{{ "{0.__class__.__init__.__globals__}"|attr("format")(cycler) }}',
    '{{ "{x.__class__}"|attr("format_map")({"x": contact}) }}',
    '{% set f = "{0.__class__.__mro__}"|attr("format") %}{{ f(contact) }}',
]
CONTEXT = {
    "contact": {"first_name": "Ana", "last_name": None, "attributes": {}},
    "strings": {},
    "unsubscribe_url": "https://patron.example/u/1/sig",
    "link": Links(lambda link_id: f"https://patron.example/r/1/{link_id}/sig", lambda url, block_version: url),
}


@pytest.mark.parametrize("escape", ESCAPES)
def test_attr_format_escapes_fail_in_a_subject(escape):
    with pytest.raises(RenderError, match="unsafe"):
        render(compile_text(f"Hello {escape}"), render_context(**CONTEXT), Budget())


@pytest.mark.parametrize("escape", ESCAPES)
def test_attr_format_escapes_fail_in_a_block(escape):
    part = compile_part(f"<p>{escape}</p>", None, fragment=True, register_links=lambda urls: [])
    with pytest.raises(RenderError, match="unsafe"):
        render_part(part, dict(CONTEXT), Budget())


def test_plain_format_through_attr_still_works():
    """The fix is in the attribute lookup, not a ban on the filter: formatting plain values goes on."""
    template = compile_text('{{ "{0} and {1}"|attr("format")(contact.first_name, 2) }}')
    assert render(template, render_context(**CONTEXT), Budget()) == "Ana and 2"
