"""The engine and session factory for one app, ``patron db``, and how a database that cannot be reached is told."""

from __future__ import annotations

from pathlib import Path

import click
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, current_app, g
from flask.cli import with_appcontext
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

import migrations
from config import SettingsError
from delivery.clicks import Target, TargetReader
from segments.db import first_line, make_engine, make_reader, make_session_factory

MIGRATIONS_DIR = Path(migrations.__file__).parent


def init_app(app: Flask) -> None:
    """Give ``app`` its engine, a request-scoped session and the ``db`` commands."""
    url = app.config["PATRON_DATABASE_URL"]
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError(
                "PATRON_DATABASE_URL", f"cannot create the directory {folder}: {exc.strerror}"
            ) from None
    engine = make_engine(url)
    app.extensions["patron_engine"] = engine
    app.extensions["patron_sessions"] = make_session_factory(engine)
    # The click endpoint's read: no BEGIN and no ROLLBACK around it, and no SQLAlchemy execution machinery.
    app.extensions["patron_reader"] = reader = make_reader(url, pool_size=8)
    app.extensions["patron_click_target"] = TargetReader(reader)
    app.teardown_appcontext(close_session)


def connection_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is the driver refusing to connect (no server, no such database, bad credentials):
    SQLAlchemy wraps a failed connect with no statement."""
    return isinstance(exc, DBAPIError) and exc.statement is None


def unreachable(url, exc: BaseException) -> click.ClickException:
    """The one line a command ends with when the database at ``url`` (a string or URL) cannot be reached:
    the URL with its password hidden, and the driver's first line."""
    where = make_url(url).render_as_string(hide_password=True)
    return click.ClickException(f"cannot reach the database {where}: {first_line(exc)}")


def dispose(app: Flask) -> None:
    """Close the app's pooled connections (its engine's and its click reader's)."""
    app.extensions["patron_engine"].dispose()
    app.extensions["patron_reader"].dispose()


def session_factory():
    return current_app.extensions["patron_sessions"]


class SchemaNotReady(click.ClickException):
    """The database has not been migrated to the code's schema."""


def get_session() -> Session:
    """The session of the current app context; the caller commits."""
    if "db_session" not in g:
        _schema_ready()
        g.db_session = session_factory()()
    return g.db_session


def click_target(delivery_id: int, link_id: int) -> Target | None:
    """Where a click on link ``link_id`` of ``delivery_id`` goes, and whether it is tracked; None when unknown
    (``delivery.clicks.TargetReader`` on the app's reader engine)."""
    _schema_ready()
    return current_app.extensions["patron_click_target"](delivery_id, link_id)


def _schema_ready() -> None:
    if not current_app.extensions.get("patron_schema_ready"):
        check_schema(current_app.extensions["patron_engine"])
        current_app.extensions["patron_schema_ready"] = True


def check_schema(engine) -> None:
    """Raise SchemaNotReady unless the database is at the newest migration."""
    heads = set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    if current != heads:
        where = engine.url.render_as_string(hide_password=True)
        state = "has no Patron tables yet" if not current else f"is at migration {', '.join(sorted(current))}"
        raise SchemaNotReady(f"the database {where} {state}; run `patron db upgrade` first")


def close_session(_exc=None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def alembic_config(engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; running it again changes nothing."""
    command.upgrade(alembic_config(engine), revision)


@click.group("db")
def db_group():
    """Create and migrate the database."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def upgrade_command(revision):
    """Apply migrations up to REVISION (default: the newest)."""
    upgrade(current_app.extensions["patron_engine"], revision)
    click.echo(f"database is at {revision}")


@db_group.command("current")
@with_appcontext
def current_command():
    """Show the migration the database is at."""
    command.current(alembic_config(current_app.extensions["patron_engine"]))
