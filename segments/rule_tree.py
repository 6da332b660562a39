"""The rule tree: the typed form a segment's rules take once checked, and the walks over it.

:mod:`segments.rules` builds these trees from JSON or YAML; the compiler and
the service read them. :func:`rule_to_data` turns a tree back into plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Scalar = str | int | float | bool


@dataclass(frozen=True)
class AllOf:
    """Every rule matches (an empty list matches every contact)."""

    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class AnyOf:
    """At least one rule matches (an empty list matches nobody)."""

    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Not:
    """The rule does not match."""

    rule: Rule


@dataclass(frozen=True)
class FieldCondition:
    """A contact column: ``value`` is a str, a tuple of str, a bool, a number of days or an aware datetime."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class AttrCondition:
    """A key of ``Contact.attributes``, compared by value and JSON type."""

    name: str
    op: str
    value: Any


@dataclass(frozen=True)
class InterestCondition:
    """A decayed interest score compared with a number (no interest row means 0)."""

    tag: str
    op: str
    value: float


@dataclass(frozen=True)
class EventCondition:
    """How many matching events a contact has, compared with a count."""

    type: str
    channel: str | None
    within_days: float | None
    where: tuple[tuple[str, Scalar], ...]
    op: str
    value: int


@dataclass(frozen=True)
class ConsentCondition:
    """Whether the contact has granted consent for a purpose."""

    purpose: str
    granted: bool


Rule = AllOf | AnyOf | Not | FieldCondition | AttrCondition | InterestCondition | EventCondition | ConsentCondition
RULE_TYPES = (AllOf, AnyOf, Not, FieldCondition, AttrCondition, InterestCondition, EventCondition, ConsentCondition)


class RuleError(ValueError):
    """A rule tree that is not valid; ``problems`` holds (path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = problems
        self.source = source
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem: ``source: path: message``."""
        return [": ".join(part for part in (self.source, path, message) if part) for path, message in self.problems]

    def in_source(self, source: str) -> RuleError:
        """The same problems, named as coming from ``source`` (a file, a saved segment)."""
        return RuleError(self.problems, source)


def iter_conditions(rule: Rule):
    """Every condition in ``rule``, depth first."""
    stack = [rule]
    while stack:
        node = stack.pop()
        if isinstance(node, (AllOf, AnyOf)):
            stack.extend(reversed(node.rules))
        elif isinstance(node, Not):
            stack.append(node.rule)
        else:
            yield node


def mentions_status(rule: Rule) -> bool:
    """Whether any condition, however nested, tests the contact's status."""
    return any(isinstance(c, FieldCondition) and c.field == "status" for c in iter_conditions(rule))


def rule_to_data(rule: Rule) -> dict[str, Any]:
    """The rule as plain JSON data, in the grammar :func:`parse_rules` reads."""
    if isinstance(rule, AllOf):
        return {"all": [rule_to_data(r) for r in rule.rules]}
    if isinstance(rule, AnyOf):
        return {"any": [rule_to_data(r) for r in rule.rules]}
    if isinstance(rule, Not):
        return {"not": rule_to_data(rule.rule)}
    if isinstance(rule, FieldCondition):
        return {"field": rule.field, "op": rule.op, "value": _plain(rule.value)}
    if isinstance(rule, AttrCondition):
        return {"attr": rule.name, "op": rule.op, "value": _plain(rule.value)}
    if isinstance(rule, InterestCondition):
        return {"interest": rule.tag, "op": rule.op, "value": rule.value}
    if isinstance(rule, EventCondition):
        event: dict[str, Any] = {"type": rule.type}
        if rule.channel is not None:
            event["channel"] = rule.channel
        if rule.within_days is not None:
            event["within_days"] = rule.within_days
        if rule.where:
            event["where"] = dict(rule.where)
        return {"event": event, "op": rule.op, "value": rule.value}
    if isinstance(rule, ConsentCondition):
        return {"consent": rule.purpose, "op": "eq", "value": rule.granted}
    raise TypeError(f"not a rule: {rule!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
