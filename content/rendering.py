"""Sandboxed rendering: templates compiled once per version, rendered once per recipient.

Everything a pack or a marketer writes renders in Jinja's immutable sandbox
with HTML autoescaping. A missing value never prints as "None": a ``None``
attribute, item or call result is undefined (so ``fallback`` and ``default``
apply) and undefined prints as nothing.

The expensive work happens once per layout/block version. ``inline_css`` runs
premailer (the Jinja tags are masked first so the HTML parser leaves them
alone; ``content.css`` fixes the cascade around it and keeps what cannot be
inlined). ``compile_part`` makes every ``http(s)`` link a call to the ``link``
function of the render context so each recipient gets their own signed
tracking URL, derives a text version when the pack has none, adds the markup
Patron puts in every email of a layout (``Additions``) as elements, and
compiles it all to one template. ``render`` then runs a compiled template for
one recipient within a ``Budget`` (``content.bounds``: output size, time, loop
steps and the size of every value, checked before it is made). A template's
``link(id)`` reaches only the links of the part being rendered (``Links``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import islice

import premailer
from jinja2 import ChainableUndefined, Template, TemplateError, Undefined, meta, nodes, pass_context
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from lxml import html as lxml_html
from markupsafe import Markup

from content import bounds
from content import css as cascade
from content.bounds import MAX_OUTPUT_BYTES, TIME_BUDGET_SECONDS, Budget, RenderError  # noqa: F401 (re-exported)
from content.text import html_to_text

# Chunks yielded between checks of the output size and the clock: each chunk is at most MAX_VALUE long (the
# sandbox refuses to print more), so a batch is at most 32 of them.
_CHECK_EVERY = 32
# Globals Jinja offers that an email has no use for (lipsum makes any amount of text).
_REMOVED_GLOBALS = ("lipsum",)

_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_MASK = re.compile(r"ptjx(\d{5})x")
_TRACKED_SCHEMES = ("http://", "https://")
# Classes stay (media queries in the head still need them); nothing is fetched. !important is kept so that
# content.css can see it, and HTML attributes (width, bgcolor…) are written there, from the computed style.
PREMAILER_OPTIONS = {
    "keep_style_tags": False,
    "remove_classes": False,
    "strip_important": False,
    "allow_network": False,
    "disable_validation": True,
    "disable_basic_attributes": ["align", "valign", "bgcolor", "width", "height"],
    "cssutils_logging_level": logging.CRITICAL,
}
# What inline_css returns changes with this number, so a stored result of an older format is never reused.
INLINED_FORMAT = 2
_TEXT_URL = re.compile(r"https?://[^\s<>\"'{}]+[^\s<>\"'{}.,;:!?)\]]")


def fallback(value, default=""):
    """The merge field, or ``default`` when it is missing, None or blank."""
    if isinstance(value, Undefined) or value is None or (isinstance(value, str) and not value.strip()):
        return default
    return value


class Links:
    """``link(id)`` as templates see it: the signed click URL of a link of the part being rendered, and no other.

    ``mint(link_id)`` signs a click URL for the recipient; ``track(url,
    block_version)`` registers a URL built from merge fields and signs it.
    ``render_part`` narrows the links to those its part registered when it was
    compiled (``CompiledPart.link_ids``), so a template's ``link(N)`` cannot
    mint a link of another pack, block or version. What templates cannot
    reach lives in attributes starting with ``_``, which the sandbox refuses.
    """

    __slots__ = ("_mint", "_track", "_ids", "_block_version")

    def __init__(self, mint: Callable[[int], str], track: Callable[[str, int | None], str] | None = None):
        self._mint, self._track = mint, track
        self._ids: frozenset[int] = frozenset()
        self._block_version: int | None = None

    def __call__(self, link_id) -> str:
        if link_id not in self._ids:
            raise SecurityError(f"link({link_id!r}) is not a link of this template")
        return self._mint(link_id)

    def _within(self, part: CompiledPart) -> Links:
        """These links narrowed to ``part``'s own."""
        narrowed = Links(self._mint, self._track)
        narrowed._ids, narrowed._block_version = part.link_ids, part.block_version
        return narrowed


