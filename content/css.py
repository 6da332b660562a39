"""What premailer leaves undone: the cascade inside ``style="…"``, and the CSS an email needs that cannot be inlined.

premailer (which the design keeps) inlines rules well, but on its own it

- merges an element's own ``style="…"`` declaration by declaration, so a Jinja
  tag in it (masked as a word) is cut off from the declarations it guards;
- either copies ``!important`` into ``style`` and into ``width``/``bgcolor``
  attributes, or, stripping it, lets an inline declaration beat an
  ``!important`` rule, which a browser never does;
- keeps a ``<style>``'s ``@media`` and ``:hover`` rules where that ``<style>``
  was (in a block: outside any ``<head>``, so they are lost) and drops
  ``@font-face``, ``@import`` and ``*`` rules.

So ``inline_css`` (in ``rendering``) calls ``set_aside`` before premailer and
``resolve`` after it: each element's style becomes what a browser would compute
(rules, then the element's own declarations, then ``!important`` rules, then
its own ``!important`` ones), written in that order without ``!important``, so
that the ``@media`` rules in the head (which premailer marks ``!important``)
still win on small screens. ``hoist`` gathers what must live in the head.
"""

from __future__ import annotations

import logging
import re

import cssutils
from lxml import etree

ASIDE = "data-patron-style"  # where an element's own style waits while premailer runs
_IMPORTANT = re.compile(r"\s*!\s*important\s*$", re.IGNORECASE)
_SHORT_HEX = re.compile(r"^#([0-9a-f])([0-9a-f])([0-9a-f])$", re.IGNORECASE)
_LENGTH = re.compile(r"^(\d+(?:\.\d+)?)(px|%)?$")
_COLOR = re.compile(r"^(#[0-9a-f]{6}|#[0-9a-f]{3}|[a-z]+)$", re.IGNORECASE)
_CELLS = frozenset(("table", "tr", "td", "th"))
# CSS properties old clients (Outlook, Lotus Notes) only read as HTML attributes: the attribute, the values it
# takes, and the elements HTML gives it to.
_ATTRIBUTES = {
    "text-align": ("align", re.compile(r"^(left|right|center|justify)$", re.I), _CELLS | {"p", "div", "img"}),
    "vertical-align": ("valign", re.compile(r"^(top|middle|bottom|baseline)$", re.I), _CELLS - {"table"}),
    "background-color": ("bgcolor", _COLOR, _CELLS | {"body"}),
    "width": ("width", _LENGTH, _CELLS | {"img"}),
    "height": ("height", _LENGTH, _CELLS | {"img"}),
}
_INLINED_TYPES = (cssutils.css.CSSRule.STYLE_RULE, cssutils.css.CSSRule.MEDIA_RULE)
_IGNORED_TYPES = (cssutils.css.CSSRule.COMMENT, cssutils.css.CSSRule.CHARSET_RULE)

Declaration = tuple[str, str]

cssutils.log.setLevel(logging.CRITICAL)  # as premailer sets it: an agency's odd CSS is kept, not logged


def declarations(style: str) -> tuple[list[Declaration], list[Declaration]]:
    """A style attribute's (normal, important) declarations, as written, in order, ``!important`` removed."""
    normal: list[Declaration] = []
    important: list[Declaration] = []
    for chunk in _split(style):
        name, colon, value = chunk.partition(":")
        name, value = name.strip().lower(), value.strip()
        if not colon or not name or not value:
            continue
        bare = _IMPORTANT.sub("", value)
        (important if bare != value else normal).append((name, bare))
    return normal, important


def _split(style: str) -> list[str]:
    """Declarations split at ';' outside quotes and brackets (a url(…) or a font name may hold one)."""
    chunks, start, depth, quote = [], 0, 0, ""
    for i, char in enumerate(style):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        elif char == ";" and not depth:
            chunks.append(style[start:i])
            start = i + 1
    chunks.append(style[start:])
    return chunks


