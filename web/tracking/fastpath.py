"""The click redirect's fast path: the common case of ``/r/`` answered before Flask's request machinery.

A GET of a click URL whose token verifies, whose link and sent delivery exist, whose contact grants
tracking and whose click the journal takes is answered here, with the status, headers, body and cookie
of ``views.click_redirect`` (both build them with ``views.click_answer``). Everything else falls through
to that view, which stays the one place that decides: a bad token, an unknown link, a contact without
tracking consent, a journal or database fault, the journal turned off, a first request before the
schema check, HEAD and every other method. What the fast path saves is Flask's request context,
routing, session and response objects: about a third of a click's CPU time.

It sits inside ProxyFix (``create_app`` wraps it), so the request it sees is the one the app would see.
"""

from __future__ import annotations

import re

from flask import Flask

from delivery.journal import JournalError
from segments.db import utcnow
from web.tracking import clicks
from web.tracking.views import MAX_USER_AGENT, app_signer, click_answer

# The view's route with its int converters: digits without a leading zero, at most 19 of them.
CLICK_PATH = re.compile(r"/r/([1-9][0-9]{0,18})/([1-9][0-9]{0,18})/([A-Za-z0-9_.~-]{1,200})")
MAX_ID = 2**63 - 1


class ClickFastPath:
    """WSGI middleware: answers the common click, hands every other request to ``wsgi_app`` unchanged."""

    def __init__(self, app: Flask, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "GET":
            match = CLICK_PATH.fullmatch(environ.get("PATH_INFO") or "")
            if match is not None:
                answer = self._answer(environ, match)
                if answer is not None:
                    headers, body = answer
                    start_response("302 FOUND", headers)
                    return [body]
        return self.wsgi_app(environ, start_response)

    def _answer(self, environ, match) -> tuple[list[tuple[str, str]], bytes] | None:
        """The 302 of a click the journal took, or None to let the view answer."""
        app = self.app
        delivery_id, link_id, token = int(match[1]), int(match[2]), match[3]
        if delivery_id > MAX_ID or link_id > MAX_ID or not app.extensions.get("patron_schema_ready"):
            return None
        if app.config.get("PATRON_CLICK_JOURNAL") is None or not app_signer(app).verify(
            token, "r", delivery_id, link_id
        ):
            return None
        try:
            target = app.extensions["patron_click_target"](delivery_id, link_id)
        except Exception:  # the view reads again, logs and answers 503
            return None
        if target is None or not target.tracked:
            return None
        answer = click_answer(app, target.url, delivery_id)  # before the append: nothing may fail after it
        agent = environ.get("HTTP_USER_AGENT")
        try:
            kept = clicks.journal_click(app, delivery_id, link_id, utcnow(), agent[:MAX_USER_AGENT] if agent else None)
        except JournalError:  # the view tries the journal again, then records the click itself
            return None
        return answer if kept else None
