"""Segment names from the command line: one line, no invisible characters, trimmed, within the limit."""

import pytest
from sqlalchemy import select

from segments.models import Segment
from segments.service import NAME_LENGTH

RULES = "all:\n  - field: locale\n    op: startswith\n    value: es\n"


@pytest.mark.parametrize(
    "name, reason",
    [
        ("a\nb", "line break"),
        ("a\rb", "line break"),
        ("a\u2028b", "U+2028"),
        ("Eve\u202eliam", "U+202E"),
        ("a\x85b", "U+0085"),
        ("   ", "must not be empty"),
        ("x" * (NAME_LENGTH + 1), f"the limit is {NAME_LENGTH}"),
    ],
)
def test_a_segment_name_that_cannot_be_addressed_is_refused_naming_the_argument(
    runner, session, tmp_path, name, reason
):
    rules = tmp_path / "s1.yaml"
    rules.write_text(RULES)
    result = runner.invoke(args=["segments", "create", name, "--rules", str(rules)])
    assert result.exit_code == 2, result.output
    assert "Invalid value for 'NAME'" in result.output and reason in result.output
    assert "Traceback" not in result.output
    assert session.scalars(select(Segment.name)).all() == []


def test_a_name_is_trimmed_and_found_again_by_what_was_listed(runner, session, tmp_path):
    rules = tmp_path / "s1.yaml"
    rules.write_text(RULES)
    assert runner.invoke(args=["segments", "create", "  spanish  ", "--rules", str(rules)]).exit_code == 0
    listed = runner.invoke(args=["segments", "list"]).output.splitlines()[2].split()[0]
    assert listed == "spanish"
    assert runner.invoke(args=["segments", "count", listed]).output == "0 contacts\n"


def test_create_help_names_the_rules_option():
    from click.testing import CliRunner

    from web.segments_cli import segments_group

    text = CliRunner().invoke(segments_group, ["create", "--help"]).output
    assert "FILE" not in text.split("Options:")[0]
    assert "--rules" in text.split("Options:")[0]
