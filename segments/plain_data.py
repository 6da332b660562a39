"""Limits on plain data from outside (rule files, API calls, JSON Lines): what the databases refuse, how deep it nests.

PostgreSQL refuses NUL (U+0000) in ``text`` and in ``jsonb`` (the ``\\u0000``
escape), and a lone surrogate (U+D800 to U+DFFF) cannot be encoded as UTF-8
by either driver. Such a value is refused where it comes in, with the path
that names it (``all[2].value``), on SQLite too, so that a rule or a row means
the same on both back-ends.

Parsers of JSON (Python's ``json``) and YAML (PyYAML's composer) recurse once
per level of nesting, so a deep enough document raises ``RecursionError``.
:func:`json_depth` and :func:`yaml_depth` measure the nesting without
recursion, before anything parses the text; :func:`load_yaml` parses YAML
bounded in depth and in values after alias expansion (content packs,
campaign files).
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

MAX_YAML_DEPTH = 20  # nested lists and mappings in one YAML document
MAX_YAML_VALUES = 10_000  # values in one YAML document, counting every alias as the values it repeats

REFUSED = re.compile("[\x00\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_JSON_BRACKETS = str.maketrans({"[": "(", "{": "(", "]": ")", "}": ")"})


def refused_char(value: str) -> str | None:
    """Why ``value`` cannot be stored as text on PostgreSQL (NUL, a lone surrogate), or None if it can."""
    found = REFUSED.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "contains the NUL character (U+0000), which the database cannot store"
    return f"contains a lone surrogate (U+{ord(char):04X}), which is not Unicode text"


def child_path(path: str, key: Any) -> str:
    """The path of ``key`` below ``path``: ``all[2]``, ``all[2].value``, or ``where["a b"]`` for an odd key."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _PLAIN_KEY.fullmatch(str(key)):
        return f"{path}.{key}" if path else str(key)
    key = str(key)
    return f"{path}[{json.dumps(key, ensure_ascii=REFUSED.search(key) is not None)}]"


class TooBig(ValueError):
    """Data with more values than a walk will look at."""


def refused_text(data: Any, path: str = "", *, max_values: int) -> list[tuple[str, str]]:
    """(path, reason) for every key and string in ``data`` (found at ``path``) that :func:`refused_char` refuses.

    Walks dicts, lists and tuples without recursion, so any depth is safe; raises
    TooBig past ``max_values`` values, so shared references (YAML aliases) cannot
    make the walk exponential.
    """
    problems = []
    stack = [(data, path)]
    seen = 0
    while stack:
        node, path = stack.pop()
        seen += 1
        if seen > max_values:
            raise TooBig(f"has more than {max_values:,} values")
        if isinstance(node, str):
            if (reason := refused_char(node)) is not None:
                problems.append((path, reason))
        elif isinstance(node, dict):
            for key, value in node.items():
                where = child_path(path, key)
                if isinstance(key, str) and (reason := refused_char(key)) is not None:
                    problems.append((where, f"the key {reason}"))
                stack.append((value, where))
        elif isinstance(node, (list, tuple)):
            stack.extend((item, child_path(path, index)) for index, item in enumerate(node))
    problems.reverse()  # the stack found them last to first
    return problems


def json_deeper_than(text: str, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels in JSON ``text``; brackets in strings don't count.

    Text that is not JSON gets an answer too; the parser says what is wrong with it.
    """
    # Counting brackets is cheap; most lines have too few to nest that deep.
    return text.count("[") + text.count("{") > limit and json_depth(text) > limit


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON ``text`` (0 for a scalar), without parsing it."""
    brackets = _JSON_STRING.sub("", text).translate(_JSON_BRACKETS)
    depth = deepest = 0
    for char in brackets:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def yaml_depth(text: str, loader: type = yaml.SafeLoader) -> int:
    """How deep sequences and mappings nest in YAML ``text``, from the parser's events (the parser does not recurse).

    Raises ``yaml.YAMLError`` for text that is not YAML.
    """
    depth = deepest = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            deepest = max(deepest, depth)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
    return deepest


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing lists and mappings nested deeper than :data:`MAX_YAML_DEPTH` before its
    recursive composer descends into them, and reporting a value it cannot build (a date that doesn't exist, a
    5,000-digit integer) as a YAML error at its line rather than raising whatever Python raised."""

    _depth = 0

    def compose_node(self, parent, index):
        if self._depth >= MAX_YAML_DEPTH and self.check_event(yaml.CollectionStartEvent):
            raise _too_much(f"nests lists and mappings more than {MAX_YAML_DEPTH} deep", self.peek_event())
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, OverflowError, TypeError) as exc:
            value = str(node.value)
            shown = value if len(value) <= 40 else value[:37] + "..."
            reason = str(exc).split(";")[0]  # not Python's advice to the programmer (set_int_max_str_digits)
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value {shown!r} ({reason})", node.start_mark
            ) from None


def load_yaml(source: str) -> Any:
    """The YAML document ``source`` (YAML 1.1, safe types only) once it is known to be bounded.

    Raises ``yaml.YAMLError`` (with ``problem_mark`` where known) for invalid YAML, for nesting deeper than
    :data:`MAX_YAML_DEPTH` and for more than :data:`MAX_YAML_VALUES` values counting alias expansions, so
    neither PyYAML's recursive composer nor anything that walks the result can run out of stack or memory.
    """
    loader = _BoundedLoader(source)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        sizes: dict[int, int] = {}
        total = 0
        # Counted per top-level entry, so the error points at the entry that goes past the limit.
        for node in (n for pair in root.value for n in pair) if isinstance(root, yaml.MappingNode) else [root]:
            total += _values(node, sizes)
            if total > MAX_YAML_VALUES:
                raise _too_much(f"holds more than {MAX_YAML_VALUES} values (counting what each alias repeats)", node)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def _values(node, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (each shared node counted once, then
    reused: the count of a "billion laughs" document is a big number, never a big structure)."""
    if id(node) not in sizes:
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
        else:
            sizes[id(node)] = 0  # in progress: an alias back to it (&a [*a]) would be endless
            children = (n for pair in node.value for n in pair) if isinstance(node, yaml.MappingNode) else node.value
            sizes[id(node)] = 1 + sum(_values(child, sizes) for child in children)
    elif sizes[id(node)] == 0:
        raise _too_much("refers to itself through an alias, which makes it endless", node)
    return sizes[id(node)]


def _too_much(problem: str, where) -> yaml.YAMLError:
    """A YAML error at the start of ``where`` (an event or a node)."""
    return yaml.MarkedYAMLError(problem=problem, problem_mark=where.start_mark)
