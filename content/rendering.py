"""Sandboxed rendering: templates compiled once per version, rendered once per recipient.

Everything a pack or a marketer writes renders in Jinja's immutable sandbox
with HTML autoescaping. The expensive work happens once per layout/block
version, in ``compile_part``: premailer inlines the CSS (the Jinja tags are
masked first so the HTML parser leaves them alone), every ``http(s)`` link
becomes a call to the ``link`` function of the render context so each
recipient gets their own signed tracking URL, a text version is derived when
the pack has none, and both are compiled to templates. ``render`` then runs a
compiled template for one recipient within an output-size cap and a time
budget.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import islice

import premailer
from jinja2 import ChainableUndefined, Template, TemplateError, Undefined, pass_context
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from lxml import html as lxml_html
from markupsafe import Markup

from content.text import html_to_text

MAX_OUTPUT_BYTES = 512 * 1024
TIME_BUDGET_SECONDS = 2.0
_CHECK_EVERY = 256  # template chunks joined between checks of the size cap and the clock

_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_MASK = re.compile(r"ptjx(\d{5})x")
_TRACKED_SCHEMES = ("http://", "https://")
# Classes stay (media queries in the head still need them); nothing is fetched.
PREMAILER_OPTIONS = {
    "keep_style_tags": False,
    "remove_classes": False,
    "strip_important": False,
    "allow_network": False,
    "disable_validation": True,
    "cssutils_logging_level": logging.CRITICAL,
}
_TEXT_URL = re.compile(r"https?://[^\s<>\"'{}]+[^\s<>\"'{}.,;:!?)\]]")


class RenderError(Exception):
    """One recipient's email could not be rendered; the run records it and goes on."""


def fallback(value, default=""):
    """The merge field, or ``default`` when it is missing, None or blank."""
    if isinstance(value, Undefined) or value is None or (isinstance(value, str) and not value.strip()):
        return default
    return value


@pass_context
def track(context, url) -> str:
    """A link built from merge fields, as the recipient's signed tracking URL (``track_url`` in the context)."""
    url = url.unescape() if isinstance(url, Markup) else str(url)
    return context["track_url"](url.strip(), context.get("block_version"))


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, where touching an unsafe attribute is an error rather than an empty string.

    Jinja's sandbox answers ``{{ ''.__class__ }}`` with an undefined value that
    prints as nothing; a template that tries it should fail loudly instead.
    """

    def unsafe_undefined(self, obj, attribute):
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = _Sandbox(autoescape=autoescape, undefined=ChainableUndefined, auto_reload=False)
    env.filters["fallback"] = fallback
    env.filters["track"] = track
    return env


@cache
def html_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox for HTML: autoescaping on."""
    return _environment(True)


@cache
def text_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox for text parts and subjects: no HTML escaping."""
    return _environment(False)


def check_template(source: str, *, text: bool = False) -> None:
    """Raise ``jinja2.TemplateSyntaxError`` (with its line) if ``source`` does not compile."""
    (text_environment() if text else html_environment()).parse(source)


def compile_text(source: str) -> Template | str:
    """A one-line text template (subject, preheader) compiled in the sandbox, or the text itself if it has no tags."""
    return text_environment().from_string(source) if _JINJA_TAG.search(source) else source


# Between the HTML and the text in a part's one template. It holds a '<', so a
# merge field (escaped in the HTML) can never fake it.
_TEXT_PART = "\x1f<patron:text>\x1f"


@dataclass
class CompiledPart:
    """A layout or block version ready to render: one template for HTML and text, and the links it tracks.

    HTML and text render in one pass (half the per-render overhead, which
    dominates for small blocks); the text half turns autoescaping off and
    reads ``text_slots`` as its ``slots``.
    """

    template: Template
    links: tuple[str, ...]


@dataclass
class Inliner:
    """premailer behind a cache: one call per (version, CSS), however many recipients."""

    calls: int = 0
    _cache: dict = field(default_factory=dict)

    def inline(self, key, source: str, css: str, *, fragment: bool) -> str:
        """``source`` with ``css`` inlined into style attributes; Jinja tags come back untouched."""
        cache_key = (key, css)
        if cache_key not in self._cache:
            self.calls += 1
            self._cache[cache_key] = inline_css(source, css, fragment=fragment)
        return self._cache[cache_key]


def compile_part(
    inlined: str,
    text_source: str | None,
    *,
    fragment: bool,
    register_links: Callable[[Sequence[str]], Sequence[int]],
) -> CompiledPart:
    """Templates for an inlined version: links rewritten to ``link(id)`` calls, text derived if absent."""
    masked, tags = _mask(inlined)
    tree = _parse(masked, fragment=fragment)
    urls = _static_links(tree, tags)
    ids = dict(zip(urls, register_links(urls))) if urls else {}
    for anchor in tree.iter("a"):
        href = (anchor.get("href") or "").strip()
        if href in ids:
            anchor.set("href", _add_tag(tags, _link_call(ids[href])))
        elif _MASK.search(href) and _unmask(href, tags).startswith(_TRACKED_SCHEMES):
            # A link built from merge fields: registered when it is rendered.
            anchor.set("href", _add_tag(tags, "{% filter track %}" + _unmask(href, tags) + "{% endfilter %}"))
    html_source = _unmask(_serialize(tree, fragment=fragment), tags)
    if text_source is None:
        text_source = _unmask(html_to_text(tree), tags)
    else:
        text_source, text_urls = _track_text_links(text_source, register_links)
        urls.extend(url for url in text_urls if url not in ids)
    text_source = (
        "{% autoescape false %}{% with slots = text_slots %}" + text_source + "{% endwith %}{% endautoescape %}"
    )
    return CompiledPart(
        template=html_environment().from_string(html_source + _TEXT_PART + text_source), links=tuple(urls)
    )


def render_part(part: CompiledPart, context: dict, budget: Budget) -> tuple[Markup, str]:
    """The part's HTML (safe to put in another template) and text, for one recipient."""
    html, _, text = render(part.template, context, budget).partition(_TEXT_PART)
    return Markup(html), text


