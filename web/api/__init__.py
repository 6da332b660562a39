"""The server-to-server API: API keys, conversions from shops, bounces from mail systems; and the conversion pixel.

``init_app`` registers the blueprint (``/api/v1/…`` and ``/c.gif``); ``api_keys_group`` is ``patron api-keys``. The API
authenticates by bearer key, never by cookie, so it is exempt from CSRF protection. See docs/api.md.
"""

from __future__ import annotations

from flask import Flask

from web.api.cli import api_keys_group
from web.api.views import bp

__all__ = ["api_keys_group", "bp", "init_app"]


def init_app(app: Flask) -> None:
    """Register the API blueprint on ``app`` (``patron api-keys`` is among ``web.commands``); call it after
    CSRFProtect, if any."""
    app.register_blueprint(bp)
    csrf = app.extensions.get("csrf")
    if csrf is not None:  # token-authenticated, no cookies: a forged cross-site request carries no key
        csrf.exempt(bp)
