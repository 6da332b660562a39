"""``patron campaigns``: create a campaign from YAML, list and show campaigns, send, follow and preview them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from jinja2 import TemplateError

from campaigns.definition import CampaignError, load_definition
from campaigns.executors import WorkerConfig, describe, execute_run
from campaigns.models import Run
from campaigns.preview import preview
from campaigns.runs import (
    AlreadySent,
    campaign_detail,
    campaign_summaries,
    cancel,
    claim_ownership,
    create_campaign,
    get_campaign,
    halt_if_abandoned,
    pause,
    prepare_resume,
    resend_unknown,
    start_run,
)
from campaigns.runs import status as run_status
from config import printable
from content.rendering import RenderError
from delivery.tracking import LinkSigner
from web.campaigns_format import (
    LISTED,
    definition_lines,
    failed_lines,
    last_run,
    skipped_line,
    tally,
    to_json,
    when,
)
from web.cli import ID, command_name
from web.db import get_session
from web.reports_cli import report_command
from web.segments_cli import table  # every noun's list reads the same

workers_option = click.option(
    "--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Local worker processes."
)
wait_option = click.option("--wait", is_flag=True, help="Send from this process and show progress until done.")


@click.group("campaigns")
def campaigns_group():
    """Create, send, pause, resume and preview campaigns."""


campaigns_group.add_command(report_command)


def worker_config(workers: int = 1) -> WorkerConfig:
    """The settings a send needs, from the app's configuration."""
    settings = current_app.config["PATRON_SETTINGS"]
    return WorkerConfig(
        database_url=current_app.config["PATRON_DATABASE_URL"],
        delivery_url=current_app.config.get("PATRON_DELIVERY_URL", settings.delivery_url),
        secret_key=current_app.config["SECRET_KEY"],
        base_url=current_app.config["PATRON_BASE_URL"],
        instance_path=current_app.instance_path,
        half_life_days=current_app.config["PATRON_INTEREST_HALF_LIFE_DAYS"],
        workers=workers,
        dkim_selector=settings.dkim_selector,
        dkim_domain=settings.dkim_domain,
        dkim_key_path=str(settings.dkim_key_path) if settings.dkim_key_path else None,
        bounce_domain=settings.bounce_domain,
    )


def _fail(exc: Exception | str):
    """Stop with the error, one problem a line; what it quotes (a template's, a server's words) cannot act."""
    raise click.ClickException("\n".join(map(printable, str(exc).split("\n")))) from None


def _commit(service, *args, **options):
    """Run a campaigns service in this command's session and commit; its error as one line if it refuses."""
    session = get_session()
    try:
        result = service(session, *args, **options)
    except AlreadySent:
        raise  # the command that can send again says how
    except CampaignError as exc:
        _fail(exc)
    session.commit()
    return result


@campaigns_group.command("create")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help='Print {"id": N} only.')
@with_appcontext
def create_command(path, as_json):
    """Create a campaign from the YAML file PATH (see docs/campaigns.md)."""
    try:
        definition = load_definition(path)
    except CampaignError as exc:
        _fail(exc)
    campaign = _commit(create_campaign, definition, str(path))
    click.echo(json.dumps({"id": campaign.id}) if as_json else f"created campaign {campaign.id}: {campaign.name}")


def follow(run_id: int, workers: int) -> None:
    """Send the run from this process, with a progress bar on a terminal; a fault pauses the run, saying why."""
    config = worker_config(workers)
    try:
        if sys.stdout.isatty():
            with click.progressbar(length=1, label=f"run {run_id}", show_pos=True, show_percent=True) as bar:

                def progress(done: int, total: int) -> None:
                    bar.length = max(total, 1)
                    bar.update(done - bar.pos)

                execute_run(config, run_id, progress=progress)
        else:
            execute_run(config, run_id)
    except CampaignError as exc:
        _fail(exc)


