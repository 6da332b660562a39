from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from segments.db import Base
from web.db import upgrade


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
