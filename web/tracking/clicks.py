"""The app's click journal and its drainer (``delivery.journal``), one of each per app and process.

``PATRON_CLICK_JOURNAL`` names the directory (default ``<instance>/journal``); ``off`` records each
click before its redirect is answered, as ``delivery.responses.click`` does. The drainer thread starts
with the first journalled click, or when ``patron serve`` boots a worker (which then records what an
earlier process left), and drains what is left when the process exits.
"""

from __future__ import annotations

import atexit
import logging
import threading
from datetime import datetime

from flask import Flask
from sqlalchemy.exc import DataError, IntegrityError

from delivery.clicks import read_batch, record_clicks
from delivery.journal import ClickJournal, ClickRecord, Drainer
from segments.db import first_line

log = logging.getLogger(__name__)
_EXTENSION = "patron_click_drainer"
_lock = threading.Lock()


def drainer(app: Flask) -> Drainer | None:
    """The app's drainer (with its journal), None when ``PATRON_CLICK_JOURNAL`` is off."""
    directory = app.config.get("PATRON_CLICK_JOURNAL")
    if directory is None:
        return None
    found = app.extensions.get(_EXTENSION)
    if found is None:
        with _lock:
            found = app.extensions.get(_EXTENSION)
            if found is None:
                found = Drainer(ClickJournal(directory), writer(app))
                app.extensions[_EXTENSION] = found
                atexit.register(found.stop)
    return found


def start(app: Flask) -> None:
    """Start the app's drainer thread in this process (a no-op when the journal is off or it runs)."""
    found = drainer(app)
    if found is not None:
        found.start()


def journal_click(app: Flask, delivery_id: int, link_id: int, at: datetime, user_agent: str | None) -> bool:
    """Append a click to the app's journal and make sure it will be drained; False when the journal is off.

    Raises ``delivery.journal.JournalError`` when the journal cannot take it.
    """
    found = drainer(app)
    if found is None:
        return False
    found.journal.append(delivery_id, link_id, at, user_agent)
    found.start()
    return True


def flush(app: Flask) -> int:
    """Record every journalled click now, in this thread; how many were handed to the database."""
    found = app.extensions.get(_EXTENSION)
    return 0 if found is None else found.drain()


def stop(app: Flask) -> None:
    """Stop the app's drainer after draining what it can (tests that build many apps call it)."""
    found = app.extensions.pop(_EXTENSION, None)
    if found is not None:
        atexit.unregister(found.stop)
        found.stop()


def writer(app: Flask):
    """The drainer's ``write``: records a batch of journalled clicks in the app's database and commits.

    A batch the database refuses for its values (``DataError`` or ``IntegrityError``: the same batch would
    fail the same way again) is halved and each half written on its own, down to the clicks at fault,
    which are logged with their journal position and ids and skipped: one bad record never holds up the
    clicks behind it. When the database refuses every click of the batch, the fault is not the clicks'
    (a schema the code does not match yet, say, during a deploy): nothing is skipped, and the error is
    raised like any other (the database down, locked, a table missing), so the drainer keeps the batch and
    offers it again later.
    """
    sessions = app.extensions["patron_sessions"]
    half_life_days = app.config["PATRON_INTEREST_HALF_LIFE_DAYS"]

    def commit(records: list[ClickRecord]) -> int:
        with sessions() as session:
            batch = read_batch(session, records)
            session.rollback()  # the write transaction starts with its write (SQLite then waits its turn)
            recorded = record_clicks(session, batch, half_life_days=half_life_days)
            session.commit()
            return recorded

    def isolate(records: list[ClickRecord]) -> tuple[int, list[tuple[ClickRecord, Exception]]]:
        """(clicks recorded, clicks refused with their errors): the batch, halved while refused."""
        try:
            return commit(records), []
        except (DataError, IntegrityError) as exc:
            if len(records) == 1:
                return 0, [(records[0], exc)]
        half = len(records) // 2
        (first, first_refused), (second, second_refused) = isolate(records[:half]), isolate(records[half:])
        return first + second, first_refused + second_refused

    def write(records: list[ClickRecord]) -> int:
        recorded, refused = isolate(records)
        if refused and len(refused) == len(records):  # every click, a lone one too: the database's fault, all kept
            raise refused[0][1]
        for record, exc in refused:
            log.error(
                "click journal %s (delivery %s, link %s): not recordable, skipped: %s",
                record.key,
                record.delivery_id,
                record.link_id,
                first_line(exc),
            )
        return recorded

    return write
