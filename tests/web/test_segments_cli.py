"""`patron segments create|count|preview|list` as an operator runs them, and the services under them."""

import json

import pytest

from segments.models import Contact, Segment
from segments.rules import RuleError
from segments.service import (
    DuplicateSegment,
    SegmentError,
    UnknownSegment,
    create_segment,
    get_segment_by_name,
    list_segments,
    save_segment,
    update_segment,
)

SPANISH = "all:\n  - field: locale\n    op: startswith\n    value: es\n"


@pytest.fixture
def audience(session):
    """Three Spanish speakers (one unsubscribed) and an English one."""
    session.add_all(
        [
            Contact(email="ana@example.com", first_name="Ana", last_name="Ruiz", locale="es"),
            Contact(email="luis@example.com", first_name="Luis", locale="es-MX"),
            Contact(email="gone@example.com", locale="es", status="unsubscribed"),
            Contact(email="bob@example.com", first_name="Bob", locale="en"),
        ]
    )
    session.commit()


@pytest.fixture
def rules_file(tmp_path):
    def write(text: str, name: str = "rules.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def count(runner, *args) -> int:
    result = runner.invoke(args=["segments", "count", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["count"]


def test_create_then_count_preview_and_list(runner, audience, rules_file, session):
    created = runner.invoke(
        args=["segments", "create", "spanish", "--rules", rules_file(SPANISH), "--description", "Spanish speakers"]
    )
    assert created.exit_code == 0, created.output
    assert "saved segment 'spanish': 2 contacts match now" in created.output
    assert get_segment_by_name(session, "spanish").rules == {
        "all": [{"field": "locale", "op": "startswith", "value": "es"}]
    }

    assert count(runner, "spanish") == 2
    result = runner.invoke(args=["segments", "count", "spanish"])
    assert result.output == "2 contacts\n"

    preview = runner.invoke(args=["segments", "preview", "spanish"])
    assert preview.exit_code == 0, preview.output
    header, rule, *rows, footer = preview.output.splitlines()
    assert header.split() == ["id", "email", "name", "locale"] and set(rule) == {"-", " "}
    assert [row.split()[1:] for row in rows] == [
        ["ana@example.com", "Ana", "Ruiz", "es"],
        ["luis@example.com", "Luis", "es-MX"],
    ]
    assert footer == "2 of 2 contacts shown"
    limited = runner.invoke(args=["segments", "preview", "spanish", "--limit", "1"])
    assert "ana@example.com" in limited.output and "luis@" not in limited.output
    assert limited.output.splitlines()[-1] == "1 of 2 contacts shown"

    listed = runner.invoke(args=["segments", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[2].split()[0] == "spanish" and "Spanish speakers" in listed.output


def test_count_a_rules_file_without_saving(runner, audience, rules_file, session):
    assert count(runner, "--rules", rules_file('{"field": "locale", "op": "eq", "value": "en"}', "en.json")) == 1
    assert count(runner, "--rules", rules_file("field: status\nop: ne\nvalue: active\n")) == 1
    assert session.query(Segment).count() == 0


def test_create_refuses_a_taken_name_unless_replacing(runner, audience, rules_file):
    runner.invoke(args=["segments", "create", "spanish", "--rules", rules_file(SPANISH)])
    english = rules_file("field: locale\nop: eq\nvalue: en\n", "en.yaml")
    again = runner.invoke(args=["segments", "create", "spanish", "--rules", english])
    assert again.exit_code == 1
    assert "a segment named 'spanish' already exists; add --replace to change its rules" in again.output
    assert count(runner, "spanish") == 2
    replaced = runner.invoke(args=["segments", "create", "spanish", "--rules", english, "--replace"])
    assert replaced.exit_code == 0, replaced.output
    assert count(runner, "spanish") == 1


def test_bad_rules_name_the_file_and_the_path(runner, rules_file, session):
    path = rules_file(
        "all:\n  - field: locale\n    op: eq\n    value: es\n  - interest: pizza\n    op: above\n    value: 3\n"
    )
    result = runner.invoke(args=["segments", "create", "pizza", "--rules", path])
    assert result.exit_code == 1
    assert f"{path}: all[1].op: must be one of: eq, gt, gte, lt, lte" in result.output
    assert session.query(Segment).count() == 0
    broken = runner.invoke(args=["segments", "count", "--rules", rules_file("all:\n  - field: [\n", "broken.yml")])
    assert broken.exit_code == 1 and "broken.yml: line 3" in broken.output


def test_errors_for_what_is_not_there(runner, audience, rules_file):
    unknown = runner.invoke(args=["segments", "count", "nobody"])
    assert unknown.exit_code == 1 and "no segment named 'nobody'" in unknown.output
    neither = runner.invoke(args=["segments", "preview"])
    assert neither.exit_code == 2 and "give a segment NAME or --rules FILE" in neither.output
    both = runner.invoke(args=["segments", "count", "x", "--rules", rules_file(SPANISH)])
    assert both.exit_code == 2
    missing = runner.invoke(args=["segments", "count", "--rules", "/nowhere/rules.yaml"])
    assert missing.exit_code == 2 and "/nowhere/rules.yaml" in missing.output
    assert runner.invoke(args=["segments", "list"]).output.startswith("no segments saved yet")


# --- the services the commands stand on -------------------------------------


def test_services_validate_and_only_flush(session):
    segment = create_segment(session, " spanish ", {"field": "email", "op": "eq", "value": "Ana@Example.com"})
    assert segment.id is not None and segment.name == "spanish"
    assert segment.rules == {"field": "email", "op": "eq", "value": "ana@example.com"}
    with pytest.raises(DuplicateSegment):
        create_segment(session, "spanish", {"all": []})
    with pytest.raises(RuleError, match=r"^op: must be one of"):
        create_segment(session, "bad", {"field": "locale", "op": "is", "value": "es"})
    with pytest.raises(UnknownSegment):
        update_segment(session, "nobody", description="x")
    with pytest.raises(SegmentError, match="101 characters long; the limit is 100"):
        create_segment(session, "x" * 101, {"all": []})
    update_segment(session, "spanish", description="Spanish speakers")
    save_segment(session, "all", {"all": []})
    assert [(s.name, s.description) for s in list_segments(session)] == [("all", None), ("spanish", "Spanish speakers")]
    session.rollback()  # nothing was committed
    assert list_segments(session) == []
