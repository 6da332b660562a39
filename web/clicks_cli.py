"""``patron clicks status`` and ``patron clicks drain``: the click journal seen and emptied without serving.

``patron serve`` records journalled clicks itself (docs/responses.md, "The click journal"); these commands
are for an operator who stopped or lost a server and wants its clicks in the database (before a report,
say), or who wants to know why the journal grows. A segment another process holds (a running server
writing it, or a drainer recording it) is shown as ``busy`` and left to that process.
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
from segments.db import first_line
from web.db import check_schema
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
    """The journal's segments: size, clicks waiting, and whether another process holds it (busy: a running
    server writing it, or a drainer recording it)."""
    directory = _directory()
    found = _states(directory)
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
    click.echo(f"{'bytes':>12}  {'waiting':>9}  {'state':6}  segment")
    for s in found:
        click.echo(f"{s.size:>12,}  {s.waiting:>9,}  {'busy' if s.busy else 'closed':6}  {s.path.name}")
    click.echo(f"\n{_count(waiting, 'click')} waiting in {_count(len(found), 'segment')} of {directory}")


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
        raise click.ClickException(f"cannot reach the database: {first_line(exc)}") from None
    found = _states(directory)
    waiting = sum(state.waiting for state in found if not state.busy)
    busy = [state for state in found if state.busy]
    bar = click.progressbar(length=max(waiting, 1), label="clicks", file=sys.stderr) if waiting else None
    drainer = Drainer(ClickJournal(directory), writer(current_app), progress=bar.update if bar else None)
    try:
        drainer.drain()
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"the database refused a batch, {drainer.recorded:,} recorded so far; the rest stay in the journal:"
            f" {first_line(exc)}"
        ) from None
    except OSError as exc:
        raise click.ClickException(
            f"{directory}: cannot read the click journal ({exc.strerror or exc}); {drainer.recorded:,} recorded so far"
        ) from None
    finally:
        if bar is not None:
            bar.render_finish()
    click.echo(f"recorded {_count(drainer.recorded, 'click')} from {directory}")
    if busy:
        click.echo(
            f"{_count(len(busy), 'segment')} held by another process (a running patron serve), which records them"
        )


def _states(directory: Path):
    try:
        return states(directory)
    except OSError as exc:
        raise click.ClickException(f"{directory}: cannot read the click journal ({exc.strerror or exc})") from None


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")
