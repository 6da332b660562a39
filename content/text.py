"""The text part of an email, derived from its HTML when the pack gives none.

Readable in a plain-text mail client: paragraphs and headings on lines of
their own, list items with a dash, a link as "label <url>", an image as its
alt text, and nothing of the head, styles or hidden preheader.
"""

from __future__ import annotations

import re

_BLOCK_TAGS = frozenset(
    "address article aside blockquote div dl dt dd fieldset figcaption figure footer form h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table tbody thead tfoot tr ul".split()
)
_SKIP_TAGS = frozenset(("head", "style", "script", "title", "template"))
_HIDDEN = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n+")


def html_to_text(tree) -> str:
    """Plain text for an lxml HTML tree."""
    out: list[str] = []
    _walk(tree, out)
    text = "".join(out)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"


def _walk(element, out: list[str]) -> None:
    tag = element.tag if isinstance(element.tag, str) else ""
    if tag in _SKIP_TAGS or _HIDDEN.search(element.get("style") or ""):
        _tail(element, out)
        return
    if tag in _BLOCK_TAGS:
        out.append("\n\n" if tag in ("p", "h1", "h2", "h3", "table", "ul", "ol") else "\n")
    if tag == "li":
        out.append("- ")
    if tag == "br":
        out.append("\n")
    elif tag == "img" and element.get("alt"):
        out.append(element.get("alt"))
    elif tag in ("td", "th"):
        out.append(" ")
    if element.text and tag:
        out.append(_flatten(element.text))
    for child in element:
        _walk(child, out)
    if tag == "a":
        href = (element.get("href") or "").strip()
        label = element.text_content().strip()
        if href and not href.startswith("#") and href != label:
            out.append(f" <{href.removeprefix('mailto:')}>")
    if tag in _BLOCK_TAGS:
        out.append("\n")
    _tail(element, out)


def _tail(element, out: list[str]) -> None:
    if element.tail:
        out.append(_flatten(element.tail))


def _flatten(text: str) -> str:
    return text.replace("\n", " ")
