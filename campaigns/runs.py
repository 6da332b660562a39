"""Campaigns and runs as a marketer drives them: create, start, pause, resume, cancel.

Services take a session and ids, may flush, and never commit, except
``plan_run``, which commits a page at a time so that planning a million
recipients never holds one huge transaction (it takes a session factory).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from campaigns.definition import CampaignError
from campaigns.models import ACTIVE_STATES, Campaign, Run
from content.checking import check_template, check_versions, pack_phrases, render_problems
from content.models import Block, Layout, LayoutVersion, Pack
from content.selection import locale_chain, locale_key, phrases_by_locale, phrases_for
from delivery import ledger
from segments.compiler import compile_rules
from segments.db import utcnow
from segments.models import Contact
from segments.service import UnknownSegment, get_segment_by_name

PLAN_PAGE = 5000
OTHER_START_WAIT = 5.0  # seconds a start that lost a race on SQLite waits to see the winner's run
LEASE = timedelta(minutes=2)  # a run's driver on another machine is presumed dead after this long without a beat


class RunError(CampaignError):
    """A run cannot do what was asked in its current state."""


class AlreadySent(RunError):
    """The campaign's last run mailed its audience: a new run would mail them again, so it must be asked for."""

    def __init__(self, campaign_id: int, run: Run, sent: int, unknown: int):
        moment = run.finished_at or run.heartbeat_at or run.created_at
        how = "finished" if run.state == "finished" else f"was {run.state}"
        fate = f" (and {unknown:,} of unknown fate)" if unknown else ""
        super().__init__(
            f"campaign {campaign_id} was sent already: its last run {run.id} {how} at {moment:%Y-%m-%d %H:%M} UTC,"
            f" sending {sent:,} message(s){fate}"
        )
        self.campaign_id, self.run_id, self.sent, self.unknown = campaign_id, run.id, sent, unknown


def create_campaign(session: Session, definition: dict[str, Any], source: str = "campaign") -> Campaign:
    """Store a campaign from its checked definition (``parse_definition``), once its layout and segment exist."""
    if session.scalar(select(Layout.id).where(Layout.key == definition["layout"])) is None:
        raise CampaignError(f"{source}: field 'layout': there is no layout {definition['layout']!r}; import its pack")
    if definition["segment"] and get_segment_by_name(session, definition["segment"]) is None:
        raise CampaignError(f"{source}: field 'segment': there is no segment {definition['segment']!r}")
    problems = content_problems(session, definition, frozen_content(session, definition["layout"]))
    if problems:
        raise CampaignError("\n".join(f"{source}: {problem}" for problem in problems))
    campaign = Campaign(name=definition["name"], definition=definition)
    session.add(campaign)
    session.flush()
    return campaign


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignError(f"there is no campaign {campaign_id}")
    return campaign


def latest_run(session: Session, campaign_id: int) -> Run | None:
    """The campaign's most recent run, if any."""
    return session.scalar(select(Run).where(Run.campaign_id == campaign_id).order_by(Run.id.desc()).limit(1))


def frozen_content(session: Session, layout_key: str) -> dict[str, Any]:
    """The current layout version and block versions of its pack, as a run freezes them."""
    layout = session.scalar(select(Layout).where(Layout.key == layout_key))
    if layout is None or layout.current_version_id is None:
        raise CampaignError(f"there is no layout {layout_key!r}; import its pack")
    blocks = session.scalars(
        select(Block.current_version_id).where(Block.pack_id == layout.pack_id, Block.retired_at.is_(None))
    ).all()
    return {"pack": layout.pack_id, "layout_version": layout.current_version_id, "blocks": sorted(blocks)}