@pass_context
def track(context, url) -> str:
    """A link built from merge fields, as the recipient's signed tracking URL, counted in the part being rendered."""
    links = context.get("link")
    if not isinstance(links, Links) or links._track is None:
        raise SecurityError("links built from merge fields can only be tracked in a campaign's email")
    url = url.unescape() if isinstance(url, Markup) else str(url)
    return links._track(url.strip(), links._block_version)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, where an unsafe attribute is an error and a missing value is undefined.

    Jinja's sandbox answers ``{{ ''.__class__ }}`` with an undefined value that
    prints as nothing; a template that tries it should fail loudly instead.
    A ``None`` (a contact without a first name, a null attribute, ``.get()``
    of an absent key) is as missing as an absent key, so it is undefined too:
    ``fallback`` and ``default`` replace it, ``if`` finds it false, ``~`` and
    filters see an empty string.
    """

    def unsafe_undefined(self, obj, attribute):
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    def getattr(self, obj, attribute):
        value = super().getattr(obj, attribute)
        return self.undefined(obj=obj, name=attribute) if value is None else value

    def getitem(self, obj, argument):
        value = super().getitem(obj, argument)
        return self.undefined(obj=obj, name=argument) if value is None else value

    # Operators that can make large values go through call_binop, which sizes the result first. An
    # intercepted operator is also never computed while the template compiles (Jinja's constant folding).
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            bounds.check_product(left, right)
        elif operator == "+":
            bounds.check_sum(left, right)
        elif operator == "**":
            bounds.check_power(left, right)
        elif isinstance(left, (str, bytes)):  # "%": printf-style formatting
            bounds.check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's own signature)
        method = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        target = getattr(method, "__self__", None)
        bounds.tick(target)  # a call (a macro calling itself, say) is a step of the budget
        if isinstance(target, (str, bytes)):
            listed = bounds.check_str_method(target, getattr(method, "__name__", ""), args, kwargs)
            if listed is not None:
                args = (listed,)
        elif isinstance(__obj, LoopContext) and args:  # loop(children) in a recursive for
            args = (bounds.guard(args[0]), *args[1:])
        value = super().call(__context, __obj, *args, **kwargs)
        return __self.undefined(name=getattr(__obj, "__name__", None)) if value is None else value

    def loop_guard(self, iterable):
        """What every ``{% for %}`` iterates: ``iterable``, counted step by step against the budget."""
        return bounds.guard(iterable)

    @staticmethod
    def concat(pieces) -> str:
        """Captured output (``{% set %}…{% endset %}``, macros, ``{% filter %}``), sized before it is joined."""
        bounds.made(sum(map(len, pieces)), "the captured text")
        return "".join(pieces)

    def joined(self, values, autoescape: bool) -> str:
        """``a ~ b``, sized before it is joined."""
        bounds.made(sum(len(v) if type(v) is str else bounds.printed_size(v) for v in values), "the joined text")
        return markup_join(values) if autoescape else str_join(values)

    def _parse(self, source, name, filename):
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            guard = nodes.EnvironmentAttribute("loop_guard", lineno=loop.iter.lineno)
            loop.iter = nodes.Call(guard, [loop.iter], [], None, None, lineno=loop.iter.lineno)
        return tree


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with ``~`` going through the environment's ``joined``, which sizes it first."""

    def visit_Concat(self, node: nodes.Concat, frame) -> None:
        self.write("environment.joined((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("), context.eval_ctx.autoescape)")


_Sandbox.code_generator_class = _BoundedCodeGenerator


def _printable(value):
    """What an expression prints: ``None`` (a variable set to nothing) as nothing; nothing too large to print."""
    if value is None:
        return ""
    bounds.printed(value, "the printed value")
    return value


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    # optimized=False: no constant folding while compiling (intercepted operators and context filters are never
    # folded anyway); a template's expressions are computed only when it renders, within its budget.
    env = _Sandbox(
        autoescape=autoescape, undefined=ChainableUndefined, auto_reload=False, finalize=_printable, optimized=False
    )
    env.filters["fallback"] = fallback
    env.filters["track"] = track
    env.filters = {name: bounds.bounded_filter(name, func) for name, func in env.filters.items()}
    for name in _REMOVED_GLOBALS:
        env.globals.pop(name, None)
    return env


@cache
def html_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox for HTML: autoescaping on."""
    return _environment(True)


@cache
def text_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox for text parts and subjects: no HTML escaping."""
    return _environment(False)


def variables(source: str) -> set[str]:
    """The context variables an HTML template reads (``preheader``, ``contact`` …)."""
    return meta.find_undeclared_variables(html_environment().parse(source))


