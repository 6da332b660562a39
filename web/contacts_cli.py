"""``patron contacts`` and ``patron events``: bring the audience in from files."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from campaigns.privacy import erase_person, export_person
from segments.imports import FileProblem, RejectsFile, import_contacts, import_events
from segments.imports.values import BadValue
from segments.imports.values import channel as check_channel
from segments.imports.values import email as normalize_email
from segments.suppressions import REASONS, suppress
from web.db import get_session

COMMIT_ROWS = 20_000


def rejects_and_json_options(command):
    """The options every import shares: where rejects go, and a JSON summary."""
    command = click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")(command)
    return click.option(
        "--rejects",
        "rejects_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Where to write rejected records [default: PATH.rejects.csv].",
    )(command)


@click.group("contacts")
def contacts_group():
    """Import and manage contacts."""


@click.group("events")
def events_group():
    """Import events from any channel: point of sale, call centre, web, kiosk."""


def run_import(path: Path, rejects_path: Path | None, importer, bar=None):
    """Run ``importer(session, path, rejects, on_batch)``, committing as it goes; return (summary, rejects file)."""
    session = get_session()
    try:
        rejects = RejectsFile(rejects_path or path.with_name(path.name + ".rejects.csv"))
    except FileProblem as exc:
        raise click.ClickException(str(exc)) from None
    done = {"bytes": 0, "committed_rows": 0}

    def on_batch(summary, bytes_read: int) -> None:
        # Commit every COMMIT_ROWS rows: an interrupted import keeps what it
        # wrote, and running it again picks up the rest without duplicates.
        # Committing less often than every batch writes each index page
        # once for several batches (measured: 15% faster).
        if summary.rows - done["committed_rows"] >= COMMIT_ROWS:
            session.commit()
            done["committed_rows"] = summary.rows
        if bar is not None:
            bar.update(bytes_read - done["bytes"])
            done["bytes"] = bytes_read

    with rejects:
        try:
            summary = importer(session, path, rejects, on_batch)
        except FileProblem as exc:
            session.rollback()
            raise click.ClickException(f"{path}: {exc}") from None
        session.commit()
    return summary, rejects


def summary_line(summary) -> str:
    """An import's counts as one line of words: ``1200 rows, 1200 created, …, 0 rejected (1201 lines)``.

    Counts per column (the values kept over the person's own choices) follow on a line of their own, if any.
    """
    counts = summary.as_dict()
    lines = counts.pop("lines")
    per_column = {key: counts.pop(key) for key, value in list(counts.items()) if isinstance(value, dict)}
    text = ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in counts.items()) + f" ({lines} lines)"
    for key, columns in per_column.items():
        if columns:
            listed = ", ".join(f"{column} {count}" for column, count in sorted(columns.items()))
            text += f"\n{key.replace('_', ' ')} (not changed by the file): {listed}"
    return text


def _run_import(path: Path, rejects_path: Path | None, as_json: bool, label: str, importer) -> None:
    """Run an import with a progress bar on a terminal, then print the summary."""
    with ExitStack() as stack:
        bar = None
        if not as_json and sys.stderr.isatty():
            progress = click.progressbar(length=path.stat().st_size, label=label, file=sys.stderr, show_pos=False)
            bar = stack.enter_context(progress)
        summary, rejects = run_import(path, rejects_path, importer, bar)
    if as_json:
        report = summary.as_dict()
        if rejects.count:
            report["rejects_file"] = str(rejects.path)
        click.echo(json.dumps(report))
        return
    click.echo(summary_line(summary))
    if rejects.count:
        rows = "1 rejected row" if rejects.count == 1 else f"{rejects.count} rejected rows"
        click.echo(f"{rows}, with line numbers and reasons, are in {rejects.path}", err=True)


@contacts_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", default="import", show_default=True, help="Where the rows come from, recorded with consents.")
@rejects_and_json_options
@with_appcontext
def import_contacts_command(path, source, rejects_path, as_json):
    """Create or update contacts from a CSV file (see docs/imports.md)."""
    _run_import(
        path,
        rejects_path,
        as_json,
        "Importing contacts",
        lambda session, file, rejects, on_batch: import_contacts(
            session, file, source=source, rejects=rejects, on_batch=on_batch
        ),
    )


@contacts_group.command("suppress")
@click.argument("emails", nargs=-1, required=True)
@click.option("--reason", type=click.Choice(REASONS), default="manual", show_default=True)
@with_appcontext
def suppress_command(emails, reason):
    """Never send to these addresses again, even if they are re-imported."""
    session = get_session()
    erased = 0
    for raw in emails:
        try:
            address = normalize_email(raw)
        except BadValue as exc:
            raise click.BadParameter(str(exc), param_hint="EMAILS") from None
        erased += suppress(session, address, reason, source="cli") is None
    session.commit()
    click.echo(f"suppressed {len(emails) - erased} address(es): {reason}")
    if erased:
        click.echo(f"{erased} address(es) erased on request: kept out by their digest, not stored again")


def _address(raw: str) -> str:
    try:
        return normalize_email(raw)
    except BadValue as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from None


@contacts_group.command("export")
@click.argument("email")
@with_appcontext
def export_command(email):
    """Print everything held about the person with this EMAIL as one JSON object (see docs/privacy.md)."""
    session = get_session()
    record = export_person(
        session, _address(email), half_life_days=current_app.config["PATRON_INTEREST_HALF_LIFE_DAYS"]
    )
    session.rollback()
    click.echo(json.dumps(record, ensure_ascii=False, indent=2))
    if record["contact"] is None:
        click.echo(f"no contact has the address {record['email']}", err=True)


@contacts_group.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print what was erased as one JSON object.")
@with_appcontext
def erase_command(email, yes, as_json):
    """Erase the person with this EMAIL for good, keeping only a digest so they are never mailed again."""
    address = _address(email)
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException("erasing cannot be undone: confirm with --yes when not on a terminal")
        click.confirm(f"Erase {address} and everything held about them? This cannot be undone", abort=True)
    session = get_session()
    erased = erase_person(session, address)
    session.commit()
    if as_json:
        click.echo(json.dumps(erased.as_dict()))
        return
    who = f"contact {erased.contact}" if erased.contact is not None else "no contact"
    click.echo(
        f"erased {address}: {who}, {erased.events} events, {erased.responses} responses, "
        f"{erased.deliveries_anonymized} deliveries anonymized, {erased.suppressions} suppressions removed; "
        "only the address's SHA-256 digest is kept"
    )


@events_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--channel", required=True, help="The channel the events come from, e.g. pos or call_centre.")
@click.option("--source", help="The system that sent them; events are unique per source and id [default: CHANNEL].")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["csv", "jsonl"]),
    help="File format [default: from the file name: .jsonl/.ndjson is JSON Lines, else CSV].",
)
@rejects_and_json_options
@with_appcontext
def import_events_command(path, channel, source, file_format, rejects_path, as_json):
    """Add events from a CSV or JSON Lines file to contacts' timelines (see docs/imports.md)."""
    file_format = file_format or ("jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "csv")
    try:
        channel = check_channel(channel)
    except BadValue as exc:
        raise click.BadParameter(str(exc), param_hint="--channel") from None
    _run_import(
        path,
        rejects_path,
        as_json,
        "Importing events",
        lambda session, file, rejects, on_batch: import_events(
            session, file, channel=channel, source=source, format=file_format, rejects=rejects, on_batch=on_batch
        ),
    )
