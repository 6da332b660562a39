"""``patron segments``: save, count, preview and list segments from the command line.

A segment is given either by the NAME it was saved under or as a rules file
(``--rules FILE``, JSON or YAML; see docs/segments.md). Counts and previews
are computed now, with the interest half-life from the settings.
"""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext

from segments.compiler import count_contacts, preview_contacts
from segments.db import utcnow
from segments.rules import Rule, RuleError, load_rules_file
from segments.service import (
    DuplicateSegment,
    SegmentError,
    checked_name,
    create_segment,
    get_segment_by_name,
    list_segments,
    save_segment,
    segment_rule,
)
from web.db import get_session

CELL_WIDTH = 40

rules_option = click.option(
    "--rules",
    "rules_path",
    type=click.Path(exists=True, dir_okay=False),
    help="A rules file, .json, .yaml or .yml.",
)


@click.group("segments")
def segments_group():
    """Save, count and preview segments: rules that select contacts."""


def _name(_ctx, _param, value: str) -> str:
    """A segment NAME as it will be saved: trimmed, one line, no control or invisible characters, within the limit."""
    try:
        return checked_name(value)
    except SegmentError as err:
        raise click.BadParameter(str(err)) from None


@segments_group.command("create")
@click.argument("name", callback=_name)
@click.option(
    "--rules",
    "rules_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The rules file, .json, .yaml or .yml.",
)
@click.option("--description", help="What the segment is for, in words.")
@click.option("--replace", is_flag=True, help="Replace the rules of an existing segment with this name.")
@with_appcontext
def create_command(name, rules_path, description, replace):
    """Save the rules of the --rules file as the segment NAME."""
    rule = _load(rules_path)
    session = get_session()
    try:
        if replace:
            segment = save_segment(session, name, rule, description)
        else:
            segment = create_segment(session, name, rule, description)
    except DuplicateSegment as err:
        raise click.ClickException(f"{err}; add --replace to change its rules") from None
    except SegmentError as err:
        raise click.ClickException(str(err)) from None
    count = _count(rule)
    session.commit()
    click.echo(f"saved segment {segment.name!r}: {count:,} contacts match now")


@segments_group.command("count")
@click.argument("name", required=False)
@rules_option
@click.option("--json", "as_json", is_flag=True, help='Print {"count": N} only.')
@with_appcontext
def count_command(name, rules_path, as_json):
    """Count the contacts in segment NAME, or selected by --rules FILE."""
    count = _count(_resolve(name, rules_path))
    click.echo(json.dumps({"count": count}) if as_json else f"{count:,} contacts")


@segments_group.command("preview")
@click.argument("name", required=False)
@rules_option
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000), help="How many to show.")
@with_appcontext
def preview_command(name, rules_path, limit):
    """Show the first contacts (by id) in segment NAME, or selected by --rules FILE."""
    rule = _resolve(name, rules_path)
    half_life = current_app.config["PATRON_INTEREST_HALF_LIFE_DAYS"]
    session = get_session()
    now = utcnow()
    contacts = preview_contacts(session, rule, limit, now=now, half_life_days=half_life)
    total = count_contacts(session, rule, now=now, half_life_days=half_life)
    rows = [
        (str(c.id), c.email or "", " ".join(part for part in (c.first_name, c.last_name) if part), c.locale or "")
        for c in contacts
    ]
    if rows:
        click.echo(table(("id", "email", "name", "locale"), rows))
    click.echo(f"{len(rows):,} of {total:,} contacts shown")


@segments_group.command("list")
@with_appcontext
def list_command():
    """List the saved segments."""
    segments = list_segments(get_session())
    if not segments:
        click.echo("no segments saved yet: `patron segments create NAME --rules FILE` saves one")
        return
    rows = [(s.name, s.updated_at.strftime("%Y-%m-%d %H:%M"), s.description or "") for s in segments]
    click.echo(table(("name", "updated (UTC)", "description"), rows))


def _load(path: str) -> Rule:
    try:
        return load_rules_file(path)
    except RuleError as err:
        raise click.ClickException(str(err)) from None


def _resolve(name: str | None, rules_path: str | None) -> Rule:
    """The rule a command works on: a saved segment's, or a file's."""
    if (name is None) == (rules_path is None):
        raise click.UsageError("give a segment NAME or --rules FILE (one of them)")
    if rules_path is not None:
        return _load(rules_path)
    segment = get_segment_by_name(get_session(), name)
    if segment is None:
        raise click.ClickException(f"no segment named {name!r}; `patron segments list` shows the saved ones")
    try:
        return segment_rule(segment)
    except RuleError as err:
        raise click.ClickException(str(err)) from None


def _count(rule: Rule) -> int:
    half_life = current_app.config["PATRON_INTEREST_HALF_LIFE_DAYS"]
    return count_contacts(get_session(), rule, now=utcnow(), half_life_days=half_life)


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Rows as aligned columns under their headers; long cells are cut with an ellipsis."""
    rows = [tuple(_cell(value) for value in row) for row in rows]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in [headers, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _cell(value: str) -> str:
    value = " ".join(value.split())  # a newline in a name must not break the table
    return value if len(value) <= CELL_WIDTH else value[: CELL_WIDTH - 1] + "…"
