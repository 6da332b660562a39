"""How campaigns and runs read in the ``patron campaigns`` commands: counts, skip reasons, definitions, JSON."""

from __future__ import annotations

import json

from config import printable
from delivery.ledger import FrequencyCap

COUNTED = ("sent", "pending", "sending", "failed", "skipped", "unknown")
SLOT_FILTERS = ("tags", "exclude_tags", "interests", "blocks")  # as docs/campaigns.md lists them
LISTED = ("sent", "skipped", "failed")  # the counts `campaigns list` shows of each last run


def tally(run: dict) -> str:
    """A run's recipients and its messages by status: ``968 recipients: 0 sent, …, 968 skipped, 0 unknown``."""
    return f"{run['total']:,} recipients: " + ", ".join(f"{run[k]:,} {k}" for k in COUNTED)


def skipped_line(run: dict) -> str:
    """Why a run skipped whom: ``968 skipped: 968 frequency cap (2 in 7 days)``."""
    reasons = ", ".join(f"{count:,} {printable(reason)}" for reason, count in run["skipped_by_reason"].items())
    return f"{run['skipped']:,} skipped: {reasons}"


def failed_lines(run: dict) -> list[str]:
    """Why a run's recipients failed, the most common reason first: a heading, then one indented line per reason.

    ``run`` has ``failed`` and ``failed_by_reason`` (at most ``FAILED_REASONS_SHOWN``; the rest is one line).
    Reasons are stored text (a server's reply, a template's error): printed so that nothing in them can act.
    """
    if not run["failed"]:
        return []
    reasons = run["failed_by_reason"]
    lines = [f"{run['failed']:,} failed, the most common reasons first:"]
    lines += [f"  {count:,} × {printable(reason)}" for reason, count in reasons.items()]
    rest = run["failed"] - sum(reasons.values())
    if rest > 0:
        lines.append(f"  {rest:,} × other reasons")
    return lines


def to_json(value) -> str:
    """``value`` as JSON, times in ISO 8601."""
    return json.dumps(value, default=lambda moment: moment.isoformat())


def when(moment) -> str:
    """A stored time as people read it: ``2026-11-30 20:55 UTC``."""
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "-"


def last_run(run: dict | None) -> tuple[str, ...]:
    """A campaign's last run as cells of ``campaigns list``: ``4 finished``, its recipients and LISTED counts."""
    if run is None:
        return ("never sent", "", *("" for _ in LISTED))
    return (f"{run['run']} {run['state']}", f"{run['total']:,}", *(f"{run[k]:,}" for k in LISTED))


def definition_lines(definition: dict) -> list[tuple[str, str]]:
    """(label, value) for each field of a stored campaign definition, in the same order on both databases."""
    lines = [("from", _address(definition.get("sender")))]
    if definition.get("reply_to"):
        lines.append(("reply to", _address(definition["reply_to"])))
    for field in ("subject", "preheader"):
        templates = definition.get(field) or {}
        if not isinstance(templates, dict):
            templates = {"*": templates}
        for locale in sorted(templates):  # "*", one for everyone, sorts first
            lines.append((field if locale == "*" else f"{field} ({locale})", templates[locale]))
    if definition.get("segment"):
        lines.append(("segment", definition["segment"]))
    else:
        # Sorted: PostgreSQL's JSONB keeps no key order, and both databases must print the same.
        lines.append(("rules", json.dumps(definition.get("rules"), ensure_ascii=False, sort_keys=True)))
    lines.append(("layout", definition.get("layout")))
    slots = definition.get("slots") or {}
    for slot in sorted(slots):
        filters = [(key, slots[slot].get(key)) for key in SLOT_FILTERS]
        chosen = "; ".join(f"{key} {', '.join(map(str, values))}" for key, values in filters if values)
        lines.append((f"slot {slot}", chosen or "any block that fits"))
    cap = FrequencyCap.from_definition(definition.get("frequency_cap"))
    lines.append(("frequency cap", f"at most {cap.limit} message(s) in {cap.days:g} day(s)" if cap else "none"))
    return lines


def _address(address) -> str:
    if isinstance(address, dict):
        return f"{address['name']} <{address['email']}>" if address.get("name") else address.get("email", "")
    return str(address)
