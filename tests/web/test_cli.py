"""The newcomer's path: `patron` runs as its hints print it, says its own version, and shows only Patron's commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from click.testing import CliRunner

from web.cli import cli

ROOT = Path(__file__).resolve().parents[2]
# The console script `pip install -e .` wrote beside the interpreter running the tests: the real `patron`.
SCRIPT = Path(sys.executable).parent / "patron"
FLASK_COMMANDS = {"run", "shell", "routes"}
FLASK_OPTIONS = {"--app", "-A", "--env-file", "-e", "--debug", "--no-debug"}


def patron(*args, cwd, path: str, env: dict | None = None, program: str | None = None):
    """Run the installed `patron` script as a shell would, with PATH set to ``path``."""
    environment = {**os.environ, **(env or {}), "PATH": path}
    command = [program or str(SCRIPT), *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)


def help_sections(text: str) -> dict[str, list[str]]:
    """The names listed under each heading (``Options:``, ``Commands:``) of a click help page."""
    sections: dict[str, list[str]] = {}
    heading = None
    for line in text.splitlines():
        if re.fullmatch(r"[A-Z][a-z]+:", line):
            heading = line[:-1]
            sections[heading] = []
        elif heading and re.match(r"  \S", line):  # an entry; its description's wrapped lines are indented deeper
            first_column = line.strip().split("  ")[0]
            sections[heading] += re.findall(r"-{1,2}[\w-]+", first_column) if heading == "Options" else [first_column]
    return sections


def test_version_is_patrons_own_from_the_package_metadata(tmp_path):
    assert SCRIPT.is_file(), f"{SCRIPT}: the test needs Patron installed in this interpreter's environment"
    result = patron("--version", cwd=tmp_path, path=os.defpath, env={"PATRON_INSTANCE_PATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert result.stdout == f"patron {declared}\n" == f"patron {metadata.version('patron')}\n"
    assert "Flask" not in result.stdout and "Werkzeug" not in result.stdout


def test_help_lists_patrons_commands_and_none_of_flasks(tmp_path, monkeypatch):
    monkeypatch.setenv("PATRON_INSTANCE_PATH", str(tmp_path))
    result = CliRunner().invoke(cli, ["--help"], prog_name="patron")
    assert result.exit_code == 0, result.output
    sections = help_sections(result.output)
    commands = {
        "api-keys",
        "bounces",
        "campaigns",
        "clicks",
        "contacts",
        "content",
        "db",
        "demo",
        "events",
        "segments",
        "serve",
    }
    assert set(sections["Commands"]) == commands
    assert set(sections["Options"]) == {"--version", "--help"}
    assert result.output.startswith("Usage: patron [OPTIONS] COMMAND [ARGS]...")


def test_flasks_development_commands_and_options_are_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("PATRON_INSTANCE_PATH", str(tmp_path))
    for command in sorted(FLASK_COMMANDS):
        result = CliRunner().invoke(cli, [command], prog_name="patron")
        assert result.exit_code == 2 and re.search(f"No such command:? '?{command}'?", result.output)
    for option in sorted(FLASK_OPTIONS):
        result = CliRunner().invoke(cli, [option, "x", "campaigns", "--help"], prog_name="patron")
        assert result.exit_code == 2 and re.search(f"No such option:? '?{option}'?", result.output)


def test_help_needs_no_settings_and_a_command_says_what_is_wrong_in_one_line(tmp_path):
    env = {"PATRON_INSTANCE_PATH": str(tmp_path), "PATRON_INTEREST_HALF_LIFE_DAYS": "-1"}
    shown = patron("--help", cwd=tmp_path, path=os.defpath, env=env)
    assert shown.returncode == 0 and shown.stdout.startswith("Usage: patron"), shown.stderr
    result = patron("campaigns", "list", cwd=tmp_path, path=os.defpath, env=env)
    assert result.returncode == 1
    assert (
        result.stderr == "Error: invalid setting PATRON_INTEREST_HALF_LIFE_DAYS: must be a positive number, got '-1'\n"
    )
    assert "Traceback" not in shown.stdout + shown.stderr + result.stdout + result.stderr


def test_hints_print_patron_as_this_shell_can_run_it(engine, tmp_path):
    env = {
        "PATRON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PATRON_INSTANCE_PATH": str(tmp_path / "instance"),
    }
    # Typed by its path, from the directory that holds the venv, with the venv not on PATH (not activated).
    venv = SCRIPT.parent.parent
    typed = os.path.join(venv.name, SCRIPT.parent.name, SCRIPT.name)
    by_path = patron("campaigns", "list", cwd=venv.parent, path=os.defpath, env=env, program=typed)
    assert by_path.returncode == 0, by_path.stderr
    assert by_path.stdout == f"no campaigns yet: `{typed} campaigns create FILE.yaml` stores one\n"
    # The venv activated: PATH finds the same program, so the hint says plain `patron`, as the README does.
    activated = patron("campaigns", "list", cwd=tmp_path, path=f"{SCRIPT.parent}{os.pathsep}{os.defpath}", env=env)
    assert activated.returncode == 0, activated.stderr
    assert activated.stdout == "no campaigns yet: `patron campaigns create FILE.yaml` stores one\n"


def test_every_command_the_demo_hints_at_runs(runner, session):
    demo = runner.invoke(args=["demo"])
    assert demo.exit_code == 0, demo.output
    hints = re.findall(r"^  patron (campaigns .+?)\s{2,}\S.*$", demo.output.split("\nNext:\n")[1], re.M)
    assert [hint.split()[1] for hint in hints] == ["show", "report", "preview", "send"]
    address = re.search(r"^  (\S+@\S+) ", demo.output, re.M).group(1)
    for hint in hints:
        result = runner.invoke(args=hint.replace("EMAIL", address).split())
        assert result.exit_code == 0, (hint, result.output)
    shown = runner.invoke(args=["campaigns", "show", "1"]).output
    assert re.findall(r"^  run (\d+): (\w+)", shown, re.M) == [("2", "finished"), ("1", "finished")]


def test_readme_setup_commands_activate_the_venv_the_hints_assume():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^    (python3 -m venv .+)$", setup, re.M)
    assert len(commands) == 3  # the demo, the tests, the tests on PostgreSQL
    for command in commands:
        steps = [step.strip() for step in command.split("&&")]
        assert steps[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"], command
        assert not any(step.startswith(".venv/bin/") for step in steps), command
    assert commands[0].endswith("&& patron demo")
