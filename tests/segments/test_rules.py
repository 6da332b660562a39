"""Checking rules: the messages a marketer sees for a wrong rule, and rule files."""

from datetime import datetime, timedelta, timezone

import pytest

from segments.rules import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    AllOf,
    AttrCondition,
    EventCondition,
    FieldCondition,
    Not,
    RuleError,
    load_rules_file,
    mentions_status,
    parse_rules,
    rule_to_data,
)

LOCALE_ES = {"field": "locale", "op": "eq", "value": "es"}


def problems(data) -> list[str]:
    with pytest.raises(RuleError) as caught:
        parse_rules(data)
    return str(caught.value).splitlines()


def test_every_problem_is_listed_with_its_path():
    rule = {
        "all": [
            LOCALE_ES,
            {"attr": "plan", "op": "eq", "value": "gold"},
            {"interest": "pizza", "op": "more_than", "value": 3},
            {"any": [{"not": {"field": "locale", "op": "in", "value": "es"}}]},
            {"field": "status", "op": "eq", "value": "actve"},
        ]
    }
    assert problems(rule) == [
        "all[2].op: must be one of: eq, gt, gte, lt, lte",
        "all[3].any[0].not.value: must be a list for op 'in'",
        "all[4].value: must be one of: active, unsubscribed, bounced, complained, suppressed, deleted",
    ]


def test_misspelt_and_missing_keys_are_named():
    assert problems({"field": "locale", "op": "eq", "valeu": "es"}) == ["value: is required", "valeu: unknown key"]
    assert problems({"feild": "locale", "op": "eq", "value": "es"}) == [
        "must have one of the keys: all, any, not, field, attr, interest, event, consent (found: feild, op, value)"
    ]
    assert problems({"all": [LOCALE_ES], "any": []}) == ["has both 'all' and 'any': write each rule as its own mapping"]


def test_an_op_the_field_does_not_take_lists_the_ones_it_does():
    assert problems({"field": "locale", "op": "gt", "value": "es"}) == [
        "op: must be one of: eq, ne, in, not_in, contains, startswith, exists for field 'locale'"
    ]
    assert problems({"field": "created_at", "op": "contains", "value": "2024"}) == [
        "op: must be one of: eq, ne, gt, gte, lt, lte, within_days, older_than_days, exists for field 'created_at'"
    ]
    assert problems({"field": "birthday", "op": "eq", "value": "x"})[0].startswith(
        "field: must be one of: email, first_name"
    )


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"field": "locale", "op": "eq", "value": 5}, "value: must be a string"),
        ({"field": "locale", "op": "in", "value": []}, "value: must not be an empty list for op 'in'"),
        ({"field": "locale", "op": "in", "value": ["es", 3]}, "value[1]: must be a string"),
        ({"field": "locale", "op": "contains", "value": ""}, "value: must not be empty for op 'contains'"),
        ({"field": "locale", "op": "exists", "value": "yes"}, "value: must be true or false for op 'exists'"),
        ({"field": "created_at", "op": "gt", "value": "last week"}, "value: must be an ISO-8601 date or date-time"),
        ({"field": "created_at", "op": "within_days", "value": -1}, "value: must be a number of days from 0 to"),
        ({"attr": "", "op": "eq", "value": 1}, "attr: must be a non-empty string of at most 64 characters"),
        ({"attr": "x" * 65, "op": "eq", "value": 1}, "attr: must be a non-empty string of at most 64 characters"),
        ({"attr": "age", "op": "gt", "value": "30"}, "value: must be a finite number for op 'gt'"),
        ({"attr": "age", "op": "eq", "value": None}, "value: must be a string, a finite number, or true/false"),
        ({"attr": "age", "op": "eq", "value": {"a": 1}}, "value: must be a string, a finite number, or true/false"),
        ({"attr": "plan", "op": "in", "value": ["a", [1]]}, "value[1]: must be a string, a finite number"),
        ({"attr": "plan", "op": "startswith", "value": 1}, "value: must be a non-empty string for op 'startswith'"),
        ({"interest": "pizza", "op": "gte", "value": -1}, "value: must be a score from 0 to 100"),
        ({"interest": "pizza", "op": "gte", "value": float("nan")}, "value: must be a score from 0 to 100"),
        ({"interest": "pizza", "op": "gte", "value": 500}, "value: must be a score from 0 to 100"),
        ({"interest": "pizza", "op": "lt", "value": 100.5}, "value: must be a score from 0 to 100"),
        ({"event": {"type": "purchase"}, "op": "gte", "value": 1.5}, "value: must be a whole number of events"),
        ({"event": {"type": "purchase"}, "op": "gte", "value": True}, "value: must be a whole number of events"),
        ({"event": {"channel": "pos"}, "op": "gte", "value": 1}, "event.type: is required"),
        ({"event": {"type": "p", "within_days": 0}, "op": "gte", "value": 1}, "event.within_days: must be a number"),
        ({"event": {"type": "p", "where": {"sku": [1]}}, "op": "gte", "value": 1}, "event.where.sku: must be a string"),
        ({"event": {"type": "p", "where": {"": 1}}, "op": "gte", "value": 1}, 'event.where[""]: must be a non-empty'),
        ({"event": {"type": "p", "when": 3}, "op": "gte", "value": 1}, "event.when: unknown key"),
        ({"event": "purchase", "op": "gte", "value": 1}, "event: must be a mapping"),
        ({"consent": "marketing", "op": "eq", "value": "yes"}, "value: must be true or false"),
        ({"consent": "marketing", "op": "ne", "value": True}, "op: must be one of: eq"),
        ({"all": {"field": "locale"}}, "all: must be a list of rules"),
        ({"all": [None]}, "all[0]: must be a rule, not null"),
        ({"not": "locale"}, "not: must be a mapping with one of the keys"),
    ],
)
def test_value_problems(condition, message):
    assert problems(condition)[0].startswith(message)


