"""The Flask app factory, the public tracking, unsubscribe and preference pages (``tracking``), the API
(``api``: keys, conversions, bounces), ``patron serve`` and the ``patron`` CLI; later the marketer UI.

The only package that imports Flask or reads ``config``; it may import every
other package and passes settings down to them as arguments.
"""

from __future__ import annotations

import click
from flask import Flask
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

import config
from web import api, db
from web.bounces_cli import bounces_group
from web.campaigns_cli import campaigns_group
from web.clicks_cli import clicks_group
from web.contacts_cli import contacts_group, events_group
from web.content_cli import content_group
from web.demo import demo_command
from web.segments_cli import segments_group
from web.serve import serve_command
from web.tracking import bp as tracking_bp
from web.tracking.fastpath import ClickFastPath
from web.tracking.forms import FORM_LIFETIME_SECONDS
from web.tracking.views import one_click_unsubscribe, preferences


def create_app(test_config: dict | None = None) -> Flask:
    """Build the Patron app; ``test_config`` overrides settings read from the environment."""
    settings = config.load_settings()
    app = Flask(__name__, instance_path=str(settings.instance_path), instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY=settings.secret_key,
        SECRET_KEY_FALLBACKS=list(settings.old_secret_keys),  # rotation: tokens and sessions of retired keys
        PATRON_SETTINGS=settings,
        PATRON_DATABASE_URL=settings.database_url,
        PATRON_BASE_URL=settings.base_url,
        PATRON_INTEREST_HALF_LIFE_DAYS=settings.interest_half_life_days,
        PATRON_DELIVERY_URL=settings.delivery_url,
        PATRON_ATTRIBUTION_WINDOW_DAYS=settings.attribution_window_days,
        PATRON_PROXY_HOPS=settings.proxy_hops,
        PATRON_CLICK_JOURNAL=settings.click_journal,
        WTF_CSRF_TIME_LIMIT=FORM_LIFETIME_SECONDS,
    )
    if test_config:
        app.config.from_mapping(test_config)
    db.init_app(app)
    app.wsgi_app = ClickFastPath(app, app.wsgi_app)  # inside ProxyFix: it sees the client's address
    hops = app.config["PATRON_PROXY_HOPS"]
    if hops:  # trust exactly this many proxies' X-Forwarded-* headers, no more
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_prefix=hops)
    csrf = CSRFProtect(app)  # every form; views that take no form opt out here
    csrf.exempt(one_click_unsubscribe)  # RFC 8058: mail providers POST with no cookie and no token
    csrf.exempt(preferences)  # its form checks the CSRF token itself, after the URL's token (404 first)
    app.register_blueprint(tracking_bp)
    for command in commands():
        app.cli.add_command(command)
    api.init_app(app)  # after CSRFProtect, which it is exempt from
    return app


def commands() -> list[click.Command]:
    """Every ``patron`` command group and command; each builds the app only when it runs (``with_appcontext``)."""
    return [
        contacts_group,
        events_group,
        segments_group,
        content_group,
        campaigns_group,
        demo_command,
        serve_command,
        bounces_group,
        clicks_group,
        db.db_group,
        api.api_keys_group,
    ]
