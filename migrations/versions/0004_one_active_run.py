"""one active run per campaign: a partial unique index on runs(campaign_id) over the active states

Revision ID: 0004_one_active_run
Revises: 0003_emails
Create Date: 2026-12-01 00:30:00

``start_run`` checked for an active run and then inserted one, with nothing
in the database to stop two starts at once: both found none, both inserted,
and the audience got the campaign twice. From this revision the database
refuses a second active (planning, sending or paused) run of a campaign.

A database that already holds such duplicates cannot take the index as it is.
For each campaign with more than one active run, the oldest (the lowest id:
the start that came first; the others are the duplicates of the race) is left
as it was, and every newer one is cancelled as ``patron campaigns cancel``
would: its pending rows become skipped, its rows in flight (``sending``, so
their fate cannot be known) become unknown, and the run gets a note naming the
run it duplicated. Nothing is deleted: rows already sent stay as the history of
what each address received. Downgrading drops the index; the runs cancelled
here stay cancelled.
"""

import sqlalchemy as sa
from alembic import op

import segments.db

revision = "0004_one_active_run"
down_revision = "0003_emails"
branch_labels = None
depends_on = None

ACTIVE_STATES = ("planning", "sending", "paused")  # as campaigns.models.ACTIVE_STATES was at this revision
UNKNOWN_REASON = "in flight when its worker stopped: it may or may not have been delivered"

runs = sa.table(
    "runs",
    sa.column("id", sa.Integer),
    sa.column("campaign_id", sa.Integer),
    sa.column("state", sa.String),
    sa.column("note", sa.Text),
    sa.column("finished_at", segments.db.UTCDateTime),
)
deliveries = sa.table(
    "deliveries", sa.column("run_id", sa.Integer), sa.column("status", sa.String), sa.column("reason", sa.Text)
)


def _cancel_duplicates(connection) -> None:
    active = connection.execute(
        sa.select(runs.c.campaign_id, runs.c.id).where(runs.c.state.in_(ACTIVE_STATES)).order_by(runs.c.id)
    ).all()
    kept: dict[int, int] = {}
    for campaign_id, run_id in active:
        first = kept.setdefault(campaign_id, run_id)
        if first == run_id:
            continue
        why = f"a second active run of campaign {campaign_id}, beside run {first}"
        connection.execute(
            sa.update(runs)
            .where(runs.c.id == run_id)
            .values(
                state="cancelled",
                finished_at=segments.db.utcnow(),
                note=f"cancelled by upgrade 0004: {why}; a campaign has one active run at a time",
            )
        )
        connection.execute(
            sa.update(deliveries)
            .where(deliveries.c.run_id == run_id, deliveries.c.status == "pending")
            .values(status="skipped", reason=f"run cancelled: {why}")
        )
        connection.execute(
            sa.update(deliveries)
            .where(deliveries.c.run_id == run_id, deliveries.c.status == "sending")
            .values(status="unknown", reason=UNKNOWN_REASON)
        )


def upgrade() -> None:
    _cancel_duplicates(op.get_bind())
    active = sa.column("state").in_(ACTIVE_STATES)
    op.create_index(
        "uq_runs_campaign_id_active",
        "runs",
        ["campaign_id"],
        unique=True,
        sqlite_where=active,
        postgresql_where=active,
    )


def downgrade() -> None:
    op.drop_index("uq_runs_campaign_id_active", table_name="runs")