def test_a_rule_must_be_a_mapping():
    assert problems(["locale", "es"]) == [
        "must be a mapping with one of the keys: all, any, not, field, attr, interest, event, consent"
    ]


def test_size_limits():
    deep = LOCALE_ES
    for _ in range(MAX_DEPTH + 1):
        deep = {"not": deep}
    assert problems(deep)[0].endswith(f"nests more than {MAX_DEPTH} levels of all/any/not; flatten the rule")
    assert problems({"any": [LOCALE_ES] * (MAX_CONDITIONS + 1)}) == [
        f"has more than {MAX_CONDITIONS} conditions; split the segment"
    ]
    many = [f"v{i}" for i in range(10_000)]
    assert problems({"field": "locale", "op": "in", "value": [*many, "x"]}) == [
        "value: must list at most 10000 values, not 10001"
    ]
    assert "a rule may list at most 20000" in problems({"any": [{"field": "locale", "op": "in", "value": many}] * 3})[0]


def test_values_are_normalised():
    rule = parse_rules(
        {
            "all": [
                {"field": "email", "op": "in", "value": ["Ann@Example.COM"]},
                {"field": "created_at", "op": "gte", "value": "2024-05-01"},
                {"field": "created_at", "op": "lt", "value": "2024-05-01T10:00:00+02:00"},
                {"field": "created_at", "op": "ne", "value": "2024-05-01T10:00:00"},
            ]
        }
    )
    email, day, offset, naive = rule.rules
    assert email.value == ("ann@example.com",)
    assert day.value == datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert offset.value == datetime(2024, 5, 1, 8, tzinfo=timezone.utc)
    assert naive.value == datetime(2024, 5, 1, 10, tzinfo=timezone.utc)


