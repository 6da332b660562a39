import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from segments.db import Base
from web.db import alembic_config, upgrade


def test_migrations_build_exactly_the_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_upgrade_again_is_a_no_op(engine, session):
    from segments.models import Contact

    session.add(Contact(email="kept@example.com"))
    session.commit()
    upgrade(engine)
    assert "contacts" in inspect(engine).get_table_names()
    assert session.query(Contact.email).scalar() == "kept@example.com"


def test_cli_upgrade_is_idempotent(runner):
    first = runner.invoke(args=["db", "upgrade"])
    second = runner.invoke(args=["db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "database is at head" in second.output


def test_upgrade_0004_keeps_the_oldest_of_duplicate_active_runs_and_cancels_the_rest(engine):
    """A database that already holds two active runs of one campaign (the race of issue #8) takes the index."""
    from datetime import datetime, timezone

    from sqlalchemy import text

    now = datetime(2026, 11, 30, tzinfo=timezone.utc).replace(tzinfo=None)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX IF EXISTS uq_runs_campaign_id_active"))
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM alembic_version"))
            conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('0003_emails')"))
            conn.execute(
                text("INSERT INTO campaigns (id, name, definition, created_at) VALUES (1, 'w', '{}', :now)"),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO contacts (id, email, status, attributes, created_at, updated_at) VALUES"
                    " (1, 'a@example.com', 'active', '{}', :now, :now),"
                    " (2, 'b@example.com', 'active', '{}', :now, :now)"
                ),
                {"now": now},
            )
            for run_id, state in ((1, "sending"), (2, "planning"), (3, "finished")):
                conn.execute(
                    text(
                        "INSERT INTO runs (id, campaign_id, state, rules, content, created_at)"
                        " VALUES (:id, 1, :state, '{}', '{}', :now)"
                    ),
                    {"id": run_id, "state": state, "now": now},
                )
            for row_id, (run_id, contact_id, status) in enumerate(
                [(1, 1, "sent"), (2, 1, "sending"), (2, 2, "pending")], start=1
            ):
                conn.execute(
                    text(
                        "INSERT INTO deliveries (id, run_id, contact_id, status, attempts)"
                        " VALUES (:id, :run, :contact, :status, 0)"
                    ),
                    {"id": row_id, "run": run_id, "contact": contact_id, "status": status},
                )
        upgrade(engine, "0004_one_active_run")  # the schema beyond it is already there
        with engine.connect() as conn:
            states = dict(conn.execute(text("SELECT id, state FROM runs ORDER BY id")).all())
            rows = conn.execute(text("SELECT run_id, contact_id, status FROM deliveries ORDER BY id")).all()
            note = conn.execute(text("SELECT note FROM runs WHERE id = 2")).scalar()
        assert states == {1: "sending", 2: "cancelled", 3: "finished"}
        assert [tuple(r) for r in rows] == [(1, 1, "sent"), (2, 1, "unknown"), (2, 2, "skipped")]
        assert "beside run 1" in note
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE runs SET state = 'paused' WHERE id = 2"))
    finally:
        upgrade(engine, "0004_one_active_run")  # puts the index back if the test stopped before it
        command.stamp(alembic_config(engine), "head")


def test_upgrade_0007_reads_back_the_choices_people_made_before_it(engine):
    """Withdrawals by the page or an unsubscribe, and the locale and tags chosen on the page, outrank imports."""
    from datetime import datetime, timezone

    from sqlalchemy import text

    now = datetime(2026, 11, 30, tzinfo=timezone.utc).replace(tzinfo=None)
    try:
        command.downgrade(alembic_config(engine), "0006_api_keys")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO contacts (id, email, locale, status, attributes, created_at, updated_at)"
                    " VALUES (1, 'marcia@example.com', 'es', 'active', '{}', :now, :now)"
                ),
                {"now": now},
            )
            for purpose, source in (("tracking", "preference_page"), ("marketing", "one_click"), ("profiling", "crm")):
                conn.execute(
                    text(
                        "INSERT INTO consents (contact_id, purpose, granted, source, recorded_at)"
                        " VALUES (1, :purpose, false, :source, :now)"
                    ),
                    {"purpose": purpose, "source": source, "now": now},
                )
            for tag, score in (("pasta", 0.0), ("pizza", 7.0)):
                conn.execute(
                    text("INSERT INTO interests (contact_id, tag, score, updated_at) VALUES (1, :tag, :score, :now)"),
                    {"tag": tag, "score": score, "now": now},
                )
            conn.execute(
                text(
                    "INSERT INTO events (contact_id, channel, type, occurred_at, properties, source, external_id,"
                    " received_at) VALUES (1, 'email', 'preferences', :now, :properties, 'preference_page', 'p1', :now)"
                ),
                {"now": now, "properties": '{"locale": "es", "interests_removed": ["pasta"]}'},
            )
        upgrade(engine)
        with engine.connect() as conn:
            own = dict(conn.execute(text("SELECT purpose, own_choice FROM consents")).all())
            locale_chosen = conn.execute(text("SELECT locale_chosen_at FROM contacts")).scalar()
            chosen = dict(conn.execute(text("SELECT tag, chosen_at IS NOT NULL FROM interests")).all())
        assert {purpose: bool(value) for purpose, value in own.items()} == {
            "tracking": True,
            "marketing": True,
            "profiling": False,
        }
        assert locale_chosen is not None
        assert {tag: bool(value) for tag, value in chosen.items()} == {"pasta": True, "pizza": False}
    finally:
        upgrade(engine)


def test_a_downgrade_and_upgrade_keep_every_row_of_a_populated_database(engine, session):
    """Dropping a column on SQLite copies the table and drops the old one; with foreign keys on, that drop once
    deleted every row referring to it (identities, consents, interests, events), all ON DELETE CASCADE."""
    from datetime import datetime, timezone

    from sqlalchemy import func, select

    from segments.models import Consent, Contact, Event, Identity, Interest

    now = datetime(2026, 11, 30, tzinfo=timezone.utc)
    contact = Contact(email="kept@example.com", locale="es")
    session.add(contact)
    session.flush()
    session.add_all(
        [
            Identity(contact_id=contact.id, channel="pos", value="POS-1"),
            Consent(contact_id=contact.id, purpose="tracking", granted=True, source="crm", recorded_at=now),
            Interest(contact_id=contact.id, tag="pizza", score=7.0, updated_at=now),
            Event(
                contact_id=contact.id,
                channel="pos",
                type="purchase",
                occurred_at=now,
                properties={},
                source="pos",
                external_id="T1",
                received_at=now,
            ),
        ]
    )
    session.commit()

    def counts():
        with engine.connect() as connection:
            return [
                connection.scalar(select(func.count()).select_from(model))
                for model in (Contact, Identity, Consent, Interest, Event)
            ]

    assert counts() == [1, 1, 1, 1, 1]
    try:
        command.downgrade(alembic_config(engine), "0005_responses")  # drops columns of contacts and interests
        assert counts() == [1, 1, 1, 1, 1]
    finally:
        upgrade(engine)
    assert counts() == [1, 1, 1, 1, 1]
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT email, locale FROM contacts").one() == ("kept@example.com", "es")
