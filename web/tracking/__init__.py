"""The public tracking endpoints, with no login: the open pixel, click redirects, one-click unsubscribe
(RFC 8058) and the preference page, all behind the signed URLs of ``delivery.tracking.LinkSigner``.

A token that does not verify is a 404 before anything touches the database. Clicks go to the click
journal (``clicks``: one journal and drainer per app and process), and the common click is answered
before Flask's request machinery (``fastpath``), with the view's own answer.
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("tracking", __name__, template_folder="templates")

from web.tracking import views  # noqa: E402,F401  (registers the routes on bp)
