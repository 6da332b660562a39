"""Content packs: a directory an agency delivers, read into layouts and blocks.

The format is documented for agencies in docs/content-packs.md. Reading is
strict and specific: every problem names the file, the line where known and
the field; every template is compiled and checked (``content.checking``).
A bad block is reported and skipped, and the rest of the pack goes
in; a bad manifest or layout stops the import, because blocks without their
layout are of no use. Importing again adds a version to each layout or block
whose content changed and leaves the others alone, so a version a run has
used never changes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from content.checking import check_template
from content.models import Block, BlockVersion, Layout, LayoutVersion, Pack
from content.packfiles import MISSING, PackFileError, PackFiles, pack_path
from content.selection import normalize_locale
from segments.db import utcnow
from segments.imports.values import printable_text
from segments.models import LOCALE_LENGTH
from segments.plain_data import load_yaml
from segments.rules import error_paths

MANIFEST = "pack.yaml"
_KEY = validate.Regexp(r"^[a-z0-9][a-z0-9-]{0,63}$", error="must be lowercase letters, digits and '-' (at most 64)")
# Interest tags as contact imports and segments write them (lower-cased there): letters, digits, '_', '.', '-'.
_TAG = validate.Regexp(r"^[a-z0-9_][a-z0-9_.-]{0,63}$", error="must be lowercase letters, digits, '_', '.' and '-'")
_LOCALE = validate.And(
    validate.Regexp(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$", error="must be a locale such as en or es-MX"),
    validate.Length(max=LOCALE_LENGTH, error=f"must be a locale of at most {LOCALE_LENGTH} characters"),
)
MAX_WEIGHT = 1000.0  # an interest weight; 1.0 is "squarely about the tag"
MAX_PRIORITY = 1_000_000.0  # either way; contact scores are single digits
SOURCE_LENGTH = BlockVersion.__table__.c.source.type.length


@dataclass
class Problem:
    """What is wrong with one file of a pack, and where."""

    path: str
    message: str
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.path + (f", line {self.line}" if self.line else "")
        return f"{where}: " + (f"field '{self.field}': " if self.field else "") + self.message


class PackError(Exception):
    """The pack cannot be imported at all (its manifest or a layout is unusable), or one block cannot."""

    def __init__(self, *problems: Problem):
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = list(problems)
        self.problem = problems[0]


@dataclass
class ImportReport:
    """What an import changed, per kind, and the blocks it skipped."""

    pack: str
    layouts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("created", "changed", "unchanged"), 0))
    blocks: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("created", "changed", "unchanged", "retired"), 0)
    )
    problems: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "layouts": self.layouts,
            "blocks": self.blocks,
            "problems": [
                {"path": p.path, "line": p.line, "field": p.field, "message": p.message} for p in self.problems
            ],
        }


class _When(fields.Field):
    """A date (midnight UTC) or an ISO date-time (UTC unless it says otherwise) that exists in UTC."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise ValidationError("must be a date (2026-11-01) or an ISO date-time") from None
        if isinstance(value, datetime):
            value = value if value.tzinfo else value.replace(tzinfo=UTC)
        elif isinstance(value, date):
            value = datetime.combine(value, time(), UTC)
        else:
            raise ValidationError("must be a date (2026-11-01) or an ISO date-time")
        try:
            value.astimezone(UTC)  # stored in UTC: 9999-12-31T23:59:59-23:59 is past the year 9999 there
        except (OverflowError, ValueError):
            raise ValidationError("is out of range: it must fall between the years 1 and 9999 in UTC") from None
        return value


class _Number(fields.Float):
    """A finite number between ``low`` and ``high`` (``low`` itself allowed unless ``above``)."""

    def __init__(self, low: float, high: float, *, above: bool = False, **kwargs):
        kind = "more than" if above else "at least"
        message = f"must be a number {kind} {low:g} and at most {high:g}"
        super().__init__(validate=validate.Range(low, high, min_inclusive=not above, error=message), **kwargs)

    def _validated(self, value):
        if isinstance(value, bool):  # YAML's yes/no/true/false are not numbers
            raise self.make_error("invalid")
        try:
            return super()._validated(value)
        except OverflowError:  # an integer too large for a float (10**400)
            raise ValidationError(f"is too large: {self.validators[0].error}") from None


class _LayoutSchema(Schema):
    key = fields.String(required=True, validate=_KEY)
    html = fields.String(required=True)
    text = fields.String(load_default=None)
    css = fields.List(fields.String(), load_default=list)
    slots = fields.List(fields.String(validate=_KEY), required=True, validate=validate.Length(min=1))


