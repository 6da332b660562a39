"""Saved segments: named rule trees, checked when saved, counted when asked.

A segment stores its rules as plain JSON in the grammar of
:mod:`segments.rules` (normalised: email values as addresses are stored, dates as ISO-8601
UTC); its members are computed each time from the current audience. These are
services: they take a ``Session``, may ``flush()``, and never ``commit()``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from segments.compiler import count_contacts, preview_contacts
from segments.imports import values
from segments.models import Contact, Segment
from segments.plain_data import refused_char
from segments.rules import Rule, RuleError, parse_rules, rule_to_data

NAME_LENGTH = Segment.__table__.c.name.type.length


class SegmentError(ValueError):
    """A segment cannot be saved or found as asked."""


class DuplicateSegment(SegmentError):
    """Another segment already has the name."""


class UnknownSegment(SegmentError, LookupError):
    """No segment has the name."""


def create_segment(
    session: Session, name: str, rules: Rule | dict[str, Any], description: str | None = None
) -> Segment:
    """Save a new segment; RuleError if the rules are invalid, DuplicateSegment if the name is taken."""
    name = checked_name(name)
    description = _checked_description(description)
    data = rule_to_data(parse_rules(rules))
    if get_segment_by_name(session, name) is not None:
        raise DuplicateSegment(f"a segment named {name!r} already exists")
    segment = Segment(name=name, description=description, rules=data)
    session.add(segment)
    session.flush()
    return segment


def update_segment(
    session: Session, name: str, *, rules: Rule | dict[str, Any] | None = None, description: str | None = None
) -> Segment:
    """Change a segment's rules and/or description (None leaves it as it is)."""
    segment = get_segment_by_name(session, name)
    if segment is None:
        raise UnknownSegment(f"no segment named {name!r}")
    if rules is not None:
        segment.rules = rule_to_data(parse_rules(rules))
    if description is not None:
        segment.description = _checked_description(description)
    session.flush()
    return segment


def save_segment(session: Session, name: str, rules: Rule | dict[str, Any], description: str | None = None) -> Segment:
    """Create the segment, or replace the rules (and description, if given) of the one with that name."""
    name = checked_name(name)
    if get_segment_by_name(session, name) is None:
        return create_segment(session, name, rules, description)
    return update_segment(session, name, rules=rules, description=description)


def get_segment_by_name(session: Session, name: str) -> Segment | None:
    """The segment called ``name``, or None (also for a name no segment can have, such as one holding NUL)."""
    if refused_char(name) is not None:
        return None
    return session.scalar(select(Segment).where(Segment.name == name.strip()))


def list_segments(session: Session) -> list[Segment]:
    """Every saved segment, by name."""
    return list(session.scalars(select(Segment).order_by(Segment.name)))


def segment_rule(segment: Segment) -> Rule:
    """The segment's stored rules, checked again (errors name the segment)."""
    try:
        return parse_rules(segment.rules)
    except RuleError as err:
        raise err.in_source(f"segment {segment.name!r}") from None


def count_segment(session: Session, segment: Segment, *, now: datetime, half_life_days: float) -> int:
    """How many contacts the saved segment selects at ``now``."""
    return count_contacts(session, segment_rule(segment), now=now, half_life_days=half_life_days)


def preview_segment(
    session: Session, segment: Segment, limit: int = 20, *, now: datetime, half_life_days: float
) -> list[Contact]:
    """The saved segment's first ``limit`` contacts, by id."""
    return preview_contacts(session, segment_rule(segment), limit, now=now, half_life_days=half_life_days)


def checked_name(name: str) -> str:
    """``name`` trimmed, as a segment can be called; SegmentError for an empty or too long name, or one holding
    a line break, a control or an invisible character (the rules of imported text, ``values.text``)."""
    try:
        name = values.text(name if isinstance(name, str) else "", NAME_LENGTH)
    except values.BadValue as exc:
        raise SegmentError(f"a segment name {exc}: {ascii(name)}") from None
    if not name:
        raise SegmentError("a segment name must not be empty")
    return name


def _checked_description(description: str | None) -> str | None:
    if description is not None and (problem := refused_char(description)) is not None:
        raise SegmentError(f"the description {problem}")
    return description
