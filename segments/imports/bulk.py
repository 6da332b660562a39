"""Many rows through one statement, straight to the driver.

SQLAlchemy's executemany builds and type-processes a parameter dict per row,
which costs more than SQLite's own insert. An import writes hundreds of
thousands of rows, so its hot statements are compiled once per dialect, their
rows arrive as tuples, and values are converted only where a column's type
needs it (JSON) — values shared by every row (the batch's timestamp) once per
batch. The SQL is still SQLAlchemy's: no text is written by hand, and values
are always bound parameters.
"""

from __future__ import annotations

from collections.abc import Sequence


class Bulk:
    """A Core INSERT/UPSERT/UPDATE run for many rows at once.

    ``columns`` name the values of each row tuple, in order; ``shared`` name
    values that are the same for every row and are passed to ``execute``.
    """

    def __init__(self, statement, columns: Sequence[str], shared: Sequence[str] = ()):
        self.statement = statement
        self.columns = tuple(columns)
        self.shared = tuple(shared)
        self._compiled: dict[str, tuple] = {}

    def _prepare(self, dialect):
        if dialect.name not in self._compiled:
            names = self.columns + self.shared
            compiled = self.statement.compile(dialect=dialect, column_keys=list(names), for_executemany=True)
            order = [names.index(name) for name in compiled.positiontup] if dialect.positional else None
            if order == list(range(len(names))):
                order = None

            def processor(name):
                return compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)

            converters = [(i, fn) for i, name in enumerate(self.columns) if (fn := processor(name))]
            self._compiled[dialect.name] = (str(compiled), converters, processor, order)
        return self._compiled[dialect.name]

    def execute(self, connection, rows: Sequence[tuple], **shared) -> None:
        """Execute once for every tuple in ``rows``."""
        if not rows:
            return
        dialect = connection.dialect
        sql, converters, processor, order = self._prepare(dialect)
        if converters:
            rows = [_converted(row, converters) for row in rows]
        if self.shared:
            tail = tuple((fn(shared[name]) if (fn := processor(name)) else shared[name]) for name in self.shared)
            rows = [row + tail for row in rows]
        if order is not None:
            rows = [tuple(row[i] for i in order) for row in rows]
        if not dialect.positional:
            names = self.columns + self.shared
            rows = [dict(zip(names, row)) for row in rows]
        connection.exec_driver_sql(sql, rows)


def _converted(row: tuple, converters) -> tuple:
    values = list(row)
    for index, convert in converters:
        values[index] = convert(values[index])
    return tuple(values)
