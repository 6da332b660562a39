"""Alembic environment: runs against the engine Patron hands over, or PATRON_DATABASE_URL."""

from alembic import context

import campaigns.models  # noqa: F401  (each import registers its package's tables)
import content.models  # noqa: F401
import delivery.models  # noqa: F401
import segments.models  # noqa: F401
import web.api.keys  # noqa: F401
from segments.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        import config as settings

        engine = make_engine(settings.load_settings().database_url)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch mode alters a SQLite table by copying it and dropping the old one; with foreign keys on,
            # that DROP deletes every row that refers to it (ON DELETE CASCADE): a downgrade that drops a
            # column of contacts would empty identities, consents, events and the ledger. SQLite ignores this
            # pragma inside a transaction, so it is set on the driver's connection before anything begins.
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=sqlite,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    _check_foreign_keys(connection)
            connection.commit()
        finally:
            if sqlite:
                connection.rollback()
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(connection) -> None:
    """Raise (so the migration rolls back) if the copied tables broke a reference while the check was off."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        table, rowid, parent, _ = broken[0]
        raise RuntimeError(f"{len(broken)} rows refer to rows that are gone, e.g. {table} row {rowid} → {parent}")


run_migrations_online()
