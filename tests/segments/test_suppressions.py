"""``segments.suppressions.suppress`` when two processes suppress one address at the same moment."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import insert, select

from segments.db import make_session_factory, utcnow
from segments.models import Contact, Suppression
from segments.suppressions import suppress
from tests.conftest import empty_tables


@pytest.fixture
def postgresql(request):
    """An empty PostgreSQL database (SQLite has one writer at a time: two suppressions cannot overlap there)."""
    engine = request.getfixturevalue("_postgresql_engine")
    empty_tables(engine)
    return engine


def test_a_suppression_racing_another_keeps_the_first_reason_and_does_not_fail(postgresql):
    """Process B has inserted the suppression but not committed when process A, which did not see it, inserts
    its own: A waits for B, then keeps B's row (once this failed A with a unique violation)."""
    sessions = make_session_factory(postgresql)
    with sessions() as setup:
        setup.add(Contact(email="ana@example.com"))
        setup.commit()
    with sessions() as first, sessions() as second:
        first.execute(
            insert(Suppression).values(email="ana@example.com", reason="bounced", source="maildir", created_at=utcnow())
        )
        outcome = {}

        def suppress_meanwhile():
            try:
                outcome["reason"] = suppress(second, "ana@example.com", "unsubscribed", "one_click").reason
                second.commit()
            except Exception as exc:  # noqa: BLE001  (the assertion below shows it)
                outcome["error"] = exc

        racing = threading.Thread(target=suppress_meanwhile)
        racing.start()
        time.sleep(0.5)  # the second session's INSERT is now waiting on the first one's row
        assert racing.is_alive()
        first.commit()
        racing.join(timeout=30)
    assert outcome == {"reason": "bounced"}
    with sessions() as check:
        assert check.execute(select(Suppression.reason, Suppression.source)).all() == [("bounced", "maildir")]
        assert check.scalar(select(Contact.status)) == "bounced"