def launch(campaign_id: int, run_id: int, workers: int, wait: bool) -> None:
    """Send now in the foreground (``--wait``) or in a detached background process."""
    if wait:
        follow(run_id, workers)
        if _print_status(campaign_id)["state"] == "paused":
            raise click.exceptions.Exit(1)  # the note above says why; a script must not take it for done
        return
    logs = Path(current_app.instance_path) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"run-{run_id}.log"
    config = worker_config(workers)
    # The background process reads the settings this app runs with, whatever set them.
    env = {
        **os.environ,
        "PATRON_INSTANCE_PATH": config.instance_path,
        "PATRON_DATABASE_URL": config.database_url,
        "PATRON_DELIVERY_URL": config.delivery_url,
        "PATRON_SECRET_KEY": config.secret_key,
        "PATRON_BASE_URL": config.base_url,
    }
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "campaigns", "work", str(run_id), "--workers", str(workers)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    # The run is that process's from now on: if it dies, `status` can tell (and pauses the run, saying so).
    _commit(lambda session: claim_ownership(session, session.get(Run, run_id), pid=process.pid))
    click.echo(f"run {run_id} is sending in the background (process {process.pid}, log {log})")
    click.echo(f"follow it with: {command_name()} campaigns status {campaign_id}")


@campaigns_group.command("send")
@click.argument("campaign_id", type=ID)
@wait_option
@workers_option
@click.option("--again", is_flag=True, help="Send once more after a finished run: to everyone the rules select now.")
@with_appcontext
def send_command(campaign_id, wait, workers, again):
    """Start a run of campaign CAMPAIGN_ID."""
    try:
        run = _commit(start_run, campaign_id, again=again)
    except AlreadySent as exc:
        _fail(
            f"{exc}; `{command_name()} campaigns send {campaign_id} --again` sends to everyone again"
            " (those the new run's rules select)"
        )
    launch(campaign_id, run.id, workers, wait)


@campaigns_group.command("work", hidden=True)
@click.argument("run_id", type=ID)
@workers_option
@with_appcontext
def work_command(run_id, workers):
    """Send run RUN_ID from this process (what `send` starts in the background)."""
    try:
        execute_run(worker_config(workers), run_id)
    except CampaignError as exc:
        _fail(exc)


@campaigns_group.command("status")
@click.argument("campaign_id", type=ID)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def status_command(campaign_id, as_json):
    """The latest run's state and its messages by status."""
    _print_status(campaign_id, as_json)


def _print_status(campaign_id: int, as_json: bool = False) -> dict:
    session = get_session()
    session.expire_all()  # a send from this process wrote through connections of its own
    try:
        get_campaign(session, campaign_id)
    except CampaignError as exc:
        _fail(exc)
    if halt_if_abandoned(session, campaign_id):
        session.commit()
    current = run_status(session, campaign_id)
    session.rollback()
    if as_json:
        click.echo(to_json(current))
        return current
    run = f"run {current['run']}" if current["run"] else "no run yet"
    click.echo(f"campaign {campaign_id}, {run}: {current['state']} — {tally(current)}")
    if current["skipped"]:
        click.echo(skipped_line(current))
    for line in failed_lines(current):
        click.echo(line)
    if current["unknown"]:
        click.echo(
            f"{current['unknown']:,} unknown: in flight when the connection was lost or the sender stopped, so they"
            f" may have arrived; `{command_name()} campaigns resend-unknown {campaign_id}` sends them again"
            " (a second copy to any that did)"
        )
    if current.get("note"):
        click.echo(f"note: {printable(current['note'])}")
    return current


@campaigns_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@with_appcontext
def list_command(as_json):
    """Every campaign: its audience, layout, when it was created and its last run."""
    session = get_session()
    campaigns = campaign_summaries(session)
    session.rollback()
    if as_json:
        click.echo(to_json(campaigns))
        return
    if not campaigns:
        click.echo(f"no campaigns yet: `{command_name()} campaigns create FILE.yaml` stores one")
        return
    rows = [
        (
            str(campaign["id"]),
            printable(campaign["name"]),
            printable(campaign["segment"]) if campaign["segment"] else "(inline rules)",
            printable(campaign["layout"]),
            when(campaign["created"]),
            *last_run(campaign["last_run"]),
        )
        for campaign in campaigns
    ]
    headers = ("id", "name", "segment", "layout", "created", "last run", "recipients", *LISTED)
    click.echo(table(headers, rows))


