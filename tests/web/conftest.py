"""Fixtures of the web tests: the tracking app, its test client, and a campaign sent to an outbox."""

from tests.web.tracking_fixtures import client, pack, sent, tracking_app  # noqa: F401