def compile_text(source: str) -> Template | str:
    """A one-line text template (subject, preheader) compiled in the sandbox, or the text itself if it has no tags."""
    return text_environment().from_string(source) if _JINJA_TAG.search(source) else source


# Between the head, the HTML and the text in a part's one template. They hold a
# '<', so a merge field (escaped in the HTML) can never fake them.
_HEAD_END = "\x1f<patron:head>\x1f"
_TEXT_PART = "\x1f<patron:text>\x1f"


@dataclass
class CompiledPart:
    """A layout or block version ready to render: one template for HTML and text, and the links it tracks.

    HTML and text render in one pass (half the per-render overhead, which
    dominates for small blocks); the text half turns autoescaping off and
    reads ``text_slots`` as its ``slots``. A block with CSS that cannot be
    inlined (``@media``, ``:hover``, an ``[if mso]`` style) renders that first,
    as its ``head``: the layout puts it in the email's ``<head>``.
    """

    template: Template
    links: tuple[str, ...]
    has_head: bool = False
    link_ids: frozenset[int] = frozenset()  # the ids its ``link(id)`` may reach (see ``Links``)
    block_version: int | None = None  # whose links merge-field URLs become (None: the layout's)


@dataclass(frozen=True)
class Additions:
    """Markup Patron adds to every email of a layout, as Jinja HTML: parsed into elements, never pasted in as text.

    ``lang`` is the ``<html lang>`` value (it replaces the layout's own);
    ``head_end`` goes last in ``<head>``, ``body_start`` and ``body_end`` first
    and last in ``<body>``.
    """

    lang: str = ""
    head_end: str = ""
    body_start: str = ""
    body_end: str = ""


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
    additions: Additions | None = None,
    block_version: int | None = None,
) -> CompiledPart:
    """Templates for an inlined version: links rewritten to ``link(id)`` calls, text derived if absent.

    ``register_links`` gives the ids of URLs; those are the only ids the part's ``link(id)`` reaches.
    """
    registered: set[int] = set()

    def register(urls: Sequence[str]) -> Sequence[int]:
        ids = register_links(urls)
        registered.update(ids)
        return ids

    masked, tags = _mask(inlined)
    tree = _parse(masked, fragment=fragment)
    head = "".join(_tostring(node) for node in cascade.hoist(tree)) if fragment else ""
    urls = _static_links(tree, tags)
    ids = dict(zip(urls, register(urls))) if urls else {}
    for anchor in tree.iter("a"):
        href = (anchor.get("href") or "").strip()
        if href in ids:
            anchor.set("href", _add_tag(tags, _link_call(ids[href])))
        elif _MASK.search(href) and _unmask(href, tags).startswith(_TRACKED_SCHEMES):
            # A link built from merge fields: registered when it is rendered.
            anchor.set("href", _add_tag(tags, "{% filter track %}" + _unmask(href, tags) + "{% endfilter %}"))
    if text_source is None:
        text_source = _unmask(html_to_text(tree), tags)
    else:
        text_source, text_urls = _track_text_links(text_source, register)
        urls.extend(url for url in text_urls if url not in ids)
    text_source = (
        "{% autoescape false %}{% with slots = text_slots %}" + text_source + "{% endwith %}{% endautoescape %}"
    )
    if additions is not None and not fragment:
        _add(tree, additions, tags)
    html_source = _unmask(_serialize(tree, fragment=fragment), tags)
    if head:
        html_source = _unmask(head, tags) + _HEAD_END + html_source
    return CompiledPart(
        template=html_environment().from_string(html_source + _TEXT_PART + text_source),
        links=tuple(urls),
        has_head=bool(head),
        link_ids=frozenset(registered),
        block_version=block_version,
    )


def render_part(part: CompiledPart, context: dict, budget: Budget) -> tuple[Markup, str, Markup]:
    """The part's HTML (safe to put in another template), text and head markup, for one recipient.

    The context's ``link`` (a ``Links``) reaches only the part's own links while the part renders.
    """
    links = context.get("link")
    if isinstance(links, Links):
        context["link"] = links._within(part)  # noqa: SLF001
    try:
        rendered = render(part.template, context, budget)
    finally:
        if isinstance(links, Links):
            context["link"] = links
    head = ""
    if part.has_head:
        head, _, rendered = rendered.partition(_HEAD_END)
    html, _, text = rendered.partition(_TEXT_PART)
    return Markup(html), text, Markup(head)


