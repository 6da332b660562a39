"""the person's own choices, and the last imported interest scores

Revision ID: 0007_own_choices
Revises: 0006_api_keys
Create Date: 2026-12-01 14:40:00

A re-import must not undo what the customer chose or what Patron learned:

- ``consents.own_choice``: the person gave this answer themselves (the preference page, an unsubscribe);
  an import never re-grants a purpose the person withdrew;
- ``contacts.locale_chosen_at`` and ``interests.chosen_at``: when the person chose their language or
  ticked or unticked a tag on the preference page; an import leaves those alone;
- ``interests.imported``: the score the last import gave, so an import sets a score only when the file's
  value changed, and re-importing an unchanged file keeps what clicks and purchases taught.

Choices made before this revision are read back from what recorded them: consents written by the
preference page or an unsubscribe (their ``source``), and the ``preferences`` events of the timeline.
"""

import sqlalchemy as sa
from alembic import op

import segments.db

revision = "0007_own_choices"
down_revision = "0006_api_keys"
branch_labels = None
depends_on = None

# The sources the preference page and the unsubscribes (one-click, the page's button, mailto through the
# bounce mailbox or webhook) wrote with consents before own_choice existed.
PERSON_SOURCES = ("preference_page", "one_click", "maildir", "webhook")


def upgrade() -> None:
    op.add_column("contacts", sa.Column("locale_chosen_at", segments.db.UTCDateTime(), nullable=True))
    op.add_column("interests", sa.Column("imported", sa.Float(), nullable=True))
    op.add_column("interests", sa.Column("chosen_at", segments.db.UTCDateTime(), nullable=True))
    op.add_column("consents", sa.Column("own_choice", sa.Boolean(), server_default=sa.false(), nullable=False))
    _backfill(op.get_bind())


def _backfill(connection) -> None:
    consents = sa.table("consents", sa.column("source", sa.String()), sa.column("own_choice", sa.Boolean()))
    connection.execute(consents.update().where(consents.c.source.in_(PERSON_SOURCES)).values(own_choice=True))
    events = sa.table(
        "events",
        sa.column("contact_id", sa.BigInteger()),
        sa.column("type", sa.String()),
        sa.column("channel", sa.String()),
        sa.column("source", sa.String()),
        sa.column("occurred_at", segments.db.UTCDateTime()),
        sa.column("properties", segments.db.JsonDoc),
    )
    locales: dict[int, object] = {}
    tags: dict[tuple[int, str], object] = {}
    # The preference page's own events only: an imported event may be called "preferences" too.
    query = sa.select(events.c.contact_id, events.c.occurred_at, events.c.properties).where(
        events.c.type == "preferences", events.c.channel == "email", events.c.source == "preference_page"
    )
    for contact_id, occurred_at, properties in connection.execute(query.order_by(events.c.occurred_at)):
        properties = properties or {}
        if properties.get("locale"):
            locales[contact_id] = occurred_at
        for tag in [*properties.get("interests_added", ()), *properties.get("interests_removed", ())]:
            if isinstance(tag, str):
                tags[(contact_id, tag)] = occurred_at
    contacts = sa.table(
        "contacts", sa.column("id", sa.BigInteger()), sa.column("locale_chosen_at", segments.db.UTCDateTime())
    )
    interests = sa.table(
        "interests",
        sa.column("contact_id", sa.BigInteger()),
        sa.column("tag", sa.String()),
        sa.column("chosen_at", segments.db.UTCDateTime()),
    )
    if locales:
        connection.execute(
            contacts.update().where(contacts.c.id == sa.bindparam("b_id")).values(locale_chosen_at=sa.bindparam("at")),
            [{"b_id": contact_id, "at": at} for contact_id, at in locales.items()],
        )
    if tags:
        connection.execute(
            interests.update()
            .where(interests.c.contact_id == sa.bindparam("b_contact"), interests.c.tag == sa.bindparam("b_tag"))
            .values(chosen_at=sa.bindparam("at")),
            [{"b_contact": contact_id, "b_tag": tag, "at": at} for (contact_id, tag), at in tags.items()],
        )


def downgrade() -> None:
    for table, columns in (
        ("consents", ["own_choice"]),
        ("interests", ["chosen_at", "imported"]),
        ("contacts", ["locale_chosen_at"]),
    ):
        with op.batch_alter_table(table) as batch:
            for name in columns:
                batch.drop_column(name)
