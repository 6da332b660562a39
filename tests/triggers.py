"""A real database fault for the rows a test names: a trigger that refuses them, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text


def quoted(value: str) -> str:
    """``value`` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


@contextmanager
def refusing_trigger(
    engine, name: str, table: str, condition: str, message: str, *, errcode: str | None = None, detail: str = ""
) -> Iterator[None]:
    """While the block runs, a ``BEFORE INSERT`` trigger ``name`` on ``table`` refuses every row for which the
    SQL ``condition`` (on ``NEW``) holds. PostgreSQL raises ``message`` (with SQLSTATE ``errcode``, default
    P0001, and ``detail`` on a line of its own); SQLite aborts the statement with ``message``, a constraint
    failure. End the test's own read transactions first: PostgreSQL waits for them to drop the trigger."""
    if engine.dialect.name == "postgresql":
        using = ", ".join(
            f"{option} = {quoted(value)}" for option, value in (("ERRCODE", errcode), ("DETAIL", detail)) if value
        )
        install = [
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF {condition} THEN RAISE EXCEPTION {quoted(message)}{' USING ' + using if using else ''}; END IF;"
            " RETURN NEW; END $$",
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()",
        ]
        remove = [f"DROP TRIGGER {name} ON {table}", f"DROP FUNCTION {name}()"]
    else:
        install = [
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} WHEN {condition}"
            f" BEGIN SELECT RAISE(ABORT, {quoted(message)}); END"
        ]
        remove = [f"DROP TRIGGER {name}"]
    with engine.begin() as connection:
        for statement in install:
            connection.execute(text(statement))
    try:
        yield
    finally:
        with engine.begin() as connection:
            for statement in remove:
                connection.execute(text(statement))
