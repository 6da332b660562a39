"""The declarative base, column types shared by every package, and engines."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
    bindparam,
    cast,
    column,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

# Named constraints let Alembic alter them on SQLite too (batch mode).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets 64 bits.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# JSONB on PostgreSQL: indexable, and compared by value rather than by text.
JsonDoc = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator):
    """A timestamp stored as naive UTC and returned timezone-aware (UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Patron stores aware UTC timestamps only")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


_STORED_TIMESTAMP = UTCDateTime()


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def insert_for(session: Session, target):
    """An ``INSERT`` into ``target`` (a model or a table) in the dialect ``session`` is bound to: PostgreSQL's or
    SQLite's, both of which take ``on_conflict_do_nothing``, ``on_conflict_do_update`` and ``returning``."""
    return (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(target)


def recordset_insert(table: Table, columns: Sequence[str]):
    """PostgreSQL's ``INSERT INTO table (columns) SELECT … FROM json_to_recordset(:rows) AS r(column type, …)``.

    Execute it with :func:`as_recordset`: every row travels as one JSON document, typed by ``table``'s own
    column types when PostgreSQL reads it. Many rows cost one statement of a few hundred bytes and one
    ``json.dumps`` in C. A multi-row VALUES list costs the driver a parse of thousands of placeholders,
    executemany runs one statement per row, and arrays of text (one per column, for ``unnest``) are escaped
    by the driver element by element in Python. The result is a ``postgresql.Insert``, so ``on_conflict_…``
    and ``returning`` apply.
    """
    document = cast(bindparam("rows", type_=Text()), JSON())
    record = (
        func.json_to_recordset(document)
        .table_valued(*(column(name, table.c[name].type) for name in columns))
        .render_derived(name="r", with_types=True)
    )
    return pg_insert(table).from_select(list(columns), select(*(record.c[name] for name in columns)))


def as_recordset(rows: Sequence[Mapping], columns: Sequence[str]) -> dict[str, str]:
    """The parameter of a :func:`recordset_insert` of ``rows`` into ``columns``: a JSON array of objects.

    Every row must hold exactly ``columns`` as keys: ``json_to_recordset`` would read a missing key as NULL
    and ignore an extra one, so either raises ValueError here, naming the row and the keys. Timestamps are
    stored as ``UTCDateTime`` stores them (naive UTC; a naive one raises ValueError), JSON documents are
    nested as they are; a NaN or infinite float raises ValueError here rather than failing the statement."""
    expected = set(columns)
    for index, row in enumerate(rows):
        if row.keys() != expected:
            missing, extra = sorted(expected - row.keys()), sorted(row.keys() - expected)
            raise ValueError(f"row {index}: missing {missing}, unexpected {extra} (columns {sorted(expected)})")
    return {"rows": json.dumps(rows, default=_json_timestamp, allow_nan=False, separators=(",", ":"))}


def _json_timestamp(value):
    if isinstance(value, datetime):
        return _STORED_TIMESTAMP.process_bind_param(value, None).isoformat()
    raise TypeError(f"{type(value).__name__} {value!r} has no JSON form")


def first_line(exc: BaseException) -> str:
    """An error in one line, for a log or a terminal: a database error's own message (the driver's, without the
    statement and parameters SQLAlchemy appends), else the exception's first line, else its type's name."""
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]


def make_reader(url: str, **kwargs) -> Engine:
    """An engine for reads of one statement each, outside any transaction: no BEGIN, no ROLLBACK, no reset.

    PostgreSQL connections are opened in AUTOCOMMIT once, not switched at every checkout as an execution
    option would; on SQLite the engine's BEGIN is left out, and pysqlite, which Patron lets run in
    autocommit, runs each statement alone. Nothing is ever left open, so a connection goes back to the
    pool as it is. Writing through it would commit each statement on its own: read only.
    """
    if url.startswith("postgresql"):
        return make_engine(url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None, **kwargs)
    return make_engine(url, single_statements=True, pool_reset_on_return=None, **kwargs)


def make_engine(url: str, *, sqlite_cache_kib: int = 32_000, single_statements: bool = False, **kwargs) -> Engine:
    """An engine for ``url``; SQLite gets WAL, real transactions, math functions and a page cache per connection
    (``single_statements``: no transactions, see :func:`make_reader`)."""
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _tune_sqlite(engine, sqlite_cache_kib, begin=not single_statements)
    return engine


def _tune_sqlite(engine: Engine, cache_kib: int, *, begin: bool = True) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, decide when transactions begin, so that
        # SAVEPOINT works and a transaction spans every statement in it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.close()
        _ensure_power(dbapi_connection)

    if not begin:
        return

    @event.listens_for(engine, "begin")
    def on_begin(connection):
        connection.exec_driver_sql("BEGIN")


def _ensure_power(dbapi_connection) -> None:
    """Interest decay needs ``power()``; older SQLite builds lack math functions."""
    try:
        dbapi_connection.execute("SELECT power(2, 1)")
    except Exception:
        dbapi_connection.create_function("power", 2, math.pow, deterministic=True)


def refresh_statistics(connection, tables: list[str]) -> None:
    """Let the query planner see what a bulk write changed.

    PostgreSQL plans with statistics that autovacuum refreshes only now and
    then; a table that grew from nothing in one import still looks empty, and
    lookups into it fall back to sequential scans (measured: 100 000 events
    took two minutes instead of ten seconds). Table names come from our own
    metadata, never from users.
    """
    if connection.dialect.name == "postgresql":
        for table in tables:
            connection.exec_driver_sql(f"ANALYZE {Base.metadata.tables[table].name}")
    else:
        connection.exec_driver_sql("PRAGMA optimize")


def make_session_factory(engine: Engine) -> sessionmaker:
    """Sessions bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