def content_problems(session: Session, definition: dict[str, Any], content: dict[str, Any]) -> list[str]:
    """What would fail or go missing for every recipient (or each with only an address), field by field.

    The subject and preheader against the pack's phrases and default locale,
    then rendered for sample contacts in each of their locales
    (``render_problems``); the campaign's slot filters against the layout; and
    every template of the layout and block versions (``content`` as
    ``frozen_content`` gives it).
    """
    pack = session.get(Pack, content["pack"])
    layout = session.get(LayoutVersion, content["layout_version"])
    phrases, by_locale = pack_phrases(pack), phrases_by_locale(pack.strings)
    problems = []
    for name in ("subject", "preheader"):
        templates = definition.get(name) or {}
        for locale, source in templates.items():
            where = name if locale == "*" else f"{name}.{locale}"
            found = [f"template error: {p.message}" for p in check_template(source, name, text=True, phrases=phrases)]
            if not found:  # what only rendering finds: an attribute the sandbox refuses, a call on a missing name
                locale = pack.default_locale if locale == "*" else locale
                rendered = render_problems(
                    source,
                    locale=locale,
                    strings=phrases_for(by_locale, locale_chain(locale, pack.default_locale)),
                    campaign={"name": definition["name"]},
                    subject=None if name == "subject" else "A sample subject",
                )
                found = [p.message for p in rendered]
            problems += [f"field '{where}': {problem}" for problem in found]
        # By CLDR equivalence: a subject for en-US serves a pack whose default is en.
        if templates and "*" not in templates and locale_key(pack.default_locale) not in map(locale_key, templates):
            problems.append(
                f"field '{name}': none for {pack.default_locale!r}, the default locale of pack {pack.key!r}, "
                f"where every locale falls back to: add {name}.{pack.default_locale} or one {name} for everyone"
            )
    unknown = [slot for slot in definition.get("slots") or {} if slot not in layout.slots]
    if unknown:
        problems.append(
            f"field 'slots': layout {definition['layout']!r} has no slot {', '.join(map(repr, unknown))}; "
            f"its slots are {', '.join(layout.slots)}"
        )
    versions = check_versions(
        session, pack_id=pack.id, layout_version_id=layout.id, block_version_ids=content["blocks"]
    )
    return problems + [f"pack {pack.key!r}: {problem}" for problem in versions]


def checked_content(session: Session, campaign_id: int) -> dict[str, Any]:
    """The content a run of the campaign would freeze now; CampaignError naming each of its problems."""
    definition = get_campaign(session, campaign_id).definition
    content = frozen_content(session, definition["layout"])
    problems = content_problems(session, definition, content)
    if problems:
        raise CampaignError("\n".join(f"campaign {campaign_id}: {problem}" for problem in problems))
    return content


def audience_rules(session: Session, definition: dict[str, Any]) -> dict[str, Any]:
    """The rule tree a run sends to: the saved segment's rules as they are now, or the inline rules."""
    if definition.get("rules") is not None:
        return definition["rules"]
    segment = get_segment_by_name(session, definition["segment"])
    if segment is None:
        raise UnknownSegment(f"the campaign's segment {definition['segment']!r} no longer exists")
    return segment.rules


def start_run(session: Session, campaign_id: int, *, again: bool = False) -> Run:
    """A new run of the campaign with its audience rules and content versions frozen.

    CampaignError naming each problem when the content would fail every recipient. RunError when the
    campaign has an active run: of two starts at once (two commands, a scheduler firing twice) one gets the
    run and the others this error, since the database holds one active run per campaign. Unless ``again``,
    refuses (AlreadySent) when the last run finished, or was cancelled after sending: the new run would mail
    everyone its rules select once more, those already mailed included.
    """
    content = checked_content(session, campaign_id)  # content that would fail everyone never starts a run
    campaign = get_campaign(session, campaign_id)
    _refuse_if_active(session, campaign_id)
    last = latest_run(session, campaign_id)
    if last is not None and not again:
        mailed = ledger.counts(session, last.id)
        if last.state == "finished" or mailed["sent"] or mailed["unknown"]:
            raise AlreadySent(campaign_id, last, mailed["sent"], mailed["unknown"])
    run = Run(
        campaign_id=campaign_id,
        state="planning",
        rules=audience_rules(session, campaign.definition),
        content=content,
    )
    with _as_the_only_active_run(session, campaign_id, seen=last.id if last else 0):
        session.add(run)
    return run


def _refuse_if_active(session: Session | Connection, campaign_id: int) -> None:
    active = session.execute(
        select(Run.id, Run.state).where(Run.campaign_id == campaign_id, Run.state.in_(ACTIVE_STATES)).limit(1)
    ).first()
    if active is not None:
        raise RunError(
            f"campaign {campaign_id} already has run {active.id}, which is {active.state}: resume or cancel it"
        )


@contextmanager
def _as_the_only_active_run(session: Session, campaign_id: int, seen: int) -> Iterator[None]:
    """Flush what makes a run of the campaign active in a savepoint; RunError if another start got there first.

    ``seen`` is the newest run id the caller saw. The check before this cannot see a run that another
    transaction is starting at the same moment; the unique index on active runs can. PostgreSQL makes this
    flush wait for that transaction and then refuses it (IntegrityError); SQLite refuses a write from a
    transaction that read before another committed, or while another writes ("database is locked",
    SQLITE_BUSY[_SNAPSHOT]). A new look then finds the other's run. Nothing of this activation is written,
    and the session stays usable.
    """
    try:
        with session.begin_nested():
            yield
    except IntegrityError:
        _refuse_if_started(session, campaign_id, seen)  # a new statement: it sees what the other committed
        raise
    except OperationalError as exc:
        if not getattr(exc.orig, "sqlite_errorname", "").startswith("SQLITE_BUSY"):
            raise
        _refuse_if_started_elsewhere(session.get_bind(), campaign_id, seen)
        raise RunError(
            f"campaign {campaign_id}: another process wrote to the database while the run was starting,"
            " so none was started; try again"
        ) from None