def set_aside(tree, is_templated) -> None:
    """Move every element's own style out of premailer's reach, and keep the rules premailer would drop.

    A ``<style>`` holding Jinja tags is kept whole, not inlined: CSS parsing would tear its tags apart.
    """
    for element in tree.iter():
        if isinstance(element.tag, str) and "style" in element.attrib:
            element.set(ASIDE, element.attrib.pop("style"))
    for style in list(tree.iter("style")):
        if is_templated(style.text or ""):
            style.set("data-premailer", "ignore")
            continue
        kept = dropped_rules(style.text or "")
        if kept:
            style.addprevious(keep_element(kept))


def keep_element(css: str):
    """A ``<style>`` premailer leaves alone (``data-premailer="ignore"``), holding ``css``."""
    element = etree.Element("style", {"data-premailer": "ignore"})  # premailer removes the attribute
    element.text = css
    return element


def dropped_rules(css: str) -> str:
    """The rules of ``css`` that premailer neither inlines nor keeps: @font-face, @import, @supports, ``*``."""
    kept = []
    for rule in cssutils.parseString(css, validate=False):
        if rule.type in _IGNORED_TYPES:
            continue
        if rule.type not in _INLINED_TYPES or (
            rule.type == rule.STYLE_RULE and any("*" in s.selectorText for s in rule.selectorList)
        ):
            kept.append(rule.cssText)
    return "\n".join(kept)


def resolve(tree, is_templated) -> None:
    """Write each element's style as a browser computes it, and the HTML attributes old clients read."""
    for element in tree.iter():
        if not isinstance(element.tag, str):
            continue
        own = element.attrib.pop(ASIDE, None)
        ruled = element.attrib.pop("style", None)
        if own is None and ruled is None:
            continue
        rule_normal, rule_important = declarations(ruled or "")
        if own is not None and is_templated(own):
            # Its Jinja tags may guard any declaration: the author's text stays whole, between the
            # rules it beats and the !important rules that beat it.
            important_names = {name for name, _ in rule_important}
            head = [d for d in rule_normal if d[0] not in important_names]
            parts = [_join(head), own.strip().removesuffix(";").strip(), _join(rule_important)]
            style = "; ".join(part for part in parts if part)
            static = head + rule_important
        else:
            own_normal, own_important = declarations(own or "")
            static = _cascade([rule_normal, own_normal, rule_important, own_important])
            style = _join(static)
        if style:
            element.set("style", style)
        _set_attributes(element, static)


def _cascade(groups: list[list[Declaration]]) -> list[Declaration]:
    """Declarations from the weakest group to the strongest, each dropped where a stronger group sets it."""
    result = []
    for index, group in enumerate(groups):
        stronger = {name for later in groups[index + 1 :] for name, _ in later}
        result.extend(d for d in group if d[0] not in stronger)
    return result


def _join(items: list[Declaration]) -> str:
    return "; ".join(f"{name}:{value}" for name, value in items)


def _set_attributes(element, items: list[Declaration]) -> None:
    """``width``, ``bgcolor``… from the computed style, where the author wrote none and the value is plain."""
    values = dict(items)  # the last declaration of a property is the one that counts
    for prop, (attribute, allowed, elements) in _ATTRIBUTES.items():
        value = values.get(prop)
        if value is None or element.tag not in elements or attribute in element.attrib or not allowed.match(value):
            continue
        if attribute in ("width", "height"):
            value = value.removesuffix("px")
        elif attribute == "bgcolor":
            value = _SHORT_HEX.sub(r"#\1\1\2\2\3\3", value)  # Lotus Notes misreads 3-digit colours
        element.set(attribute, value)


def hoist(body) -> list:
    """Take out of ``body`` what only works in the head: ``<style>`` elements and conditional comments holding one."""
    hoisted = []
    for node in list(body.iter(etree.Comment, "style")):
        if node.tag == "style" or _is_conditional_style(node):
            _detach(node)
            hoisted.append(node)
    return hoisted


def _is_conditional_style(comment) -> bool:
    text = comment.text or ""
    return text.lstrip().startswith("[if") and "<style" in text.lower()


def _detach(node) -> None:
    """Remove ``node`` from its parent, keeping the text that followed it."""
    parent, tail = node.getparent(), node.tail
    if tail:
        previous = node.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    node.tail = None
    parent.remove(node)
