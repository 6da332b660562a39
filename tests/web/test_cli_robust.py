"""What a newcomer's mistakes get from ``patron``: one line naming the thing, never a Python traceback."""

from __future__ import annotations

import click
import pytest

from web.cli import ID

TOO_BIG = str(2**63)  # one past the largest 64-bit id
CAMPAIGN_COMMANDS = [
    *("show", "status", "pause", "resume", "cancel", "resend-unknown", "send", "report", "work", "preview"),
]


def every_command(group: click.Group, ctx: click.Context, path: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from every_command(command, ctx, (*path, name))


def test_every_database_id_a_command_takes_is_checked_against_the_64_bit_range(app):
    with click.Context(app.cli) as ctx:
        commands = dict(every_command(app.cli, ctx))
    ids = [
        (" ".join(path), param.name)
        for path, command in commands.items()
        for param in command.params
        if param.name.endswith("_id")
    ]
    assert ("campaigns show", "campaign_id") in ids and ("campaigns report", "run_id") in ids
    unchecked = [
        (path, name)
        for path, name in ids
        if next(p for p in commands[tuple(path.split())].params if p.name == name).type is not ID
    ]
    assert unchecked == []


@pytest.mark.parametrize("command", CAMPAIGN_COMMANDS)
def test_an_id_past_64_bits_is_a_usage_error_naming_the_argument(runner, command):
    extra = ["--contact", "a@example.com"] if command == "preview" else []
    result = runner.invoke(args=["campaigns", command, TOO_BIG, *extra])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert f"Invalid value for '{'RUN_ID' if command == 'work' else 'CAMPAIGN_ID'}'" in result.output
    assert "9223372036854775807" in result.output


def test_a_run_option_past_64_bits_is_a_usage_error(runner):
    result = runner.invoke(args=["campaigns", "report", "1", "--run", TOO_BIG])
    assert result.exit_code == 2 and "Invalid value for '--run'" in result.output