class _ManifestSchema(Schema):
    key = fields.String(required=True, validate=_KEY)
    name = fields.String(required=True, validate=[validate.Length(min=1, max=200), printable_text])
    default_locale = fields.String(required=True, validate=_LOCALE)
    layouts = fields.List(fields.Nested(_LayoutSchema), required=True, validate=validate.Length(min=1))
    blocks = fields.String(load_default="blocks")
    strings = fields.Dict(
        keys=fields.String(validate=_LOCALE),
        values=fields.Dict(keys=fields.String(), values=fields.String()),
        load_default=dict,
    )


class _BlockSchema(Schema):
    key = fields.String(required=True, validate=_KEY)
    locale = fields.String(required=True, validate=_LOCALE)
    title = fields.String(required=True, validate=[validate.Length(min=1, max=200), printable_text])
    interests = fields.Dict(
        keys=fields.String(validate=_TAG),
        values=_Number(0, MAX_WEIGHT, above=True),
        required=True,
        validate=validate.Length(min=1),
    )
    slots = fields.List(fields.String(validate=_KEY), required=True, validate=validate.Length(min=1))
    priority = _Number(-MAX_PRIORITY, MAX_PRIORITY, load_default=0.0)
    valid_from = _When(load_default=None)
    valid_until = _When(load_default=None)
    tags = fields.List(fields.String(validate=_TAG), load_default=list)
    sensitive = fields.Boolean(load_default=False)
    default = fields.Boolean(load_default=False)


def import_pack(session: Session, root: Path | str) -> ImportReport:
    """Read the pack at ``root`` into the database; the caller commits.

    Every file is read through ``content.packfiles`` (inside the pack, no links, plain files of at most 1 MiB).
    Raises PackError when the manifest or a layout is unusable; a bad block is skipped and listed in the
    report's ``problems``, whatever is wrong with it.
    """
    root = Path(root)
    if not root.is_dir():
        raise PackError(Problem(str(root), "is not a directory (a pack is a directory holding pack.yaml)"))
    try:
        files = PackFiles(root)
    except OSError as exc:
        raise PackError(Problem(str(root), f"cannot be read: {exc.strerror}")) from None
    with files:
        manifest = _load_manifest(files)
        phrases = {name for strings in manifest["strings"].values() for name in strings}
        layouts = [_read_layout(files, spec, phrases) for spec in manifest["layouts"]]
        known_slots = {slot for layout in layouts for slot in layout["slots"]}
        report = ImportReport(pack=manifest["key"])
        blocks, broken = _read_blocks(files, manifest["blocks"], known_slots, phrases, report)

    pack = session.scalar(select(Pack).where(Pack.key == manifest["key"]))
    if pack is None:
        pack = Pack(key=manifest["key"])
        session.add(pack)
    pack.name = manifest["name"]
    pack.default_locale = normalize_locale(manifest["default_locale"])
    pack.strings = {normalize_locale(k): v for k, v in manifest["strings"].items()}
    pack.imported_at = utcnow()
    session.flush()

    for spec in layouts:
        layout = session.scalar(select(Layout).where(Layout.key == spec["key"])) or Layout(key=spec["key"])
        layout.pack_id = pack.id
        versioned = {k: v for k, v in spec.items() if k != "key"}
        report.layouts[_add_version(session, layout, LayoutVersion, "layout_id", versioned)] += 1

    existing = {(b.key, b.locale): b for b in session.scalars(select(Block).where(Block.pack_id == pack.id))}
    for spec in blocks:
        block = existing.pop((spec["key"], spec["locale"]), None) or Block(
            pack_id=pack.id, key=spec["key"], locale=spec["locale"]
        )
        versioned = {k: v for k, v in spec.items() if k not in ("key", "locale")}
        outcome = _add_version(session, block, BlockVersion, "block_id", versioned)
        if block.retired_at is not None:
            block.retired_at, outcome = None, "changed"
        report.blocks[outcome] += 1
    for block in existing.values():
        current = session.get(BlockVersion, block.current_version_id)
        if current is not None and any(current.source == b or current.source.startswith(b + "/") for b in broken):
            continue  # its file is there but broken this time: keep the version that worked
        if block.retired_at is None:
            block.retired_at = utcnow()
            report.blocks["retired"] += 1
    session.flush()
    return report


def _add_version(session: Session, owner, version_class, owner_column: str, spec: dict) -> str:
    """Give ``owner`` a new current version unless its current one holds the same content."""
    digest = _digest(spec)
    if owner.id is not None and owner.current_version_id is not None:
        current = session.get(version_class, owner.current_version_id)
        if current is not None and current.digest == digest:
            return "unchanged"
    outcome = "created" if owner.id is None else "changed"
    if owner.id is None:
        session.add(owner)
        session.flush()
    number = session.scalar(
        select(func.coalesce(func.max(version_class.version), 0)).where(
            getattr(version_class, owner_column) == owner.id
        )
    )
    version = version_class(**{owner_column: owner.id}, version=number + 1, digest=digest, **spec)
    session.add(version)
    session.flush()
    owner.current_version_id = version.id
    return outcome


