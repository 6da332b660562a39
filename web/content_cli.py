"""``patron content``: bring content packs in and see what is there."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask.cli import with_appcontext
from sqlalchemy import func, select

from content.models import Block, Layout, Pack
from content.packs import PackError, import_pack
from web.db import get_session


@click.group("content")
def content_group():
    """Import content packs: layouts and blocks from an agency."""


def run_pack_import(path: Path):
    """Import the pack at ``path`` and commit; ClickException naming the file when it cannot."""
    session = get_session()
    try:
        report = import_pack(session, path)
    except PackError as exc:
        session.rollback()
        raise click.ClickException(str(exc)) from None
    session.commit()
    return report


def report_line(report) -> str:
    """An import's outcome in one line of words."""
    layouts = ", ".join(f"{n} {what}" for what, n in report.layouts.items() if n)
    blocks = ", ".join(f"{n} {what}" for what, n in report.blocks.items() if n)
    skipped = f"; {len(report.problems)} skipped (why below)" if report.problems else ""
    return f"pack {report.pack!r}: layouts {layouts or 'none'}; blocks {blocks or 'none'}{skipped}"


@content_group.command("import")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@with_appcontext
def import_command(path, as_json):
    """Import the content pack in directory PATH (see docs/content-packs.md)."""
    report = run_pack_import(path)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(report_line(report))
    for problem in report.problems:
        click.echo(f"skipped {problem}", err=True)


@content_group.command("list")
@with_appcontext
def list_command():
    """The packs, their layouts and how many blocks each has, by locale."""
    session = get_session()
    for pack in session.scalars(select(Pack).order_by(Pack.key)):
        layouts = session.scalars(select(Layout.key).where(Layout.pack_id == pack.id).order_by(Layout.key)).all()
        locales = session.execute(
            select(Block.locale, func.count())
            .where(Block.pack_id == pack.id, Block.retired_at.is_(None))
            .group_by(Block.locale)
            .order_by(Block.locale)
        ).all()
        blocks = ", ".join(f"{n} {locale}" for locale, n in locales) or "no blocks"
        click.echo(f"{pack.key}: {pack.name} — layouts {', '.join(layouts)}; blocks {blocks}")
