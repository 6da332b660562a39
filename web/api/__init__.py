"""The server-to-server API: API keys, conversions from shops, bounces from mail systems; and the conversion pixel.

``init_app`` registers the blueprint (``/api/v1/…`` and ``/c.gif``) and ``patron api-keys``. The API
authenticates by bearer key, never by cookie, so it is exempt from CSRF protection. See docs/api.md.
"""

from __future__ import annotations

from flask import Flask

from web.api.cli import api_keys_group
from web.api.views import bp

__all__ = ["bp", "init_app"]


def init_app(app: Flask) -> None:
    """Register the API blueprint and ``patron api-keys`` on ``app``; call it after CSRFProtect, if any."""
    app.register_blueprint(bp)
    app.cli.add_command(api_keys_group)
    csrf = app.extensions.get("csrf")
    if csrf is not None:  # token-authenticated, no cookies: a forged cross-site request carries no key
        csrf.exempt(bp)
