"""What a newcomer's mistakes get from ``patron``: one line naming the thing, never a Python traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from web.cli import ID

ROOT = Path(__file__).resolve().parents[2]

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


def patron(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """``patron ARGS`` in a process of its own, from this checkout, as a shell runs it."""
    program = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from web.cli import main; main()"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PATRON_")}
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        env={**environment, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_help_needs_no_instance_directory(tmp_path):
    missing = tmp_path / "never" / "made"
    for args in (["--help"], ["campaigns", "--help"], ["campaigns", "send", "--help"]):
        result = patron(*args, env={"PATRON_INSTANCE_PATH": str(missing)}, cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.startswith("Usage: patron"), result.stderr
    assert not (tmp_path / "never").exists()
    listed = patron("--help", env={"PATRON_INSTANCE_PATH": "/etc/passwd"}, cwd=tmp_path)
    assert listed.returncode == 0 and "campaigns" in listed.stdout and "Traceback" not in listed.stderr


def test_an_instance_path_that_is_a_file_or_under_one_is_one_line_naming_the_variable(tmp_path):
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n", encoding="utf-8")
    for instance in (a_file, a_file / "instance"):
        line = one_line_error(patron("campaigns", "list", env={"PATRON_INSTANCE_PATH": str(instance)}, cwd=tmp_path))
        assert "PATRON_INSTANCE_PATH" in line and str(instance) in line


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://patron:hunter2@127.0.0.1:5432/patron_no_such_database",
        "postgresql://patron:hunter2@127.0.0.1:1/patron",  # nothing listens on port 1
    ],
)
@pytest.mark.parametrize("command", [["campaigns", "list"], ["campaigns", "show", "1"], ["db", "upgrade"]])
def test_a_database_that_cannot_be_reached_is_one_line_with_the_url_and_no_password(tmp_path, url, command):
    env = {"PATRON_INSTANCE_PATH": str(tmp_path / "instance"), "PATRON_DATABASE_URL": url}
    line = one_line_error(patron(*command, env=env, cwd=tmp_path))
    shown = url.replace("postgresql://", "postgresql+psycopg://").replace("hunter2", "***")
    assert line.startswith(f"Error: cannot reach the database {shown}: connection failed: ")
    assert "hunter2" not in line


def test_a_base_url_with_a_header_in_it_stops_every_command_before_anything_is_sent(tmp_path):
    env = {
        "PATRON_INSTANCE_PATH": str(tmp_path / "instance"),
        "PATRON_BASE_URL": "http://x.example\r\nBcc: v@example.com",
    }
    line = one_line_error(patron("campaigns", "list", env=env, cwd=tmp_path))
    assert line == "Error: invalid setting PATRON_BASE_URL: must not contain a line break or other control character"


FILE_COMMANDS = {
    "campaigns create": lambda path: ["campaigns", "create", path],
    "segments count": lambda path: ["segments", "count", "--rules", path],
    "contacts import": lambda path: ["contacts", "import", path],
    "events import": lambda path: ["events", "import", path, "--channel", "pos"],
    "content import": lambda path: ["content", "import", path],
    "bounces process": lambda path: ["bounces", "process", "--maildir", path],
}


@pytest.mark.parametrize("command", FILE_COMMANDS)
@pytest.mark.parametrize("kind", ["not UTF-8", "a directory", "missing"])
def test_every_command_that_reads_a_file_says_what_is_wrong_with_it_in_one_line(runner, tmp_path, command, kind):
    path = tmp_path / "input.yaml"
    if kind == "not UTF-8":
        path.write_bytes(b"name: ok\nsubject: \xe9t\xe9\n")
        if command == "content import":  # a pack is a directory; its manifest is the file
            path = tmp_path / "pack"
            path.mkdir()
            (path / "pack.yaml").write_bytes(b"key: \xff\n")
    elif kind == "a directory":
        path.mkdir()
    result = runner.invoke(args=FILE_COMMANDS[command](str(path)))
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.exception
    error = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1 and str(path) in error[0], result.output


def test_a_campaign_file_not_in_utf8_is_named_with_its_line(runner, tmp_path):
    path = tmp_path / "k2.yaml"
    path.write_bytes(b"name: ok\nsubject: \xe9t\xe9\n")
    result = runner.invoke(args=["campaigns", "create", str(path)])
    assert result.exit_code == 1
    assert result.output == f"Error: {path}, line 2: not UTF-8 text (byte 0xe9); save it as UTF-8\n"