def _digest(spec: dict) -> str:
    canonical = json.dumps({k: v for k, v in spec.items() if k != "source"}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _load_manifest(files: PackFiles) -> dict:
    path = str(files.root / MANIFEST)
    try:
        source = files.read_text(MANIFEST)
    except PackFileError as exc:
        if exc.message == MISSING:
            raise PackError(Problem(path, "not found: every pack has a pack.yaml manifest")) from None
        raise PackError(_file_problem(files, exc)) from None
    data = _yaml(path, source)
    if not isinstance(data, dict):
        raise PackError(Problem(path, "must be a mapping of keys such as key, name, layouts"))
    try:
        return _ManifestSchema().load(data)
    except ValidationError as exc:
        raise PackError(_first_problem(path, exc.messages)) from None


def _read_layout(files: PackFiles, spec: dict, phrases: set[str]) -> dict:
    html_path, html = _named_file(files, spec["html"], f"layouts[{spec['key']}].html")
    names = {"kind": "layout", "phrases": phrases, "slots": spec["slots"]}
    _check(html_path, html, text=False, offset=0, **names)
    missing = [s for s in spec["slots"] if not re.search(rf"slots\.{re.escape(s)}\b|slots\[['\"]{s}['\"]\]", html)]
    if missing:
        raise PackError(Problem(str(html_path), f"declares slots never used in the layout: {', '.join(missing)}"))
    text = None
    if spec["text"]:
        text_path, text = _named_file(files, spec["text"], f"layouts[{spec['key']}].text")
        _check(text_path, text, text=True, offset=0, **names)
    field_name = f"layouts[{spec['key']}].css"
    css = "\n".join(_named_file(files, name, field_name)[1] for name in spec["css"])
    return {"key": spec["key"], "html": html, "text": text, "css": css, "slots": spec["slots"]}


def _named_file(files: PackFiles, name: str, field_name: str) -> tuple[Path, str]:
    """The path and text of a file the manifest names; PackError on the manifest's field or on the file."""
    manifest = str(files.root / MANIFEST)
    try:
        relative = pack_path(name)
    except PackFileError as exc:
        raise PackError(Problem(manifest, f"{name!r} {exc.message}", None, field_name)) from None
    try:
        return files.root / relative, files.read_text(relative)
    except PackFileError as exc:
        if exc.message == MISSING:
            raise PackError(Problem(manifest, f"{name!r} {MISSING}", None, field_name)) from None
        raise PackError(_file_problem(files, exc)) from None


def _read_blocks(
    files: PackFiles, folder: str, known_slots: set[str], phrases: set[str], report: ImportReport
) -> tuple[list[dict], set[str]]:
    """The good blocks under ``folder``, and the paths (files or folders) of those skipped.

    Anything wrong with one block — a link, an unreadable file, front matter of any shape — skips that block
    alone, with a problem naming its file; only an unusable blocks folder stops the import.
    """
    try:
        folder = pack_path(folder)
    except PackFileError as exc:
        raise PackError(Problem(str(files.root / MANIFEST), exc.message, None, "blocks")) from None
    try:
        found = files.is_folder(folder)
    except PackFileError as exc:
        raise PackError(_file_problem(files, exc)) from None
    if not found:
        raise PackError(Problem(str(files.root / folder), "the blocks folder named in pack.yaml does not exist"))
    entries, refused = set(), {}
    for entry in files.walk(folder):
        if isinstance(entry, PackFileError):
            refused[entry.path] = entry
        else:
            entries.add(entry)
    blocks: dict[tuple[str, str], dict] = {}
    broken: set[str] = set()
    for source in sorted((e for e in entries | set(refused) if e.endswith(".html")), key=lambda e: e.split("/")):
        path = str(files.root / source)
        text_source = source[: -len(".html")] + ".txt"
        try:
            for name in (source, text_source):
                if name in refused:  # a link where the block's file or its text part should be
                    raise PackError(_file_problem(files, refused.pop(name)))
            if len(source) > SOURCE_LENGTH:
                raise PackError(Problem(path, f"its path in the pack is longer than {SOURCE_LENGTH} characters"))
            block = _read_block(files, source, text_source in entries, known_slots, phrases)
        except PackError as exc:
            report.problems.extend(exc.problems)
            broken.add(source)
            continue
        except Exception as exc:  # noqa: BLE001  (nothing in one block's file may stop the others)
            report.problems.append(Problem(path, f"cannot be read ({type(exc).__name__}: {str(exc)[:200]})"))
            broken.add(source)
            continue
        where = (block["key"], block["locale"])
        if where in blocks:
            report.problems.append(
                Problem(path, f"repeats key {where[0]!r} in locale {where[1]!r} of {blocks[where]['source']}", 2, "key")
            )
            broken.add(source)
            continue
        blocks[where] = block
    for link in refused.values():  # links that are no block's file: a folder, a stray file
        report.problems.append(_file_problem(files, link))
        broken.add(link.path)
    return list(blocks.values()), broken


def _read_block(files: PackFiles, source: str, has_text: bool, known_slots: set[str], phrases: set[str]) -> dict:
    path = files.root / source
    content = _pack_text(files, source)
    if not content.startswith("---"):
        raise PackError(Problem(str(path), "must start with YAML front matter between '---' lines", 1))
    end = content.find("\n---", 3)
    if end < 0:
        raise PackError(Problem(str(path), "the front matter has no closing '---' line", 1))
    front = content[3:end]
    body_start = content.find("\n", end + 1)
    body = content[body_start + 1 :] if body_start >= 0 else ""
    body_offset = front.count("\n") + 2
    try:
        data = _yaml(str(path), front)  # the front matter's line 0 is the rest of the file's first line
    except PackError as exc:
        exc.problem.field = _field_at(front, exc.problem.line)
        raise
    if not isinstance(data, dict):
        raise PackError(Problem(str(path), "the front matter must be a mapping of keys such as key, locale", 2))
    try:
        meta = _BlockSchema().load(data)
    except ValidationError as exc:
        problem = _first_problem(str(path), exc.messages)
        problem.line = _line_of(front, problem.field)
        raise PackError(problem) from None
    unknown = [s for s in meta["slots"] if s not in known_slots]
    if unknown:
        line = _line_of(front, "slots")
        raise PackError(Problem(str(path), f"no layout has the slot(s) {', '.join(unknown)}", line, "slots"))
    if meta["valid_from"] and meta["valid_until"] and meta["valid_until"] <= meta["valid_from"]:
        raise PackError(
            Problem(str(path), "must be later than valid_from", _line_of(front, "valid_until"), "valid_until")
        )
    if not body.strip():
        raise PackError(Problem(str(path), "has no HTML after the front matter", body_offset))
    _check(path, body, text=False, offset=body_offset, kind="block", phrases=phrases)
    text = None
    if has_text:
        text_source = source[: -len(".html")] + ".txt"
        text = _pack_text(files, text_source)
        _check(files.root / text_source, text, text=True, offset=0, kind="block", phrases=phrases)
    return {
        "key": meta["key"],
        "locale": normalize_locale(meta["locale"]),
        "title": meta["title"],
        "html": body,
        "text": text,
        "interests": meta["interests"],
        "slots": meta["slots"],
        "tags": meta["tags"],
        "priority": meta["priority"],
        "valid_from": meta["valid_from"],
        "valid_until": meta["valid_until"],
        "sensitive": meta["sensitive"],
        "is_default": meta["default"],
        "source": source,
    }


def _pack_text(files: PackFiles, source: str) -> str:
    try:
        return files.read_text(source)
    except PackFileError as exc:
        raise PackError(_file_problem(files, exc)) from None


def _file_problem(files: PackFiles, exc: PackFileError) -> Problem:
    return Problem(str(files.root / exc.path), exc.message, exc.line)


def _yaml(path: str, source: str):
    try:
        return load_yaml(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise PackError(Problem(path, f"is not valid YAML: {getattr(exc, 'problem', exc)}", line)) from None


def _check(path: Path, source: str, *, text: bool, offset: int, **names) -> None:
    """PackError with every problem of the template, each on its line of the file."""
    problems = check_template(source, text=text, **names)
    if problems:
        raise PackError(
            *(Problem(str(path), f"template error: {p.message}", (p.line or 0) + offset or None) for p in problems)
        )


def _first_problem(path: str, messages) -> Problem:
    """The first marshmallow error as a Problem with a dotted field path."""
    field_path, message = error_paths(messages)[0]
    return Problem(path, message.rstrip("."), None, field_path or None)


def _field_at(front: str, line: int | None) -> str | None:
    """The top-level front matter key whose value holds the file's ``line`` (the reverse of ``_line_of``)."""
    lines = front.split("\n")[: line or 0]
    for text in reversed(lines):
        if match := re.match(r"([A-Za-z_][\w-]*)\s*:", text):
            return match.group(1)
    return None


def _line_of(front: str, dotted: str | None) -> int | None:
    """The line of the front matter's top-level key ``dotted`` starts with (the file's line number)."""
    if not dotted:
        return None
    top = re.split(r"[.\[]", dotted)[0]
    for number, line in enumerate(front.split("\n")):
        if line.startswith(f"{top}:"):
            return number + 1
    return None