def _refuse_if_started(db: Session | Connection, campaign_id: int, seen: int) -> None:
    """RunError if the campaign has an active run, or one newer than run ``seen`` (started at the same moment)."""
    _refuse_if_active(db, campaign_id)
    newer = db.execute(
        select(Run.id, Run.state).where(Run.campaign_id == campaign_id, Run.id > seen).order_by(Run.id).limit(1)
    ).first()
    if newer is not None:
        raise RunError(
            f"campaign {campaign_id} was started by another process at the same moment: its run {newer.id}"
            f" is {newer.state} already"
        )


def _refuse_if_started_elsewhere(engine: Engine, campaign_id: int, seen: int, wait: float = OTHER_START_WAIT) -> None:
    """``_refuse_if_started`` on a connection of its own, looking again for ``wait`` seconds while another commits.

    Reads only: taking SQLite's write lock to wait would fail the other process's next transaction that
    reads before it writes, such as its first step of sending.
    """
    deadline = time.monotonic() + wait
    with engine.connect() as connection:
        while True:
            _refuse_if_started(connection, campaign_id, seen)
            connection.rollback()  # the next look starts a new snapshot
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)


def plan_run(session_factory, run_id: int, *, half_life_days: float, now: datetime | None = None, progress=None) -> int:
    """Write the run's ledger rows page by page (resuming where a crash stopped); how many rows."""
    now = now or utcnow()
    with session_factory() as session:
        run = session.get(Run, run_id)
        definition = run.campaign.definition
        dialect = session.get_bind().dialect.name
        audience = compile_rules(run.rules, dialect_name=dialect, now=now, half_life_days=half_life_days)
        audience = audience & (Contact.status != "deleted")
        cap = ledger.FrequencyCap.from_definition(definition.get("frequency_cap"))
        after = ledger.last_planned(session, run_id)
        while run.state == "planning":
            last = ledger.plan_page(session, run_id, audience, after=after, page_size=PLAN_PAGE, cap=cap, now=now)
            if last is None:
                run.state, run.planned_at = "sending", utcnow()
            run.heartbeat_at = utcnow()
            session.commit()
            if progress and last is not None:
                progress(last)
            after = last
        return ledger.counts(session, run_id)["total"]


def claim_ownership(session: Session, run: Run, pid: int | None = None) -> None:
    """Record this process (or the local process ``pid`` it started) as the one driving the run."""
    run.owner = _me() if pid is None else f"{socket.gethostname()}:{pid}"
    run.heartbeat_at = utcnow()


def owner_alive(run: Run) -> bool:
    """Whether the process recorded as driving the run is still running (on this host)."""
    if not run.owner:
        return False
    host, _, pid = run.owner.rpartition(":")
    if host != socket.gethostname():
        # Another machine's process: it lives as long as it keeps beating.
        return run.heartbeat_at is not None and utcnow() - run.heartbeat_at < LEASE
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return not _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has died but not been reaped (a killed sender under an init that does not reap: containers).

    Linux's /proc/PID/stat gives the state after the command name in parentheses; elsewhere nothing tells, so no.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def pause(session: Session, campaign_id: int) -> Run:
    """Stop handing out batches; messages already claimed finish, the rest stay pending."""
    run = _active(session, campaign_id)
    if run.state != "sending":
        raise RunError(f"run {run.id} is {run.state}, not sending: nothing to pause")
    run.state, run.note = "paused", "paused by request"
    return run


def halt(session: Session, run_id: int, reason: str) -> Run:
    """Pause a run that cannot go on (a fault, a dead worker), with the reason ``status`` shows."""
    run = session.get(Run, run_id)
    if run.state in ("planning", "sending"):
        run.state, run.note = "paused", f"paused: {reason}"
    return run


def halt_if_abandoned(session: Session, campaign_id: int) -> Run | None:
    """Pause the campaign's run if the process recorded as driving it is gone; the run if it was."""
    run = latest_run(session, campaign_id)
    if run is None or run.state not in ("planning", "sending") or not run.owner or owner_alive(run):
        return None
    return halt(session, run.id, f"the process sending it ({run.owner}) stopped; resume carries on")


def prepare_resume(session: Session, campaign_id: int) -> tuple[Run, int]:
    """Make a paused or crashed run sendable again; (run, rows whose fate became unknown)."""
    run = _active(session, campaign_id)
    if run.state in ("sending", "planning") and owner_alive(run) and run.owner != _me():
        raise RunError(f"run {run.id} is {run.state} in process {run.owner}: it is still running")
    unknown = ledger.mark_unknown(session, run.id)
    if run.state == "paused":
        run.state = "sending" if run.planned_at else "planning"
    run.note = f"resumed; {unknown} message(s) in flight at the stop are now unknown" if unknown else "resumed"
    claim_ownership(session, run)
    return run, unknown


