"""CSS inlining shared through the database: premailer once per version for every worker and run.

Each worker process has its own in-memory ``Inliner``; on its own, a pool of N
workers would run premailer N times per version, and every new run again.
``SharedInliner`` keeps the result in ``inlined_parts``. The first worker to
need a version claims its row and inlines it; the others wait for the row to
be filled (or, if the claimant died, inline it themselves after a while).
"""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta

from sqlalchemy import select, update

from content.models import InlinedPart
from content.rendering import INLINED_FORMAT, Inliner, inline_css
from segments.db import insert_for, utcnow

CLAIM_TIMEOUT = timedelta(seconds=30)  # a claim older than this was abandoned: inline it anew
POLL_SECONDS = 0.02


class SharedInliner(Inliner):
    """An ``Inliner`` whose results every worker and later run reuse; ``calls`` counts this process's premailer runs."""

    def __init__(self, session_factory):
        super().__init__()
        self._sessions = session_factory

    def inline(self, key, source: str, css: str, *, fragment: bool) -> str:
        cache_key = (key, css)
        if cache_key in self._cache:
            return self._cache[cache_key]
        kind, version_id = key
        # The format is part of the digest: a row inlined by an older Patron is never served as this one's.
        digest = hashlib.sha256(f"{INLINED_FORMAT}\n{css}".encode()).hexdigest()
        row = {"kind": kind, "version_id": version_id, "css_digest": digest}
        html = self._wait_or_claim(row)
        if html is None:
            self.calls += 1
            html = inline_css(source, css, fragment=fragment)
            with self._sessions() as session:
                session.execute(_where(update(InlinedPart), row).values(html=html))
                session.commit()
        self._cache[cache_key] = html
        return html

    def _wait_or_claim(self, row: dict) -> str | None:
        """The stored HTML, or None once this process holds the claim to make it."""
        while True:
            with self._sessions() as session:
                claimed = session.execute(
                    insert_for(session, InlinedPart)
                    .values(**row, claimed_at=utcnow())
                    .on_conflict_do_nothing()
                    .returning(InlinedPart.kind)
                ).first()
                if claimed:
                    session.commit()
                    return None
                html, claimed_at = session.execute(_where(select(InlinedPart.html, InlinedPart.claimed_at), row)).one()
                if html is not None:
                    return html
                if utcnow() - claimed_at > CLAIM_TIMEOUT:
                    # Whoever claimed it is gone: take the claim over.
                    session.execute(_where(update(InlinedPart), row).values(claimed_at=utcnow()))
                    session.commit()
                    return None
            time.sleep(POLL_SECONDS)


def _where(statement, row: dict):
    return statement.where(
        InlinedPart.kind == row["kind"],
        InlinedPart.version_id == row["version_id"],
        InlinedPart.css_digest == row["css_digest"],
    )