@campaigns_group.command("show")
@click.argument("campaign_id", type=ID)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def show_command(campaign_id, as_json):
    """The campaign's definition and every run of it, with states and counts."""
    session = get_session()
    try:
        campaign = campaign_detail(session, campaign_id)
    except CampaignError as exc:
        _fail(exc)
    session.rollback()
    if as_json:
        click.echo(to_json(campaign))
        return
    click.echo(f"campaign {campaign['id']}: {printable(campaign['name'])}, created {when(campaign['created'])}")
    for label, value in definition_lines(campaign["definition"]):
        click.echo(f"{label}: {printable(value)}")
    if not campaign["runs"]:
        click.echo(f"no runs yet: `{command_name()} campaigns send {campaign_id}` starts one")
        return
    click.echo("runs, newest first:")
    for run in campaign["runs"]:
        click.echo(f"  run {run['run']}: {run['state']}, started {when(run['started'])}", nl=False)
        click.echo(f", finished {when(run['finished'])}" if run["finished"] else "")
        click.echo(f"    {tally(run)}")
        if run["skipped"]:
            click.echo(f"    {skipped_line(run)}")
        for line in failed_lines(run):
            click.echo(f"    {line}")
        if run["note"]:
            click.echo(f"    note: {printable(run['note'])}")


@campaigns_group.command("pause")
@click.argument("campaign_id", type=ID)
@with_appcontext
def pause_command(campaign_id):
    """Pause the running send; nothing pending is lost."""
    run = _commit(pause, campaign_id)
    click.echo(f"run {run.id} paused; `{command_name()} campaigns resume {campaign_id}` carries on")


@campaigns_group.command("resume")
@click.argument("campaign_id", type=ID)
@wait_option
@workers_option
@with_appcontext
def resume_command(campaign_id, wait, workers):
    """Carry on a paused or interrupted run; messages of unknown fate are not resent."""
    run, unknown = _commit(prepare_resume, campaign_id)
    if unknown:
        click.echo(
            f"{unknown} message(s) were in flight when the run stopped and are now 'unknown'; "
            f"`patron campaigns resend-unknown {campaign_id}` sends them again on purpose"
        )
    launch(campaign_id, run.id, workers, wait)


@campaigns_group.command("cancel")
@click.argument("campaign_id", type=ID)
@with_appcontext
def cancel_command(campaign_id):
    """Cancel the run: messages not yet sent are skipped."""
    run, skipped = _commit(cancel, campaign_id)
    click.echo(f"run {run.id} cancelled; {skipped:,} message(s) not sent")


@campaigns_group.command("resend-unknown")
@click.argument("campaign_id", type=ID)
@wait_option
@workers_option
@with_appcontext
def resend_unknown_command(campaign_id, wait, workers):
    """Send again, on purpose, the messages whose delivery is unknown after a crash."""
    run, count = _commit(resend_unknown, campaign_id)
    if not count:
        click.echo(f"run {run.id} has no messages of unknown fate")
        return
    click.echo(f"resending {count} message(s) of run {run.id}")
    launch(campaign_id, run.id, workers, wait)


@campaigns_group.command("preview")
@click.argument("campaign_id", type=ID)
@click.option("--contact", "email", required=True, help="The contact's email address.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the HTML here.")
@with_appcontext
def preview_command(campaign_id, email, html_path):
    """Render one contact's email and say why each block was chosen."""
    session = get_session()
    signer = LinkSigner(current_app.config["SECRET_KEY"], current_app.config["PATRON_BASE_URL"])
    try:
        result = preview(
            session,
            campaign_id,
            email,
            signer=signer,
            half_life_days=current_app.config["PATRON_INTEREST_HALF_LIFE_DAYS"],
        )
    except (CampaignError, RenderError) as exc:
        _fail(exc)
    except TemplateError as exc:  # the checks passed, yet inlining left something Jinja cannot compile
        _fail(f"campaign {campaign_id}: a template does not compile after CSS inlining: {describe(exc)}")
    session.rollback()
    rendered = result.rendered
    audience = "in the audience" if result.in_audience else "NOT in the campaign's audience"
    click.echo(f"to: {result.email} ({audience}{'; would be skipped: ' + result.skip if result.skip else ''})")
    click.echo(f"subject: {rendered.subject}")
    click.echo(f"language: {rendered.language}")
    click.echo("blocks:")
    for choice in rendered.choices.values():
        click.echo(f"  {choice.explain()}")
    click.echo("")
    click.echo(rendered.text)
    if html_path:
        try:
            html_path.write_text(rendered.html, encoding="utf-8")
        except OSError as exc:
            _fail(f"--html: cannot write {html_path}: {exc.strerror}")
        click.echo(f"HTML written to {html_path}")
