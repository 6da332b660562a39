"""``patron bounces process``: read the bounce mailbox (a Maildir) and apply what it says."""

from __future__ import annotations

import json
import mailbox
import os
import sys
from collections import Counter
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from delivery.bounces import KINDS, BounceResult, process_message
from delivery.dsn import MAX_BYTES
from delivery.tracking import LinkSigner
from segments.db import first_line
from web.db import get_session

PROCESSED_FOLDER = "processed"  # Maildir++ sub-folder (.processed) that --move-processed moves messages to


@click.group("bounces")
def bounces_group():
    """Process bounces, complaints and mailto unsubscribes from the bounce mailbox."""


@bounces_group.command("process")
@click.option("--maildir", "path", required=True, type=click.Path(path_type=Path), help="The bounce Maildir.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per message.")
@click.option(
    "--move-processed",
    is_flag=True,
    help=f"Move each applied message to the Maildir folder .{PROCESSED_FOLDER} (unrecognized ones stay).",
)
@with_appcontext
def process_command(path: Path, as_json: bool, move_processed: bool):
    """Classify every message in the Maildir's new/ and cur/ (hard, soft, complaint, auto_reply, ...).

    Each message is committed on its own: one that cannot be processed is reported and the rest go on.
    Exit status 1 if any could not be processed.
    """
    box = _open(path)
    settings = current_app.config["PATRON_SETTINGS"]
    signer = LinkSigner(
        current_app.config["SECRET_KEY"],
        current_app.config["PATRON_BASE_URL"],
        settings.old_secret_keys,
        bounce_domain=settings.bounce_domain,
    )
    keys = sorted(box.iterkeys())
    names = _file_names(path, box.colon)
    session = get_session()
    counts: Counter[str] = Counter()
    rows = []
    bar = None
    if not as_json and sys.stderr.isatty() and len(keys) > 100:
        bar = click.progressbar(length=len(keys), label="messages", file=sys.stderr)
    for key in keys:
        result = _process_one(session, box, key, names.get(key, key), signer, settings)
        counts[result.kind] += 1
        if move_processed and result.kind not in ("unrecognized", "error"):
            _move(box, key, path)
        if as_json:
            click.echo(json.dumps(result.as_json()))
        else:
            rows.append(result)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.render_finish()
    if not as_json:
        _print_table(rows, counts)
    if counts["error"]:
        sys.exit(1)


def _open(path: Path) -> mailbox.Maildir:
    """The Maildir at ``path``; one line and exit 1 if it is missing or unreadable."""
    for folder in ("new", "cur"):
        if not (path / folder).is_dir():
            raise click.ClickException(f"{path}: not a Maildir (no {folder}/ folder)")
        if not os.access(path / folder, os.R_OK | os.X_OK):
            raise click.ClickException(f"{path}: cannot read {folder}/ (permission denied)")
    return mailbox.Maildir(path, factory=None, create=False)


def _process_one(session, box: mailbox.Maildir, key: str, name: str, signer: LinkSigner, settings) -> BounceResult:
    """One message read, processed and committed (``name``: its file, for the report); a failure is a result of
    kind ``error``, never a traceback."""
    try:
        with box.get_file(key) as handle:
            raw = handle.read(MAX_BYTES + 1)
    except (OSError, KeyError) as exc:
        return BounceResult(name, "error", reason=f"cannot be read: {exc.__class__.__name__}")
    try:
        result = process_message(
            session,
            raw,
            signer=signer,
            source="maildir",
            name=name,
            soft_limit=settings.soft_bounce_limit,
            soft_days=settings.soft_bounce_days,
        )
        session.commit()
        return result
    except Exception as exc:  # noqa: BLE001  (the database failed this message: report it, go on)
        session.rollback()
        reason = f"not processed: {exc.__class__.__name__}: {first_line(exc)[:200]}"
        return BounceResult(name, "error", reason=reason)


def _file_names(path: Path, colon: str) -> dict[str, str]:
    """Each message key's file, relative to the Maildir (``new/…`` or ``cur/…``): a key is the file's name up to
    the first ``colon`` (``mailbox.Maildir.colon``), where its flags begin."""
    names = {}
    for folder in ("new", "cur"):
        try:
            entries = list(os.scandir(path / folder))
        except OSError:
            continue  # the message is then reported under its key
        for entry in entries:
            names.setdefault(entry.name.split(colon)[0], f"{folder}/{entry.name}")
    return names


def _move(box: mailbox.Maildir, key: str, path: Path) -> None:
    """Move one message to the .processed folder; a failure leaves it where it is (processing is idempotent)."""
    try:
        target = box.add_folder(PROCESSED_FOLDER)
        with box.get_file(key) as handle:
            target.add(handle)
        box.discard(key)
    except (OSError, KeyError) as exc:
        click.echo(f"{path}: could not move {key}: {exc}", err=True)


def _print_table(rows: list[BounceResult], counts: Counter[str]) -> None:
    headers = ("file", "kind", "status", "recipient", "delivery", "note")
    table = [
        (
            row.name or "",
            row.kind,
            row.status or "",
            row.recipient or "",
            "" if row.delivery_id is None else str(row.delivery_id),
            row.reason or "",
        )
        for row in rows
    ]
    widths = [max([len(header), *(len(line[i]) for line in table)]) for i, header in enumerate(headers[:-1])]
    for line in [headers, *table]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])
    summary = ", ".join(f"{counts[kind]} {kind}" for kind in (*KINDS, "error") if counts[kind])
    click.echo(f"{len(rows)} messages: {summary or 'none'}")
