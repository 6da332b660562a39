"""Fixtures shared by every test: a migrated database per back-end, sessions, the app.

Every test that asks for ``engine`` (or anything built on it) runs twice: on
SQLite and on PostgreSQL. PostgreSQL runs when ``PATRON_TEST_DATABASE_URL``
names it; otherwise those runs skip, except under ``CI=true``, where a missing
database is an error. Tests start from empty tables: they are emptied before
each test rather than rolled back, because CLI commands and worker processes
commit on connections of their own.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from segments.db import Base, make_engine, make_session_factory
from tests.delivery.keys import rsa_key  # noqa: F401  (a DKIM key, for any test)
from tests.delivery.smtp_server import smtp_server  # noqa: F401  (a real SMTP server, for any test)
from web import create_app, db
from web.db import upgrade

POSTGRES_URL_VARIABLE = "PATRON_TEST_DATABASE_URL"


def _postgres_url() -> str | None:
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if url and url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


@pytest.fixture(scope="session")
def _sqlite_engine(tmp_path_factory):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def _postgresql_engine():
    url = _postgres_url()
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {POSTGRES_URL_VARIABLE} is not set: the PostgreSQL tests must run under CI")
        pytest.skip(f"PostgreSQL tests need {POSTGRES_URL_VARIABLE}, e.g. postgresql://postgres@127.0.0.1:5432/test")
    engine = make_engine(url)
    with engine.begin() as conn:
        # Start from nothing, so the migrations themselves are tested every run.
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade(engine)
    yield engine
    engine.dispose()


def empty_tables(engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request):
    """A migrated, empty database: SQLite, then PostgreSQL."""
    engine = request.getfixturevalue(f"_{request.param}_engine")
    empty_tables(engine)
    return engine


@pytest.fixture
def session(engine):
    with make_session_factory(engine)() as session:
        yield session


@pytest.fixture
def app(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("PATRON_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app({"TESTING": True, "PATRON_DATABASE_URL": engine.url.render_as_string(hide_password=False)})
    yield app
    db.dispose(app)


@pytest.fixture
def runner(app):
    return app.test_cli_runner()
