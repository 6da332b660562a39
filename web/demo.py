"""``patron demo``: Patron's main job on embedded defaults, start to finish, saying what it did."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import func, select

from campaigns.definition import load_definition
from campaigns.models import Campaign
from campaigns.runs import ACTIVE_STATES, create_campaign, latest_run, prepare_resume, start_run
from campaigns.runs import status as run_status
from content.models import Block, BlockVersion
from delivery.models import Delivery
from delivery.transports import OutboxTransport, open_transport, redact_url
from segments.db import utcnow
from segments.imports import import_contacts, import_events
from segments.models import Contact, Event, Identity, Interest
from segments.rules import load_rules_file
from segments.service import count_segment, save_segment
from web.campaigns_cli import follow
from web.campaigns_format import failed_lines, skipped_line
from web.cli import command_name
from web.contacts_cli import run_import, summary_line
from web.content_cli import report_line, run_pack_import
from web.db import get_session, upgrade
from web.demo_responses import simulate_responses

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@click.command("demo")
@click.option(
    "--examples",
    "examples_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=EXAMPLES,
    show_default="examples/ of the source checkout",
    help="Where the sample audience and segments are.",
)
@with_appcontext
def demo_command(examples_dir: Path):
    """Set up the database, import the sample audience and content, and send the weekly campaign to the outbox."""
    if not (examples_dir / "customers.csv").is_file():
        raise click.ClickException(f"{examples_dir}: no customers.csv here; pass --examples DIR of a Patron checkout")
    engine = current_app.extensions["patron_engine"]
    upgrade(engine)
    click.echo(f"Database: {engine.url.render_as_string(hide_password=True)} (migrated to the newest schema)")

    steps = [
        (
            "customers",
            "customers.csv",
            lambda session, path, rejects, on_batch: import_contacts(
                session, path, source="demo", rejects=rejects, on_batch=on_batch
            ),
        ),
        (
            "point-of-sale purchases",
            "pos_events.csv",
            lambda session, path, rejects, on_batch: import_events(
                session, path, channel="pos", rejects=rejects, on_batch=on_batch
            ),
        ),
        (
            "call-centre calls",
            "call_centre_events.jsonl",
            lambda session, path, rejects, on_batch: import_events(
                session, path, channel="call_centre", format="jsonl", rejects=rejects, on_batch=on_batch
            ),
        ),
    ]
    for label, name, importer in steps:
        rejects_path = Path(current_app.instance_path) / f"demo-{name}.rejects.csv"
        summary, rejects = run_import(examples_dir / name, rejects_path, importer)
        click.echo(f"Imported {label} from {name}: {summary_line(summary)}")
        if rejects.count:
            click.echo(f"  rejected rows are in {rejects.path}")

    session = get_session()
    _show_audience(session)
    half_life = current_app.config["PATRON_INTEREST_HALF_LIFE_DAYS"]
    click.echo("\nSegments (created or updated from examples/segments/):")
    for path in sorted((examples_dir / "segments").glob("*.y*ml")):
        rules = load_rules_file(path)
        description = _first_comment(path)
        segment = save_segment(session, path.stem, rules, description=description)
        session.commit()
        count = count_segment(session, segment, now=utcnow(), half_life_days=half_life)
        summary = description if len(description) <= 72 else description[:71].rsplit(" ", 1)[0] + "…"
        click.echo(f"  {path.stem:<28} {count:>6,}  {summary}")
    campaign_id, run_id = _send_weekly(session, examples_dir)
    simulate_responses(session, current_app._get_current_object(), examples_dir, campaign_id, run_id)
    _next_steps(campaign_id)


def _send_weekly(session, examples_dir: Path) -> tuple[int, int]:
    """Import the demo pack, create (once) and send a run of the weekly campaign; (campaign id, run id)."""
    report = run_pack_import(examples_dir / "packs" / "corner-shop")
    click.echo(f"\nContent: {report_line(report)}")
    path = examples_dir / "campaigns" / "weekly.yaml"
    definition = load_definition(path)
    campaign = session.scalar(select(Campaign).where(Campaign.name == definition["name"]).order_by(Campaign.id))
    if campaign is None:
        campaign = create_campaign(session, definition, str(path))
    run = latest_run(session, campaign.id)
    if run is not None and run.state in ACTIVE_STATES:
        run, _ = prepare_resume(session, campaign.id)  # an earlier demo was interrupted: finish it first
    else:
        run = start_run(session, campaign.id, again=True)  # each demo sends the next week's email
    session.commit()
    click.echo(f"Sending campaign {campaign.id} ({campaign.name}), run {run.id}, to {_where(current_app)}:")
    follow(run.id, workers=1)
    session.expire_all()  # the run was sent through connections of its own
    current = run_status(session, campaign.id)
    session.rollback()
    click.echo(
        f"  {current['state']}: {current['sent']:,} sent, {current['skipped']:,} skipped,"
        f" {current['failed']:,} failed, {current['unknown']:,} unknown of {current['total']:,}"
    )
    if current["skipped"]:
        click.echo(f"  {skipped_line(current)}")
    for line in failed_lines(current):
        click.echo(f"  {line}")
    click.echo("Who got which blocks (a sample; each later run leaves out what a customer already got):")
    rows = session.execute(
        select(Delivery.email, Delivery.locale, Delivery.blocks)
        .where(Delivery.run_id == run.id, Delivery.status == "sent")
        .order_by(Delivery.id)
        .limit(6)
    ).all()
    keys = dict(
        session.execute(select(BlockVersion.id, Block.key).join(Block, Block.id == BlockVersion.block_id)).all()
    )
    for email, locale, blocks in rows:
        click.echo(f"  {email:<40} {locale:<6} {', '.join(keys[b] for b in blocks)}")
    return campaign.id, run.id


def _next_steps(campaign_id: int) -> None:
    patron = command_name()  # as this shell runs it: `patron` in an active venv, else the path it ran by
    click.echo("\nNext:")
    for command, what in (
        (f"campaigns show {campaign_id}", "the campaign and its runs"),
        (f"campaigns report {campaign_id}", "what came back from each run"),
        (f"campaigns preview {campaign_id} --contact EMAIL", "why a customer got their blocks"),
        (f"campaigns send {campaign_id} --again --wait", "next week's run"),
        ("serve", "the tracking links, unsubscribe and preference pages, the API"),
    ):
        click.echo(f"  {patron} {command:<44} {what}")


def _where(app) -> str:
    """Where the delivery URL sends, as the transports read it (a password never shown)."""
    url = app.config["PATRON_DELIVERY_URL"]
    transport = open_transport(url, instance_path=Path(app.instance_path))
    transport.close()
    return f"the outbox {transport.path}" if isinstance(transport, OutboxTransport) else redact_url(url)


def _show_audience(session) -> None:
    contacts = session.scalar(select(func.count()).select_from(Contact))
    by_channel = dict(session.execute(select(Event.channel, func.count()).group_by(Event.channel)).all())
    joined = session.scalar(
        select(func.count(func.distinct(Event.contact_id))).join(Contact).where(Contact.email.is_not(None))
    )
    click.echo(
        f"\nThe audience: {contacts:,} contacts; events by channel: "
        + ", ".join(f"{channel} {count:,}" for channel, count in sorted(by_channel.items()))
        + f"; {joined:,} contacts with an email also have events from the till or the call centre."
    )
    # One customer as the shop knows them: every channel, one profile.
    regular = session.scalar(
        select(Contact)
        .join(Event, Event.contact_id == Contact.id)
        .where(Contact.email.is_not(None))
        .group_by(Contact.id)
        .having(func.count(func.distinct(Event.channel)) > 1)
        .order_by(func.count().desc(), Contact.id)
        .limit(1)
    )
    if regular is None:
        return
    identities = session.execute(
        select(Identity.channel, Identity.value).where(Identity.contact_id == regular.id)
    ).all()
    interests = session.execute(
        select(Interest.tag, Interest.score).where(Interest.contact_id == regular.id).order_by(Interest.score.desc())
    ).all()
    events = session.execute(
        select(Event.channel, func.count()).where(Event.contact_id == regular.id).group_by(Event.channel)
    ).all()
    click.echo(
        f"For example, {regular.first_name} {regular.last_name} <{regular.email}>,"
        f" {regular.locale}, {regular.timezone}: "
        + "known as "
        + ", ".join(f"{channel} {value}" for channel, value in identities)
        + "; likes "
        + ", ".join(f"{tag} ({score:g})" for tag, score in interests)
        + "; "
        + ", ".join(f"{count} {channel} events" for channel, count in events)
        + "."
    )


def _first_comment(path: Path) -> str:
    """The first sentence of a rule file's opening comment: what the segment selects, in words."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
    text = " ".join(words)
    return text.split(". ")[0].rstrip(".") if text else ""
