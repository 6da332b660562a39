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
from flask.cli import ScriptInfo
from sqlalchemy.exc import DBAPIError

from config import SettingsError
from web.db import connection_failed, unreachable

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
    """A group of Patron's commands (``web.commands``); the app is built by the factory only when one runs.

    ``--help`` at any level needs no settings, instance directory or database. Every command is
    ``with_appcontext``, which builds the app through the ScriptInfo in the context. A database that cannot
    be reached ends any command with one line (see ``web.db.unreachable``), however deep the failure.
    """

    def make_context(self, info_name, args, parent=None, **extra):
        extra.setdefault("obj", ScriptInfo(create_app=_create_app, set_debug_flag=False))
        return super().make_context(info_name, args, parent, **extra)

    def list_commands(self, ctx):
        return sorted(self._commands())

    def get_command(self, ctx, name):
        return self._commands().get(name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DBAPIError as exc:
            if not connection_failed(exc):
                raise
            # The app was built, or no connection would have been tried; load_app returns that one.
            url = ctx.ensure_object(ScriptInfo).load_app().config["PATRON_DATABASE_URL"]
            raise unreachable(url, exc) from None

    @staticmethod
    def _commands() -> dict[str, click.Command]:
        from web import commands  # here, as _create_app

        return {command.name: command for command in commands()}


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
