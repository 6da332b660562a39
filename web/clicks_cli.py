"""``patron clicks status`` and ``patron clicks drain``: the click journal seen and emptied without serving.

``patron serve`` records journalled clicks itself (docs/responses.md, "The click journal"); these commands
are for an operator who stopped or lost a server and wants its clicks in the database (before a report,
say), or who wants to know why the journal grows. A segment a running server is writing is shown as
``busy`` and left to that server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy.exc import SQLAlchemyError

from delivery.journal import ClickJournal, Drainer, states
from web.db import check_schema
from web.segments_cli import table
from web.tracking.clicks import writer


@click.group("clicks")
def clicks_group():
    """See and record the clicks waiting in the click journal (PATRON_CLICK_JOURNAL)."""


def _directory() -> Path:
    directory = current_app.config.get("PATRON_CLICK_JOURNAL")
    if directory is None:
        raise click.ClickException("the click journal is off (PATRON_CLICK_JOURNAL=off): clicks are recorded at once")
    return Path(directory)


@clicks_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def status_command(as_json: bool):
    """The journal's segments: size, clicks waiting, and whether a running server is writing it (busy)."""
    directory = _directory()
    found = states(directory)
    waiting = sum(state.waiting for state in found)
    if as_json:
        segments = [
            {"file": s.path.name, "bytes": s.size, "recorded_up_to": s.done, "waiting": s.waiting, "busy": s.busy}
            for s in found
        ]
        click.echo(json.dumps({"journal": str(directory), "waiting": waiting, "segments": segments}, indent=2))
        return
    if not found:
        click.echo(f"{directory}: empty, no click is waiting")
        return
    rows = [(s.path.name, f"{s.size:,}", f"{s.waiting:,}", "busy" if s.busy else "closed") for s in found]
    click.echo(table(("segment", "bytes", "waiting", "state"), rows))
    click.echo(f"\n{waiting:,} clicks waiting in {len(found)} segments of {directory}")


@clicks_group.command("drain")
@with_appcontext
def drain_command():
    """Record every click waiting in closed segments now; busy ones are left to the server writing them.

    Exit status 1 when the database refuses them (they stay in the journal).
    """
    directory = _directory()
    try:
        check_schema(current_app.extensions["patron_engine"])
    except SQLAlchemyError as exc:
        first_line = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise click.ClickException(f"cannot reach the database: {first_line}") from None
    found = states(directory)
    waiting = sum(state.waiting for state in found if not state.busy)
    busy = [state for state in found if state.busy]
    bar = click.progressbar(length=max(waiting, 1), label="clicks", file=sys.stderr) if waiting else None
    drainer = Drainer(ClickJournal(directory), writer(current_app), progress=bar.update if bar else None)
    try:
        drainer.drain()
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"the database refused a batch, {drainer.recorded:,} recorded so far; the rest stay in the journal:"
            f" {str(getattr(exc, 'orig', exc)).splitlines()[0]}"
        ) from None
    finally:
        if bar is not None:
            bar.render_finish()
    click.echo(f"recorded {drainer.recorded:,} clicks from {directory}")
    if busy:
        click.echo(f"{len(busy)} segments are being written by a running patron serve, which records them")