def test_rules_go_to_plain_data_and_back():
    data = {
        "all": [
            {"not": {"attr": "plan", "op": "in", "value": ["gold", 1, True]}},
            {"any": []},
            {
                "event": {"type": "purchase", "channel": "pos", "within_days": 30, "where": {"sku": "A1"}},
                "op": "gte",
                "value": 2,
            },
            {"interest": "pizza", "op": "lt", "value": 2.5},
            {"consent": "marketing", "op": "eq", "value": False},
            {"field": "created_at", "op": "older_than_days", "value": 7},
        ]
    }
    rule = parse_rules(data)
    assert rule_to_data(rule) == data
    assert parse_rules(rule_to_data(rule)) == rule
    assert isinstance(rule.rules[0], Not) and isinstance(rule.rules[0].rule, AttrCondition)
    assert rule.rules[2] == EventCondition("purchase", "pos", 30, (("sku", "A1"),), "gte", 2)
    assert parse_rules(rule) is rule


def test_mentions_status_looks_everywhere():
    assert not mentions_status(parse_rules({"all": [LOCALE_ES]}))
    nested = {"any": [LOCALE_ES, {"not": {"field": "status", "op": "eq", "value": "bounced"}}]}
    assert mentions_status(parse_rules(nested))
    assert parse_rules({"all": []}) == AllOf(())


# --- files ------------------------------------------------------------------


def test_yaml_and_json_files_read_the_same(tmp_path):
    yaml_file = tmp_path / "spanish.yaml"
    yaml_file.write_text(
        "# Spanish speakers who signed up this year\n"
        "all:\n"
        "  - field: locale\n"
        "    op: startswith\n"
        "    value: es\n"
        "  - field: created_at\n"
        "    op: gte\n"
        "    value: 2024-01-01\n"  # unquoted: stays a string, read as a date
    )
    json_file = tmp_path / "spanish.json"
    json_file.write_text(
        '{"all": [{"field": "locale", "op": "startswith", "value": "es"},'
        ' {"field": "created_at", "op": "gte", "value": "2024-01-01"}]}'
    )
    from_yaml = load_rules_file(yaml_file)
    assert from_yaml == load_rules_file(str(json_file))
    assert from_yaml.rules[1] == FieldCondition("created_at", "gte", datetime(2024, 1, 1, tzinfo=timezone.utc))


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("all:\n  - field: locale\n    op: bigger\n    value: es\n  - attr: plan\n    op: eq\n")
    with pytest.raises(RuleError) as caught:
        load_rules_file(bad)
    assert str(caught.value).splitlines() == [
        (
            f"{bad}: all[0].op: must be one of: eq, ne, in, not_in, contains, startswith, exists, gt, gte, lt, lte, "
            "within_days, older_than_days"
        ),
        f"{bad}: all[1].value: is required",
    ]


def test_yaml_no_is_false_and_the_message_says_what_is_wrong(tmp_path):
    norwegian = tmp_path / "norwegian.yml"
    norwegian.write_text("field: locale\nop: eq\nvalue: no\n")  # YAML 1.1 reads an unquoted no as false
    with pytest.raises(RuleError, match=r"norwegian.yml: value: must be a string"):
        load_rules_file(norwegian)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("broken.yaml", "all:\n  - field: locale\n   op: eq\n", r"broken.yaml: line 3, column 4: not valid YAML"),
        ("broken.json", '{"field": "locale",\n "op": }', r"broken.json: line 2, column 8: not valid JSON"),
        ("empty.yaml", "# nothing yet\n", r"empty.yaml: the file holds no rule"),
        ("rules.txt", "field: locale", r"rules.txt: a rules file must end in .json, .yaml or .yml"),
    ],
)
def test_unreadable_files(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(RuleError, match=message):
        load_rules_file(path)


def test_a_missing_file(tmp_path):
    with pytest.raises(RuleError, match=r"gone.json: cannot read the file"):
        load_rules_file(tmp_path / "gone.json")


def test_within_days_limit_keeps_dates_in_range():
    rule = parse_rules({"field": "created_at", "op": "older_than_days", "value": 36_500})
    assert datetime.now(timezone.utc) - timedelta(days=rule.value) > datetime.min.replace(tzinfo=timezone.utc)
    assert problems({"field": "created_at", "op": "older_than_days", "value": 10**9})
