"""API keys: who may call the server-to-server API, and for what (its scopes).

A key is 256 random bits, shown once when created; the database keeps only its SHA-256 digest and its first
characters (to tell keys apart in a list). No Flask here: the views and the CLI call these functions and commit.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import JSON, String, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from segments.db import Base, BigId, UTCDateTime, utcnow

SCOPES = ("conversions", "bounces")
PREFIX_LENGTH = 8
NAME_LENGTH = 100
# secrets.token_urlsafe(32): 32 random bytes are 43 base64url characters.
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
# Writing last_used_at on every request would turn each call into a write; once a minute says enough.
LAST_USED_GRANULARITY = timedelta(minutes=1)


class ApiKeyError(ValueError):
    """An API key that cannot be created or revoked; the message is one line for the user."""


class ApiKey(Base):
    """A named key for the API, with the scopes it grants; revoked keys stay listed but authorize nothing."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    prefix: Mapped[str] = mapped_column(String(PREFIX_LENGTH))
    # SHA-256 of the whole key. A slow password hash (bcrypt, scrypt) defends guessable secrets; a key of 256
    # random bits cannot be guessed, so one fast hash is as safe and lets each request look its key up by digest.
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def digest(key: str) -> str:
    """The SHA-256 hex digest of ``key`` (text, UTF-8), as stored in ``api_keys.digest``."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_LENGTH or not name.isprintable():
        raise ApiKeyError(f"name: 1 to {NAME_LENGTH} printable characters, got {name[:NAME_LENGTH]!r}")
    return name


def create_key(session: Session, name: str, scopes: list[str] | tuple[str, ...]) -> tuple[ApiKey, str]:
    """A new key named ``name`` granting ``scopes`` (from :data:`SCOPES`): (row, the key itself, shown once).

    Raises ApiKeyError for an empty or unknown scope, a bad name, or a name already taken. Flushes.
    """
    name = _check_name(name)
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown or not scopes:
        raise ApiKeyError(f"scope: one or more of {', '.join(SCOPES)}, got {', '.join(unknown) or 'none'}")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise ApiKeyError(f"name: an API key named {name!r} exists already")
    key = secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=key[:PREFIX_LENGTH], digest=digest(key), scopes=sorted(set(scopes)))
    session.add(row)
    session.flush()
    return row, key


def list_keys(session: Session) -> list[ApiKey]:
    """Every key, revoked ones too, by name."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.name)))


def revoke_key(session: Session, name: str, *, now: datetime | None = None) -> ApiKey:
    """Revoke the key named ``name`` from now on (revoking twice keeps the first time); ApiKeyError if none."""
    row = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if row is None:
        raise ApiKeyError(f"name: no API key named {name!r}")
    if row.revoked_at is None:
        row.revoked_at = now or utcnow()
        session.flush()
    return row


def authenticate(session: Session, key: object, scope: str) -> tuple[str, ApiKey | None]:
    """Check a presented key for ``scope``: ("ok", row), ("forbidden", row) or ("unauthorized", None).

    Unauthorized: not a key's shape, unknown or revoked. Forbidden: a live key without ``scope``. The key is
    found by its digest, and the digests are compared with ``hmac.compare_digest``: no comparison depends on
    how much of a guess was right. Only reads.
    """
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        return "unauthorized", None
    presented = digest(key)
    row = session.scalar(select(ApiKey).where(ApiKey.digest == presented))
    if row is None or not hmac.compare_digest(row.digest, presented) or row.revoked_at is not None:
        return "unauthorized", None
    if scope not in (row.scopes or []):
        return "forbidden", row
    return "ok", row


def mark_used(session: Session, key_id: int, last_used_at: datetime | None, *, now: datetime | None = None) -> None:
    """Set key ``key_id``'s last use to ``now`` unless ``last_used_at`` (as read) is within a minute of it.

    Takes the values, not the row, and writes with one conditional UPDATE, so that it can start a transaction
    of its own (SQLite: a write that follows a read in the same transaction fails when another request wrote
    in between). The caller commits.
    """
    now = now or utcnow()
    if last_used_at is not None and now - last_used_at < LAST_USED_GRANULARITY:
        return
    stale = or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_GRANULARITY)
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, stale)
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