def _link_call(link_id: int) -> str:
    return "{{ link(" + str(link_id) + ") }}"


def _track_text_links(source: str, register_links) -> tuple[str, list[str]]:
    """A hand-written text part with its fixed URLs turned into ``link(id)`` calls."""
    masked, tags = _mask(source)
    urls = list(dict.fromkeys(m.group(0) for m in _TEXT_URL.finditer(masked) if not _MASK.search(m.group(0))))
    if not urls:
        return source, []
    ids = dict(zip(urls, register_links(urls)))
    masked = _TEXT_URL.sub(lambda m: _link_call(ids[m.group(0)]) if m.group(0) in ids else m.group(0), masked)
    return _unmask(masked, tags), urls


class Budget:
    """What one recipient's render may still spend: bytes of output and seconds."""

    __slots__ = ("remaining", "deadline")

    def __init__(self, max_bytes: int = MAX_OUTPUT_BYTES, seconds: float = TIME_BUDGET_SECONDS):
        self.remaining = max_bytes
        self.deadline = time.perf_counter() + seconds


def render_context(**values) -> dict:
    """A render context: the sandbox's globals (``range``, ``dict`` …) plus ``values``, built once per recipient."""
    return {**html_environment().globals, **values}


def render(template: Template | str, context: dict, budget: Budget) -> str:
    """Render for one recipient; RenderError when it fails, outgrows or outlasts the budget."""
    if isinstance(template, str):
        return template
    if "range" not in context:
        context = render_context(**context)
    pieces = []
    try:
        # Shared: the context is used as it is, not copied for every template of the email.
        chunks = template.root_render_func(template.new_context(context, shared=True))
        while batch := list(islice(chunks, _CHECK_EVERY)):
            piece = "".join(batch)
            pieces.append(piece)
            budget.remaining -= len(piece)
            if budget.remaining < 0:
                raise RenderError(f"the rendered email is larger than {MAX_OUTPUT_BYTES // 1024} KB")
            if time.perf_counter() > budget.deadline:
                raise RenderError(f"rendering took longer than {TIME_BUDGET_SECONDS:g} s")
    except RenderError:
        raise
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from None
    return "".join(pieces)


def inline_css(source: str, css: str, *, fragment: bool) -> str:
    """One premailer pass: ``css`` inlined into ``source``, whose Jinja tags are left as they are."""
    masked, tags = _mask(source)
    inlined = premailer.Premailer(masked, css_text=css or None, **PREMAILER_OPTIONS).transform()
    if fragment:
        body = lxml_html.document_fromstring(inlined).body
        inlined = _serialize(body, fragment=True)
    return _unmask(inlined, tags)


def _mask(source: str) -> tuple[str, list[str]]:
    """Replace each Jinja tag by an inert word the HTML parser and premailer leave alone."""
    tags: list[str] = []

    def hide(match: re.Match) -> str:
        tags.append(match.group(0))
        return f"ptjx{len(tags) - 1:05d}x"

    return _JINJA_TAG.sub(hide, source), tags


def _add_tag(tags: list[str], tag: str) -> str:
    tags.append(tag)
    return f"ptjx{len(tags) - 1:05d}x"


def _unmask(masked: str, tags: list[str]) -> str:
    return _MASK.sub(lambda m: tags[int(m.group(1))], masked)


def _parse(masked: str, *, fragment: bool):
    if fragment:
        return lxml_html.fragment_fromstring(masked, create_parent="div")
    return lxml_html.document_fromstring(masked)


def _serialize(tree, *, fragment: bool) -> str:
    if not fragment:
        return lxml_html.tostring(tree, encoding="unicode", doctype="<!DOCTYPE html>")
    inner = [tree.text or ""] if tree.text else []
    inner.extend(lxml_html.tostring(child, encoding="unicode") for child in tree)
    return "".join(inner)


def _static_links(tree, tags: list[str]) -> list[str]:
    """The distinct fixed http(s) URLs of the part's anchors, in document order."""
    seen: dict[str, None] = {}
    for anchor in tree.iter("a"):
        href = (anchor.get("href") or "").strip()
        if href.startswith(_TRACKED_SCHEMES) and not _MASK.search(href):
            seen.setdefault(href, None)
    return list(seen)
