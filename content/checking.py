"""Static checks of templates: what would fail, or print nothing, for every recipient, found before anyone is sent.

A template is parsed and compiled in the sandbox it is sent with
(``content.rendering``), then its syntax tree is walked for what Jinja lets
through until render time: a filter or test that does not exist (Jinja only
looks those up at compile time outside ``{% if %}``), ``include``/``extends``/
``import`` (pack templates stand alone: there is no loader), and names the
render context does not have. A misspelt merge field renders as nothing, so
``contact.firstname`` is an error that names the nearest real field.

What each kind of template can read is ``template_names``; it mirrors the
render context that ``campaigns.pipeline`` builds. What only rendering finds
(an attribute the sandbox refuses, a call on a missing first name) is
``render_problems``: a subject or preheader rendered for sample contacts.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from jinja2 import TemplateSyntaxError, meta, nodes
from sqlalchemy import select
from sqlalchemy.orm import Session

from content.models import Block, BlockVersion, LayoutVersion, Pack
from content.rendering import (
    Budget,
    Links,
    RenderError,
    compile_text,
    html_environment,
    render,
    render_context,
    text_environment,
)

# The contact as templates see it (campaigns.pipeline.load_profiles); ``attributes`` holds free-form fields.
CONTACT_FIELDS = ("email", "first_name", "last_name", "locale", "timezone", "attributes")
CAMPAIGN_FIELDS = ("name",)
KINDS = ("subject", "preheader", "block", "layout")
# Reading a mapping through its methods (``contact.get('first_name')``) is reading it, not a misspelt field.
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})
_STANDALONE = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
_STANDALONE_MESSAGE = "include, extends and import are not available: each template of a pack stands alone"
# Who a subject or preheader is rendered for before a campaign is accepted: a contact with every field, and one
# with only an address, as many are. Attributes are free-form, so neither has any.
_FULL_CONTACT = {
    "email": "ana.garcia@example.com",
    "first_name": "Ana",
    "last_name": "García",
    "timezone": "Europe/Madrid",
    "attributes": {},
}
_BARE_CONTACT = {**dict.fromkeys(CONTACT_FIELDS), "email": "someone@example.com", "attributes": {}}
_SAMPLES = ((_FULL_CONTACT, ""), (_BARE_CONTACT, " for a contact with only an email address"))
_SAMPLE_URL = "https://patron.invalid/sample"
_REASON_WIDTH = 300  # characters of the sandbox's reason an error line quotes


@dataclass(frozen=True)
class TemplateProblem:
    """One thing wrong with a template, and its line (counted in the template's own source)."""

    message: str
    line: int | None = None


def template_names(
    kind: str, *, phrases: Iterable[str] | None = None, slots: Iterable[str] | None = None
) -> dict[str, frozenset[str] | None]:
    """The names a ``kind`` of template can read: each with its fields, or None where any field goes.

    ``phrases`` are the pack's ``strings`` and ``slots`` the layout's; None when not known yet.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    names: dict[str, frozenset[str] | None] = {
        "contact": frozenset(CONTACT_FIELDS),
        "strings": None if phrases is None else frozenset(phrases),
        "campaign": frozenset(CAMPAIGN_FIELDS),
        "unsubscribe_url": None,
        "preferences_url": None,
        "link": None,
        "language": None,
    }
    if kind in ("preheader", "layout"):
        names["subject"] = None
    if kind == "layout":
        slot_names = None if slots is None else frozenset(slots)
        names.update(preheader=None, slots=slot_names, text_slots=slot_names)
    return names


def check_template(
    source: str,
    kind: str,
    *,
    text: bool = False,
    phrases: Iterable[str] | None = None,
    slots: Iterable[str] | None = None,
) -> list[TemplateProblem]:
    """Everything wrong with ``source`` as a ``kind`` of template (HTML unless ``text``), in line order."""
    names = template_names(kind, phrases=phrases, slots=slots)
    try:
        return _check(source, text_environment() if text else html_environment(), names)
    except RecursionError:  # Jinja's parser and compiler recurse once per level of nesting
        return [TemplateProblem("is nested too deeply to compile (tags or brackets inside one another)")]


def _check(source: str, env, names: dict[str, frozenset[str] | None]) -> list[TemplateProblem]:
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        return [TemplateProblem(exc.message or "does not parse", exc.lineno)]
    problems = _unknown_filters_and_tests(env, tree)
    if not problems:
        try:
            env.compile(env.parse(source))  # whatever else Jinja refuses to compile (a block defined twice …)
        except TemplateSyntaxError as exc:
            problems.append(TemplateProblem(exc.message or "does not compile", exc.lineno))
    if not problems:  # Jinja's scoping (which names a template sets itself) needs a tree that compiles
        problems = _unknown_names(tree, names, env)
    problems += [TemplateProblem(_STANDALONE_MESSAGE, node.lineno) for node in tree.find_all(_STANDALONE)]
    return sorted(problems, key=lambda p: p.line or 0)


def _unknown_filters_and_tests(env, tree: nodes.Template) -> list[TemplateProblem]:
    problems = []
    for node_type, known, what in ((nodes.Filter, env.filters, "filter"), (nodes.Test, env.tests, "test")):
        for node in tree.find_all(node_type):
            if node.name not in known:
                hint = _nearest(node.name, known)
                message = f"no {what} named {node.name!r}" + (f"; did you mean {hint!r}?" if hint else "")
                problems.append(TemplateProblem(message, node.lineno))
    return problems


def _unknown_names(tree: nodes.Template, names: dict[str, frozenset[str] | None], env) -> list[TemplateProblem]:
    undeclared = meta.find_undeclared_variables(tree)
    problems = []
    reported: set[str] = set()
    stored = {node.name for node in tree.find_all(nodes.Name) if node.ctx != "load"}
    calls = {id(node.node) for node in tree.find_all(nodes.Call)}
    for node in tree.find_all((nodes.Name, nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Name):
            if node.ctx == "load" and node.name in undeclared and node.name not in reported:
                if node.name not in names and node.name not in env.globals:
                    reported.add(node.name)
                    problems.append(TemplateProblem(_unknown_name(node.name, names), node.lineno))
            continue
        owner, field = node.node, _field(node)
        if not isinstance(owner, nodes.Name) or field is None or owner.name in stored:
            continue  # a field of a field (contact.attributes.city), a computed key, or a name the template set
        fields = names.get(owner.name)
        if fields is None or field in fields or (field in _MAPPING_METHODS and id(node) in calls):
            continue
        if f"{owner.name}.{field}" not in reported:
            reported.add(f"{owner.name}.{field}")
            problems.append(TemplateProblem(_unknown_field(owner.name, field, fields), node.lineno))
    return problems


def _field(node: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    return None


def _unknown_name(name: str, names: dict) -> str:
    hint = _nearest(name, names)
    if hint:
        return f"{name}: no such name; did you mean {hint}?"
    return f"{name}: no such name; templates here can use {', '.join(sorted(names))}"


_WHAT = {
    "contact": "no such merge field",
    "strings": "no such phrase in the pack's strings",
    "campaign": "no such field of the campaign",
    "slots": "the layout has no such slot",
    "text_slots": "the layout has no such slot",
}


def _unknown_field(name: str, field: str, fields: frozenset[str]) -> str:
    hint = _nearest(field, fields)
    message = f"{name}.{field}: {_WHAT.get(name, 'no such field')}"
    if hint:
        return f"{message}; did you mean {name}.{hint}?"
    listed = ", ".join(f"{name}.{f}" for f in sorted(fields)) or "none"
    return f"{message} (there are: {listed})"


def _nearest(word: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def pack_phrases(pack: Pack) -> set[str]:
    """The names of the pack's phrases, in any locale: what ``strings.<name>`` may read."""
    return {name for strings in (pack.strings or {}).values() for name in strings}


def check_versions(
    session: Session, *, pack_id: int, layout_version_id: int, block_version_ids: Iterable[int]
) -> list[str]:
    """Every problem of stored layout and block versions (as a run would send them), each naming its version."""
    phrases = pack_phrases(session.get(Pack, pack_id))
    layout = session.get(LayoutVersion, layout_version_id)
    parts = [(f"layout {layout.layout.key!r} v{layout.version}", "layout", layout, layout.slots)]
    versions = session.execute(
        select(BlockVersion, Block.key, Block.locale)
        .join(Block, Block.id == BlockVersion.block_id)
        .where(BlockVersion.id.in_(list(block_version_ids)))
        .order_by(BlockVersion.id)
    )
    for version, key, locale in versions:
        where = f"block {key!r} ({locale}) v{version.version}" + (f" from {version.source}" if version.source else "")
        parts.append((where, "block", version, None))
    problems = []
    for where, kind, version, slots in parts:
        for part, source, text in (("HTML", version.html, False), ("text", version.text, True)):
            if source is not None:
                problems += [
                    f"{where}, {part}{f' line {p.line}' if p.line else ''}: template error: {p.message}"
                    for p in check_template(source, kind, text=text, phrases=phrases, slots=slots)
                ]
    return problems


def render_problems(
    source: str,
    *,
    locale: str | None,
    strings: dict[str, str],
    campaign: dict[str, str],
    subject: str | None = None,
) -> list[TemplateProblem]:
    """Why a subject (or, given a sample ``subject``, a preheader) cannot render, as a run would render it.

    ``source`` is rendered in the text sandbox, within a recipient's budget, for a contact with every field
    (in ``locale``) and for one with only an email address, with the phrases ``strings`` of that locale. The
    first that fails gives the one problem, "cannot be rendered[ for …]: <the sandbox's reason>"; [] when both
    render. Run it on a template ``check_template`` passed.
    """
    try:
        template = compile_text(source)
    except TemplateSyntaxError as exc:
        return [TemplateProblem(f"does not compile: {exc.message}", exc.lineno)]
    for contact, who in _SAMPLES:
        values = {**contact, "locale": locale if contact["first_name"] else None}
        context = render_context(
            contact=values,
            strings=strings,
            campaign=campaign,
            unsubscribe_url=_SAMPLE_URL,
            preferences_url=_SAMPLE_URL,
            link=Links(lambda link_id: _SAMPLE_URL, lambda url, block_version: url),  # no link is the subject's
            language=locale or "",
            **({} if subject is None else {"subject": subject}),
        )
        try:
            try:
                render(template, context, Budget())
            except RenderError as exc:
                if not exc.retryable:  # out of time on a busy machine: once more, as a send does
                    raise
                render(template, dict(context), Budget())
        except RenderError as exc:
            reason = str(exc) if len(str(exc)) <= _REASON_WIDTH else str(exc)[:_REASON_WIDTH] + "…"
            return [TemplateProblem(f"cannot be rendered{who}: {reason}")]
    return []
