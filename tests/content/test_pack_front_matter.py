"""A block whose front matter cannot be read or is out of range is skipped alone, naming its file and field,
whatever the front matter holds; the rest of the pack goes in and the command never shows a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from content.models import Block
from content.packs import import_pack
from segments.plain_data import MAX_YAML_VALUES
from tests.packs import block, write_pack

PATRON = Path(sys.executable).parent / "patron"
FRONT = "key: odd\nlocale: en\ntitle: Odd\ninterests: {pizza: 1.0}\nslots: [hero]\n"
BOMB = "\n".join(
    ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join(['*' + chr(97 + n)] * 9)}]" for n in range(8)]
)

# The front matter after the common fields (or instead of a field they set), the field named, and the reason.
CASES = {
    "valid_from past 9999 in UTC": ("valid_from: 9999-12-31T23:59:59-23:59", "valid_from", "out of range"),
    "valid_until before year 1 in UTC": ("valid_until: '0001-01-01T00:00:00+01:00'", "valid_until", "out of range"),
    "a date that does not exist": ("valid_from: 2026-02-30", "valid_from", "day is out of range for month"),
    "tags 5,000 deep": ("tags: " + "[" * 5000 + "]" * 5000, "tags", "more than 20 deep"),
    "a YAML bomb": (BOMB, "e", f"more than {MAX_YAML_VALUES} values"),
    "a list that holds itself": ("tags: &loop [*loop]", "tags", "refers to itself"),
    "priority of 400 digits": ("priority: " + "9" * 400, "priority", "too large"),
    "priority of 5,000 digits": ("priority: " + "9" * 5000, "priority", "cannot read the value '99999"),
    "priority infinite": ("priority: .inf", "priority", "Special numeric values"),
    "priority yes": ("priority: yes", "priority", "Not a valid number"),
    "weight as text": ("interests: {pizza: lots}", "interests.pizza", "Not a valid number"),
    "weight huge": ("interests: {pizza: 1e300}", "interests.pizza", "at most 1000"),
    "weight NaN": ("interests: {pizza: .nan}", "interests.pizza", "Special numeric values"),
    "interests a list": ("interests: [pizza]", "interests", "Not a valid mapping"),
    "interests keyed by a number": ("interests: {7: 1.0}", "interests[7].key", "Not a valid string"),
    "slots a string": ("slots: hero", "slots", "Not a valid list"),
    "slots nested": ("slots: [[hero]]", "slots[0]", "Not a valid string"),
    "sensitive maybe": ("sensitive: maybe", "sensitive", "Not a valid boolean"),
    "title a mapping": ("title: {a: 1}", "title", "Not a valid string"),
    "locale 100 characters": ("locale: en" + "-abcdefgh" * 11, "locale", "at most 35 characters"),
    "an unknown key that is a number": ("7: seven", "[7]", "Unknown field"),
    "a python tag": ("title: !!python/object/apply:os.system [echo]", "title", "could not determine a constructor"),
}


def front_text(extra: str) -> str:
    """The common fields with ``extra`` overriding or adding lines."""
    keys = {line.split(":", 1)[0] for line in extra.splitlines() if ":" in line}
    return "".join(line + "\n" for line in FRONT.splitlines() if line.split(":", 1)[0] not in keys) + extra


def odd_block(extra: str) -> str:
    """A block file whose front matter is the common fields with ``extra`` overriding or adding lines."""
    return f"---\n{front_text(extra)}\n---\n<p>Odd</p>\n"


@pytest.mark.parametrize("case", CASES)
def test_bad_front_matter_skips_that_block_alone_naming_file_and_field(session, tmp_path, case):
    extra, field, why = CASES[case]
    pack = write_pack(tmp_path / "pack", [block("good")])
    (pack / "blocks/en/odd.html").write_text(odd_block(extra), encoding="utf-8")
    report = import_pack(session, pack)
    session.commit()
    assert session.scalars(select(Block.key)).all() == ["good"]
    [problem] = report.problems
    assert problem.path == str(pack / "blocks/en/odd.html"), problem
    assert problem.field == field and why in problem.message, str(problem)


def test_bytes_that_are_not_text_skip_the_block(session, tmp_path):
    pack = write_pack(tmp_path / "pack", [block("good")])
    (pack / "blocks/en/latin1.html").write_bytes(odd_block("title: Caf\xe9").encode("latin-1"))
    (pack / "blocks/en/nul.html").write_text(odd_block("title: Nul").replace("<p>Odd", "<p>O\0dd"))
    report = import_pack(session, pack)
    session.commit()
    assert session.scalars(select(Block.key)).all() == ["good"]
    assert [str(p).removeprefix(str(pack) + "/") for p in report.problems] == [
        "blocks/en/latin1.html: is not UTF-8 text (byte 72)",
        "blocks/en/nul.html, line 8: holds a NUL character, which is not text",
    ]


def test_a_yaml_bomb_in_the_manifest_is_refused_too(session, tmp_path):
    pack = write_pack(tmp_path / "pack", [block("good")])
    (pack / "pack.yaml").write_text((pack / "pack.yaml").read_text() + BOMB + "\n")
    with pytest.raises(Exception, match=rf"pack.yaml, line \d+: is not valid YAML: holds more than {MAX_YAML_VALUES}"):
        import_pack(session, pack)


def test_the_issues_examples_through_the_command(engine, tmp_path):
    pack = write_pack(tmp_path / "pack", [block("good")])
    (pack / "blocks/en/late.html").write_text(odd_block(CASES["valid_from past 9999 in UTC"][0]))
    (pack / "blocks/en/deep.html").write_text(odd_block(CASES["tags 5,000 deep"][0]).replace("key: odd", "key: deep"))
    env = {
        **os.environ,
        "PATRON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PATRON_INSTANCE_PATH": str(tmp_path / "instance"),
    }
    result = subprocess.run(
        [str(PATRON), "content", "import", str(pack)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result
    assert result.stdout.endswith("blocks 1 created; 2 skipped (why below)\n")
    assert result.stderr.splitlines() == [
        f"skipped {pack}/blocks/en/deep.html, line 7: field 'tags': is not valid YAML: "
        "nests lists and mappings more than 20 deep",
        f"skipped {pack}/blocks/en/late.html, line 7: field 'valid_from': "
        "is out of range: it must fall between the years 1 and 9999 in UTC",
    ]


# --- any front matter at all --------------------------------------------------------------------------------------

FIELDS = ["key", "locale", "title", "interests", "slots", "priority", "valid_from", "valid_until", "tags", "sensitive"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**500), max_value=10**500)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.dates()
    | st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=23, minutes=59))]))
    | st.sampled_from(["hero", "offer", "en", "es-MX", "pizza", "9999-12-31T23:59:59-23:59", "x" * 300])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=12,
)
# Values at the edges of what the fields, Python and the databases hold.
edges = st.sampled_from(
    [
        10**400,
        -(10**400),
        float("inf"),
        float("nan"),
        1e308,
        "9999-12-31T23:59:59-23:59",
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=23, minutes=59))),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        "en" + "-abcdefgh" * 11,
        "x" * 300,
        "",
    ]
)
good = {"key": "any", "locale": "en", "title": "Any", "interests": {"pizza": 1.0}, "slots": ["hero"]}
field_values = values | edges | st.dictionaries(st.sampled_from(["pizza", "Pizza!"]), edges | values, max_size=2)
front_matters = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=6).map(lambda changes: {**good, **changes}),
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), values, max_size=8),
    values,
)
# The hostile lines of the examples above, a few at a time, in otherwise good front matter.
hostile = st.lists(st.sampled_from([extra for extra, _, _ in CASES.values()]), min_size=1, max_size=3).map(
    lambda lines: front_text("\n".join(lines))
)


def _dump(data) -> str:
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:  # a value yaml cannot write (a datetime with an odd offset): write it as text
        return yaml.safe_dump(json.loads(json.dumps(data, default=str)), allow_unicode=True)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(front=front_matters | hostile | st.text(max_size=200))
def test_any_front_matter_is_imported_or_skipped_and_never_raises(runner, tmp_path, front):
    pack = write_pack(Path(tempfile.mkdtemp(dir=tmp_path)) / "pack", [block("good")])
    text = front if isinstance(front, str) else _dump(front)
    (pack / "blocks/en/any.html").write_text(f"---\n{text}\n---\n<p>Any</p>\n", encoding="utf-8")
    result = runner.invoke(args=["content", "import", str(pack), "--json"])
    assert result.exit_code == 0 and result.exception is None, (result.output, result.exception)
    report = json.loads(result.output)
    imported = report["blocks"]["created"] + report["blocks"]["changed"] + report["blocks"]["unchanged"]
    files = {str(pack / "blocks/en/any.html"), str(pack / "blocks/en/good.html")}  # any.html may take good's key
    assert imported + len(report["problems"]) == 2 and {p["path"] for p in report["problems"]} <= files, report


def test_the_strategy_reaches_both_outcomes(runner, tmp_path):
    """The property above would pass vacuously if every example were skipped: the plain block goes in."""
    pack = write_pack(tmp_path / "pack", [block("good")])
    (pack / "blocks/en/any.html").write_text(f"---\n{_dump(good)}---\n<p>Any</p>\n", encoding="utf-8")
    report = json.loads(runner.invoke(args=["content", "import", str(pack), "--json"]).output)
    assert report["blocks"]["created"] == 2 and report["problems"] == []
