"""Hostile rules (issue #8, item 7): a 1,000-level rule, NUL and lone surrogates, arbitrary JSON.

Each is refused with RuleError naming the path, through the Python API on
SQLite and PostgreSQL and through the real `patron` script, never with a
traceback or a database error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from segments.compiler import compile_rules, count_contacts
from segments.models import Contact, Segment
from segments.rules import (
    KINDS,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NESTING,
    AllOf,
    AnyOf,
    FieldCondition,
    Not,
    Rule,
    RuleError,
    load_rules_file,
    parse_rules,
)
from segments.service import SegmentError, create_segment, get_segment_by_name

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
SCRIPT = Path(sys.executable).parent / "patron"
LOCALE_ES = {"field": "locale", "op": "eq", "value": "es"}
NUL_RULE = {
    "all": [
        LOCALE_ES,
        {"attr": "plan", "op": "eq", "value": "gold"},
        {"field": "first_name", "op": "eq", "value": "An\x00a"},
    ]
}
DEEP = 1000


def problems(data) -> list[str]:
    with pytest.raises(RuleError) as caught:
        parse_rules(data)
    return str(caught.value).splitlines()


def nested(kind: str, levels: int) -> dict:
    """``levels`` groups of ``kind`` around one condition, built without recursion."""
    rule: dict = LOCALE_ES
    for _ in range(levels):
        rule = {"not": rule} if kind == "not" else {kind: [rule]}
    return rule


# --- depth, before any recursion ---------------------------------------------


@pytest.mark.parametrize("kind", ["all", "any", "not"])
def test_a_thousand_level_rule_is_refused_by_depth_not_recursion_error(kind):
    (problem,) = problems(nested(kind, DEEP))
    assert problem.endswith(f"nests more than {MAX_DEPTH} levels of all/any/not; flatten the rule")
    step = "not" if kind == "not" else f"{kind}[0]"
    assert problem.startswith(".".join([step] * MAX_DEPTH) + ": ")


def test_the_deepest_allowed_rule_still_parses():
    assert isinstance(parse_rules(nested("all", MAX_DEPTH)), AllOf)


def test_a_typed_tree_a_thousand_levels_deep_is_refused_before_the_compiler_recurses(session):
    rule: Rule = FieldCondition("locale", "eq", "es")
    for level in range(DEEP):
        rule = Not(rule) if level % 3 == 0 else AllOf((rule,)) if level % 3 == 1 else AnyOf((rule,))
    with pytest.raises(RuleError, match=f"nests more than {MAX_DEPTH} levels"):
        count_contacts(session, rule, now=NOW, half_life_days=30)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.json", '{"not": ' * DEEP + json.dumps(LOCALE_ES) + "}" * DEEP),
        ("deep.yaml", "[" * DEEP + "]" * DEEP),
        ("deep.yml", "".join("  " * i + "not:\n" for i in range(DEEP)) + "  " * DEEP + "field: locale\n"),
    ],
)
def test_a_thousand_level_rules_file_is_refused_before_the_parser_recurses(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(RuleError) as caught:
        load_rules_file(path)
    too_deep = f"nests lists and mappings more than {MAX_NESTING} levels deep; flatten the rule"
    assert str(caught.value) == f"{path}: {too_deep}"


def test_a_rules_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"field": "email", "op": "in", "value": ["a" * 100] * (MAX_FILE_BYTES // 100)}))
    with pytest.raises(RuleError) as caught:
        load_rules_file(path)
    assert str(caught.value) == f"{path}: is larger than 4 MB; split the segment"


def test_a_number_too_long_to_convert_is_a_rule_error(tmp_path):
    files = [("n.json", '{"attr": "a", "op": "eq", "value": 1%s}'), ("n.yaml", "attr: a\nop: eq\nvalue: 1%s\n")]
    for name, text in files:
        path = tmp_path / name
        path.write_text(text % ("0" * 5000))
        with pytest.raises(RuleError, match=f"^{path}: cannot be read: Exceeds the limit"):
            load_rules_file(path)


# --- characters PostgreSQL refuses ---------------------------------------------


@pytest.mark.parametrize(
    ("rule", "path", "why"),
    [
        (NUL_RULE, "all[2].value", "contains the NUL character (U+0000), which the database cannot store"),
        (
            {"any": [LOCALE_ES, {"field": "email", "op": "in", "value": ["a@x.io", "b\ud800@x.io"]}]},
            "any[1].value[1]",
            "contains a lone surrogate (U+D800), which is not Unicode text",
        ),
        (
            {"not": {"event": {"type": "buy", "where": {"sku\x00": 1}}, "op": "gt", "value": 0}},
            'not.event.where["sku\\u0000"]',
            "the key contains the NUL character (U+0000), which the database cannot store",
        ),
        (
            {"attr": "pl\udfffan", "op": "exists", "value": True},
            "attr",
            "contains a lone surrogate (U+DFFF), which is not Unicode text",
        ),
    ],
)
def test_nul_and_lone_surrogates_are_refused_with_their_path(rule, path, why):
    assert problems(rule) == [f"{path}: {why}"]


def test_every_refused_value_is_listed(session):
    rule = {"all": [{"field": "first_name", "op": "eq", "value": "\x00"}, {"consent": "n\x00", "op": "eq", "value": 1}]}
    assert [line.split(":")[0] for line in problems(rule)] == ["all[0].value", "all[1].consent"]


def test_a_typed_tree_with_nul_is_refused_with_its_path():
    rule = AllOf((FieldCondition("locale", "eq", "es"), Not(FieldCondition("first_name", "in", ("x", "\x00")))))
    assert problems(rule) == [
        "all[1].not.value[1]: contains the NUL character (U+0000), which the database cannot store"
    ]


def test_nul_in_a_rule_through_the_api_is_a_rule_error_on_both_databases(session):
    session.add(Contact(email="ana@example.com", first_name="Ana", locale="es"))
    session.flush()
    with pytest.raises(RuleError, match=r"^all\[2\]\.value: contains the NUL character"):
        count_contacts(session, NUL_RULE, now=NOW, half_life_days=30)
    with pytest.raises(RuleError, match=r"^all\[2\]\.value: contains the NUL character"):
        create_segment(session, "nul", NUL_RULE)
    # The session is still usable: nothing reached the database.
    assert session.scalar(select(func.count()).select_from(Segment)) == 0
    assert count_contacts(session, LOCALE_ES, now=NOW, half_life_days=30) == 1


# --- the real `patron` script ----------------------------------------------------


def patron(engine, tmp_path, *args) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATRON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PATRON_INSTANCE_PATH": str(tmp_path / "instance"),
    }
    command = [os.fsencode(SCRIPT), *args] if args and isinstance(args[0], bytes) else [str(SCRIPT), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_the_cli_refuses_hostile_rule_files_with_the_path_and_no_traceback(engine, tmp_path):
    nul = tmp_path / "nul.json"
    nul.write_text(json.dumps(NUL_RULE))
    deep = tmp_path / "deep.json"
    deep.write_text('{"any": [' * DEEP + json.dumps(LOCALE_ES) + "]}" * DEEP)
    surrogate = tmp_path / "surrogate.yaml"
    surrogate.write_text('all:\n  - field: last_name\n    op: contains\n    value: "x\\ud800"\n')
    cases = [
        (("segments", "create", "nul", "--rules", str(nul)), f"{nul}: all[2].value: contains the NUL character"),
        (("segments", "count", "--rules", str(nul)), f"{nul}: all[2].value: contains the NUL character"),
        (("segments", "count", "--rules", str(deep)), f"{deep}: nests lists and mappings more than {MAX_NESTING}"),
        (("segments", "preview", "--rules", str(deep)), f"{deep}: nests lists and mappings more than {MAX_NESTING}"),
        (("segments", "count", "--rules", str(surrogate)), f"{surrogate}: all[0].value: contains a lone surrogate"),
    ]
    for args, message in cases:
        result = patron(engine, tmp_path, *args)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith(f"Error: {message}"), (args, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        assert len(result.stderr.splitlines()) == 1
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Segment)) == 0


# --- any JSON at all -------------------------------------------------------------

KEYS = [*KINDS, "op", "value", "type", "channel", "within_days", "where", "x", "\x00", "\ud800"]
OPS = ["eq", "ne", "in", "not_in", "contains", "startswith", "exists", "gt", "gte", "lt", "lte", "within_days"]
FIELDS = ["email", "first_name", "locale", "status", "created_at", "timezone"]
texts = st.one_of(
    st.sampled_from([*OPS, *FIELDS, "es", "a@x.io", "2024-05-01", "", "\x00", "\ud800", "a\udfffb", "é"]),
    st.text(max_size=6),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    texts,
)
json_data = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=3)), children, max_size=4),
    ),
    max_leaves=30,
)
# Rule-shaped data, so that some of it is valid and reaches the databases.
conditions = st.one_of(
    st.fixed_dictionaries({"field": st.sampled_from(FIELDS), "op": st.sampled_from(OPS), "value": json_data}),
    st.fixed_dictionaries({"attr": texts, "op": st.sampled_from(OPS), "value": json_data}),
    st.fixed_dictionaries({"interest": texts, "op": st.sampled_from(OPS), "value": scalars}),
    st.fixed_dictionaries(
        {"event": st.fixed_dictionaries({"type": texts}, optional={"where": json_data}), "op": st.just("gte")},
        optional={"value": st.integers(-1, 3)},
    ),
    st.fixed_dictionaries({"consent": texts, "op": st.just("eq"), "value": scalars}),
)
rule_data = st.recursive(
    st.one_of(conditions, json_data),
    lambda children: st.one_of(
        st.fixed_dictionaries({"all": st.lists(children, max_size=3)}),
        st.fixed_dictionaries({"any": st.lists(children, max_size=3)}),
        st.fixed_dictionaries({"not": children}),
    ),
    max_leaves=8,
)


def parsed_or_rule_error(data) -> Rule | None:
    """The rule, or None for a RuleError; anything else raised fails the test."""
    try:
        return parse_rules(data)
    except RuleError as err:
        assert err.problems and all(isinstance(p, str) and isinstance(m, str) for p, m in err.problems)
        str(err).encode("utf-8")  # the message can be printed
        return None


@settings(max_examples=400, deadline=None)
@given(rule_data)
def test_any_json_parses_or_raises_rule_error_and_compiles_on_both_dialects(data):
    rule = parsed_or_rule_error(data)
    if rule is not None:
        for dialect in ("sqlite", "postgresql"):
            compile_rules(rule, dialect_name=dialect, now=NOW, half_life_days=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=rule_data)
def test_any_rule_that_parses_counts_on_the_database(session, data):
    rule = parsed_or_rule_error(data)
    if rule is not None:
        assert count_contacts(session, rule, now=NOW, half_life_days=30) == 0
        session.rollback()


def test_segment_names_and_descriptions_the_database_cannot_store_are_segment_errors(session, engine, tmp_path):
    with pytest.raises(SegmentError, match=r"a segment name contains the control character U\+0000: 'a\\x00b'"):
        create_segment(session, "a\x00b", LOCALE_ES)
    with pytest.raises(SegmentError, match=r"the description contains a lone surrogate \(U\+D800\)"):
        create_segment(session, "ok", LOCALE_ES, description="\ud800")
    assert get_segment_by_name(session, "\udcff") is None
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(LOCALE_ES))
    # Bytes that are not UTF-8 on the command line arrive as lone surrogates.
    for args, status, message in [
        ((b"segments", b"count", b"\xff"), 1, "Error: no segment named '\\udcff'"),
        (
            (b"segments", b"create", b"a\xff", b"--rules", bytes(rules)),
            2,  # a usage error: the name is checked as the argument is read
            "Error: Invalid value for 'NAME': a segment name is not valid UTF-8 (byte 0xFF)",
        ),
        (
            (b"segments", b"create", b"a", b"--rules", bytes(rules), b"--description", b"\xfe"),
            1,
            "Error: the description",
        ),
    ]:
        result = patron(engine, tmp_path, *args)
        assert result.returncode == status and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert session.scalar(select(func.count()).select_from(Segment)) == 0
