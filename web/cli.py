"""The ``patron`` command: the commands the app registers, loaded through the app factory.

Only Patron's own commands and options: none of Flask's development commands
(``run``, ``shell``, ``routes``) or options (``--app``, ``--env-file``,
``--debug``), and ``--version`` is Patron's.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys

import click
from flask import has_app_context
from flask.cli import ScriptInfo

from config import SettingsError

PROGRAM = "patron"
# Every database id a command takes (a campaign, a run): ids are 64-bit, so a larger number is a usage error
# naming the argument, not a database error.
ID = click.IntRange(1, 2**63 - 1)


def _create_app():
    from web import create_app  # imported here: the command modules that web registers import this module

    try:
        return create_app()
    except SettingsError as exc:
        # A bad setting stops start-up with one line that names the variable.
        raise click.ClickException(f"invalid setting {exc}") from None


class PatronGroup(click.Group):
    """A group whose commands are the app's (``app.cli``), the app built by the factory on first need."""

    def make_context(self, info_name, args, parent=None, **extra):
        # ``with_appcontext`` finds the app through the ScriptInfo in the context.
        extra.setdefault("obj", ScriptInfo(create_app=_create_app, set_debug_flag=False))
        return super().make_context(info_name, args, parent, **extra)

    def list_commands(self, ctx):
        return sorted(self._app_commands(ctx).list_commands(ctx))

    def get_command(self, ctx, name):
        return self._app_commands(ctx).get_command(ctx, name)

    @staticmethod
    def _app_commands(ctx) -> click.Group:
        app = ctx.ensure_object(ScriptInfo).load_app()
        if not has_app_context():
            ctx.with_resource(app.app_context())
        return app.cli


@click.group(PROGRAM, cls=PatronGroup)
@click.version_option(package_name="patron", prog_name=PROGRAM, message="%(prog)s %(version)s")
def cli():
    """Patron: one profile per customer, a fresh email for each."""


def command_name() -> str:
    """``patron`` as this shell can run it: the bare name when PATH finds this program, else the path it ran by."""
    program = sys.argv[0]
    if os.path.basename(program) != PROGRAM or os.sep not in program:
        return PROGRAM  # found on PATH, or not the installed script at all (python -m web.cli, tests)
    found = shutil.which(PROGRAM)
    try:
        if found and os.path.samefile(found, program):
            return PROGRAM
    except OSError:
        pass
    return shlex.quote(program)


def main() -> None:
    cli(prog_name=PROGRAM)


if __name__ == "__main__":
    main()
