"""The ``patron`` command: a Flask CLI group over the app factory."""

from __future__ import annotations

from flask.cli import FlaskGroup

from web import create_app


def main() -> None:
    FlaskGroup(create_app=create_app, name="patron", help="Patron: one profile per customer, a fresh email for each.")()
