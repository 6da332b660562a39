"""The ``patron`` command: a Flask CLI group over the app factory."""

from __future__ import annotations

import click
from flask.cli import FlaskGroup

from config import SettingsError
from web import create_app


def _create_app():
    try:
        return create_app()
    except SettingsError as exc:
        # A bad setting stops start-up with one line that names the variable.
        raise click.ClickException(f"invalid setting {exc}") from None


def main() -> None:
    FlaskGroup(
        create_app=_create_app, name="patron", help="Patron: one profile per customer, a fresh email for each."
    )()


if __name__ == "__main__":
    main()
