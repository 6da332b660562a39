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
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