def cancel(session: Session, campaign_id: int) -> tuple[Run, int]:
    """End the run: rows not yet sent are skipped; (run, how many were skipped)."""
    run = _active(session, campaign_id)
    # A driver still running notices within one claim; the rows it holds finish normally.
    run.state, run.finished_at, run.note = "cancelled", utcnow(), "cancelled by request"
    return run, ledger.skip_pending(session, run.id, "run cancelled")


def resend_unknown(session: Session, campaign_id: int) -> tuple[Run, int]:
    """Send again, on purpose, the messages whose fate is unknown; (run, how many).

    A finished or cancelled run becomes active again: RunError if the campaign has another active run.
    """
    run = latest_run(session, campaign_id)
    if run is None:
        raise RunError(f"campaign {campaign_id} has never been sent")
    if run.state in ("sending", "planning") and owner_alive(run) and run.owner != _me():
        raise RunError(f"run {run.id} is still {run.state}; pause it first")
    with _as_the_only_active_run(session, campaign_id, seen=run.id):
        count = ledger.requeue_unknown(session, run.id)
        if count:
            run.state, run.finished_at, run.note = "sending", None, f"resending {count} message(s) of unknown fate"
            claim_ownership(session, run)
    return run, count


def finish_if_done(session: Session, run: Run) -> bool:
    """Mark the run finished when no row is pending or sending."""
    if run.state == "sending" and not ledger.in_flight(session, run.id):
        run.state, run.finished_at = "finished", utcnow()
        return True
    return run.state == "finished"


def status(session: Session, campaign_id: int) -> dict[str, Any]:
    """The latest run's state, its ledger counts by status, its skipped rows by reason and its top failure reasons."""
    run = latest_run(session, campaign_id)
    if run is None:
        return {
            "campaign": campaign_id,
            "run": None,
            "state": "draft",
            **ledger.counts(session, 0),
            "skipped_by_reason": {},
            "failed_by_reason": {},
        }
    return {"campaign": campaign_id, **_run_views(session, [run])[0]}


def campaign_summaries(session: Session) -> list[dict[str, Any]]:
    """Every campaign, oldest first, with its audience, layout and latest run (state and counts, or None)."""
    latest = select(func.max(Run.id).label("id")).group_by(Run.campaign_id).subquery()
    rows = session.execute(
        select(Campaign, Run)
        .outerjoin(Run, Run.campaign_id == Campaign.id)
        .outerjoin(latest, latest.c.id == Run.id)
        .where(Run.id.is_(None) | latest.c.id.is_not(None))
        .order_by(Campaign.id)
    ).all()
    views = {view["run"]: view for view in _run_views(session, [run for _, run in rows if run is not None])}
    return [
        {
            "id": campaign.id,
            "name": campaign.name,
            "segment": campaign.definition.get("segment"),
            "layout": campaign.definition.get("layout"),
            "created": campaign.created_at,
            "last_run": views[run.id] if run is not None else None,
        }
        for campaign, run in rows
    ]


def campaign_detail(session: Session, campaign_id: int) -> dict[str, Any]:
    """The campaign's definition and every run of it, newest first, with their states and counts."""
    campaign = get_campaign(session, campaign_id)
    runs = session.scalars(select(Run).where(Run.campaign_id == campaign_id).order_by(Run.id.desc())).all()
    return {
        "id": campaign.id,
        "name": campaign.name,
        "created": campaign.created_at,
        "definition": campaign.definition,
        "runs": _run_views(session, runs),
    }


def _run_views(session: Session, runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Each run's state, times, ledger counts, skipped rows by reason and its most frequent failure reasons.

    Three GROUP BY queries for all the runs.
    """
    ids = [run.id for run in runs]
    counts, skipped = ledger.counts_by_run(session, ids), ledger.skipped_by_reason(session, ids)
    failed = ledger.failed_by_reason(session, ids)
    return [
        {
            "run": run.id,
            "state": run.state,
            "note": run.note,
            "started": run.created_at,
            "finished": run.finished_at,
            **counts[run.id],
            "skipped_by_reason": skipped[run.id],
            "failed_by_reason": failed[run.id],
        }
        for run in runs
    ]


def _active(session: Session, campaign_id: int) -> Run:
    run = latest_run(session, campaign_id)
    if run is None or run.state not in ACTIVE_STATES:
        state = f"its last run {run.id} is {run.state}" if run else "it has never been sent"
        raise RunError(f"campaign {campaign_id} has no run in progress: {state}")
    return run


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