def _add(tree, additions: Additions, tags: list[str]) -> None:
    """Put Patron's own markup into a layout's tree, as elements."""
    if additions.lang:
        tree.set("lang", _mask(additions.lang, tags)[0])
    _insert(_head(tree), additions.head_end, tags, at_start=False)
    _insert(tree.body, additions.body_start, tags, at_start=True)
    _insert(tree.body, additions.body_end, tags, at_start=False)


def _insert(parent, source: str, tags: list[str], *, at_start: bool) -> None:
    """``source`` (Jinja HTML) parsed and placed first or last in ``parent``."""
    if not source:
        return
    nodes = lxml_html.fragments_fromstring(_mask(source, tags)[0])
    text = nodes.pop(0) if nodes and isinstance(nodes[0], str) else ""
    if at_start:
        rest, parent.text = parent.text or "", text
        for index, node in enumerate(nodes):
            parent.insert(index, node)
        if nodes:
            nodes[-1].tail = (nodes[-1].tail or "") + rest
        else:
            parent.text = text + rest
        return
    if len(parent):
        parent[-1].tail = (parent[-1].tail or "") + text
    else:
        parent.text = (parent.text or "") + text
    parent.extend(nodes)


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


def render_context(**values) -> dict:
    """A render context: the sandbox's globals (``range``, ``dict`` …) plus ``values``, built once per recipient."""
    return {**html_environment().globals, **values}


def render(template: Template | str, context: dict, budget: Budget) -> str:
    """Render for one recipient; RenderError when it fails, outgrows or outlasts the budget.

    The budget (``content.bounds``) holds whether or not the template produces
    output: loops, calls and the size of every value are checked as it runs.
    """
    if isinstance(template, str):
        return template
    if "range" not in context:
        context = render_context(**context)
    pieces = []
    try:
        with bounds.active(budget):
            # Shared: the context is used as it is, not copied for every template of the email.
            chunks = template.root_render_func(template.new_context(context, shared=True))
            while batch := list(islice(chunks, _CHECK_EVERY)):
                piece = "".join(batch)
                pieces.append(piece)
                budget.remaining -= len(piece)
                if budget.remaining < 0:
                    raise RenderError(f"the rendered email is larger than {MAX_OUTPUT_BYTES // 1024} KB")
                budget.check_clock()
    except RenderError:
        raise
    except RecursionError:
        raise RenderError("the template calls itself too deeply") from None
    except MemoryError:
        raise RenderError("the template needs more memory than the machine has") from None
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from None
    return "".join(pieces)


def inline_css(source: str, css: str, *, fragment: bool) -> str:
    """One premailer pass: ``css`` inlined into ``source``, whose Jinja tags are left as they are.

    What cannot be inlined is kept in ``<style>`` elements: a layout's in its
    ``<head>``; a block's (a fragment) at its start, for ``compile_part`` to
    hand to the layout's head.
    """
    masked, tags = _mask(source)
    tree = lxml_html.document_fromstring(f"<html><head></head><body>{masked}</body></html>" if fragment else masked)
    head = _head(tree)
    cascade.set_aside(tree, _MASK.search)
    kept = cascade.dropped_rules(css) if css and not fragment else ""
    if kept:
        head.append(cascade.keep_element(kept))
    premailer.Premailer(tree, css_text=css or None, **PREMAILER_OPTIONS).transform()
    cascade.resolve(tree, _MASK.search)
    hoisted = cascade.hoist(tree.body)
    if fragment:
        inlined = "".join(_tostring(node) for node in hoisted) + _serialize(tree.body, fragment=True)
    else:
        head.extend(hoisted)
        inlined = _serialize(tree, fragment=False)
    return _unmask(inlined, tags)


def _head(tree):
    """The document's ``<head>``, added if the layout has none."""
    head = tree.find("head")
    if head is None:
        head = lxml_html.Element("head")
        tree.insert(0, head)
    return head


def _tostring(node) -> str:
    return lxml_html.tostring(node, encoding="unicode", with_tail=False)


def _mask(source: str, tags: list[str] | None = None) -> tuple[str, list[str]]:
    """Replace each Jinja tag by an inert word the HTML parser and premailer leave alone (numbered on from ``tags``)."""
    tags = [] if tags is None else tags

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
