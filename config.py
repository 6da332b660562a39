"""Patron's settings: ``PATRON_*`` environment variables over embedded defaults.

Only ``web`` (the app factory and the CLI) reads this module; it passes
settings down to the other packages as plain arguments. An invalid value stops
start-up with a :class:`SettingsError` that names the variable.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

SECRET_KEY_FILE = "secret_key"
MIN_SECRET_KEY_LENGTH = 32


class SettingsError(ValueError):
    """A ``PATRON_*`` variable holds a value Patron cannot use."""

    def __init__(self, variable: str, problem: str):
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Settings:
    instance_path: Path
    database_url: str
    secret_key: str
    base_url: str
    interest_half_life_days: float
    delivery_url: str = "outbox:"
    attribution_window_days: float = 7.0
    proxy_hops: int = 0
    old_secret_keys: tuple[str, ...] = ()
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_key_path: Path | None = None
    bounce_domain: str | None = None  # None: each campaign's sender domain
    soft_bounce_limit: int = 3
    soft_bounce_days: float = 30.0
    click_journal: Path | None = None  # None: each click is recorded before its redirect is answered


def load_settings(environ: dict[str, str] | None = None, instance_path: Path | None = None) -> Settings:
    """Read the settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    instance = _instance_path(env, instance_path)
    return Settings(
        instance_path=instance,
        database_url=_database_url(env, instance),
        secret_key=_secret_key(env, instance),
        base_url=_base_url(env),
        interest_half_life_days=_positive_number(env, "PATRON_INTEREST_HALF_LIFE_DAYS", 30.0),
        delivery_url=_delivery_url(env, instance),
        attribution_window_days=_positive_number(env, "PATRON_ATTRIBUTION_WINDOW_DAYS", 7.0),
        proxy_hops=_proxy_hops(env),
        click_journal=_click_journal(env, instance),
        old_secret_keys=_old_secret_keys(env),
        **_dkim(env),
        **_bounces(env),
    )


def _instance_path(env, default: Path | None) -> Path:
    """PATRON_INSTANCE_PATH (default ``./instance``): a directory, made here with its parents if missing."""
    instance = Path(env.get("PATRON_INSTANCE_PATH") or default or Path.cwd() / "instance").expanduser().resolve()
    if instance.exists() and not instance.is_dir():
        raise SettingsError("PATRON_INSTANCE_PATH", f"{instance} is a file; the instance must be a directory")
    try:
        instance.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError("PATRON_INSTANCE_PATH", f"cannot create the directory {instance}: {exc.strerror}") from None
    return instance


def _click_journal(env, instance: Path) -> Path | None:
    """PATRON_CLICK_JOURNAL: the click journal's directory (default ``<instance>/journal``), or ``off``."""
    raw = (env.get("PATRON_CLICK_JOURNAL") or "").strip()
    if raw.lower() == "off":
        return None
    path = Path(raw).expanduser() if raw else instance / "journal"
    if path.exists() and not path.is_dir():
        raise SettingsError("PATRON_CLICK_JOURNAL", f"must be a directory or off: {str(path)!r} is a file")
    return path.resolve()


def _bounces(env) -> dict:
    """Where bounces come back (VERP) and how many soft bounces in how many days suppress an address."""
    domain = (env.get("PATRON_BOUNCE_DOMAIN") or "").strip().lower() or None
    if domain is not None:
        try:
            ascii_domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            ascii_domain = ""
        if not re.fullmatch(r"[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})+", ascii_domain) or len(ascii_domain) > 200:
            raise SettingsError("PATRON_BOUNCE_DOMAIN", f"must be a domain name like bounces.example.com: {domain!r}")
        domain = ascii_domain
    limit = _positive_number(env, "PATRON_SOFT_BOUNCE_LIMIT", 3)
    if limit != int(limit):
        raise SettingsError("PATRON_SOFT_BOUNCE_LIMIT", f"must be a whole number, got {limit:g}")
    return {
        "bounce_domain": domain,
        "soft_bounce_limit": int(limit),
        "soft_bounce_days": _positive_number(env, "PATRON_SOFT_BOUNCE_DAYS", 30.0),
    }


def _delivery_url(env, instance: Path) -> str:
    raw = env.get("PATRON_DELIVERY_URL") or f"outbox://{instance / 'outbox'}"
    scheme = raw.partition(":")[0]
    if scheme not in ("outbox", "smtp"):
        raise SettingsError("PATRON_DELIVERY_URL", f"must start with outbox: or smtp://, got {printable(scheme)!r}")
    # An outbox is a local path, which may hold spaces; an SMTP server is a host on the network.
    check_url("PATRON_DELIVERY_URL", raw, network=scheme == "smtp")
    return raw


HOST = re.compile(r"[a-z0-9]([a-z0-9_-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9_-]*[a-z0-9])?)*\.?|[0-9a-f:.]*:[0-9a-f:.%a-z]*")


def check_url(variable: str, raw: str, *, network: bool) -> None:
    """Refuse a URL setting that would break what it is put into (a header, a connection): a control character
    anywhere, whitespace in a ``network`` URL, and there a host that is not a host name or IP address, or a port
    outside 1-65535. The error names the variable and the fault, never the URL (it may hold a password)."""
    if not all(c.isprintable() or c == " " for c in raw):
        raise SettingsError(variable, "must not contain a line break or other control character")
    if not network:
        return
    if any(c.isspace() for c in raw):
        raise SettingsError(variable, "must not contain spaces (a space in a password is written %20)")
    parts = urlsplit(raw)
    host = parts.hostname or ""
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_host = ""
    if not HOST.fullmatch(ascii_host):
        raise SettingsError(variable, f"needs a host name or IP address after //, got {printable(host)!r}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:  # a given port that is not a number from 1 to 65535 (None: the scheme's default)
        given = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise SettingsError(variable, f"the port must be a number from 1 to 65535, got {printable(given)!r}")


def printable(text) -> str:
    """``text`` safe in one line on a terminal: a control character shows as its escape, never acts."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def _dkim(env) -> dict:
    """DKIM signing: all three of selector, domain and key file, or none of them."""
    names = ("PATRON_DKIM_SELECTOR", "PATRON_DKIM_DOMAIN", "PATRON_DKIM_KEY_FILE")
    given = {name: env.get(name) for name in names if env.get(name)}
    if not given:
        return {}
    missing = [name for name in names if name not in given]
    if missing:
        raise SettingsError(missing[0], f"DKIM signing needs all of {', '.join(names)}")
    key = Path(given["PATRON_DKIM_KEY_FILE"])
    if not key.is_file():
        raise SettingsError("PATRON_DKIM_KEY_FILE", f"no such file: {key}")
    return {
        "dkim_selector": given["PATRON_DKIM_SELECTOR"],
        "dkim_domain": given["PATRON_DKIM_DOMAIN"],
        "dkim_key_path": key,
    }


def _database_url(env, instance: Path) -> str:
    raw = env.get("PATRON_DATABASE_URL")
    if not raw:
        return f"sqlite:///{instance / 'patron.db'}"
    try:
        url = make_url(raw)
    except ArgumentError:
        raise SettingsError("PATRON_DATABASE_URL", f"not a database URL: {raw!r}") from None
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise SettingsError("PATRON_DATABASE_URL", f"Patron runs on sqlite or postgresql, not {backend!r}")
    if backend == "postgresql" and not url.host:
        check_url("PATRON_DATABASE_URL", raw, network=False)  # a local socket: no host to check
    else:
        check_url("PATRON_DATABASE_URL", raw, network=backend == "postgresql")
    if backend == "postgresql" and url.drivername == "postgresql":
        # The bare scheme means psycopg2 to SQLAlchemy; Patron ships psycopg 3.
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def _secret_key(env, instance: Path) -> str:
    key = env.get("PATRON_SECRET_KEY")
    if key is not None:
        if len(key) < MIN_SECRET_KEY_LENGTH:
            raise SettingsError("PATRON_SECRET_KEY", f"must be at least {MIN_SECRET_KEY_LENGTH} characters long")
        return key
    path = instance / SECRET_KEY_FILE
    try:
        if path.exists():
            return _read_key(path)
        key = secrets.token_urlsafe(48)
        # Created owner-only: the key signs tracking links and sessions.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return _read_key(path)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
    except OSError as exc:
        raise SettingsError(
            "PATRON_SECRET_KEY", f"unset, and the key file {path} cannot be used: {exc.strerror}"
        ) from None
    return key


def _read_key(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise SettingsError("PATRON_SECRET_KEY", f"unset, and the key file {path} is not UTF-8 text") from None


def _old_secret_keys(env) -> tuple[str, ...]:
    """Retired keys whose tracking tokens still verify: comma-separated, spaces around each ignored."""
    raw = env.get("PATRON_OLD_SECRET_KEYS") or ""
    keys = tuple(key.strip() for key in raw.split(",") if key.strip())
    for number, key in enumerate(keys, start=1):
        if len(key) < MIN_SECRET_KEY_LENGTH:  # the key itself is never shown
            raise SettingsError(
                "PATRON_OLD_SECRET_KEYS",
                f"key {number} of {len(keys)} is {len(key)} characters; each must be at least {MIN_SECRET_KEY_LENGTH}",
            )
    return keys


def _base_url(env) -> str:
    raw = env.get("PATRON_BASE_URL") or "http://127.0.0.1:5000"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError("PATRON_BASE_URL", f"must be an http(s) URL with a host, got {printable(raw)!r}")
    check_url("PATRON_BASE_URL", raw, network=True)  # it goes into every message's links and headers
    if parts.query or parts.fragment:
        raise SettingsError("PATRON_BASE_URL", "must not carry a query or fragment")
    return raw.rstrip("/")


MAX_PROXY_HOPS = 10


def _proxy_hops(env) -> int:
    """How many reverse proxies in front of Patron set ``X-Forwarded-*``: 0 (none, the default) trusts no header."""
    raw = (env.get("PATRON_PROXY_HOPS") or "0").strip()
    if not raw.isdigit() or not raw.isascii() or int(raw) > MAX_PROXY_HOPS:
        raise SettingsError("PATRON_PROXY_HOPS", f"must be a whole number from 0 to {MAX_PROXY_HOPS}, got {raw!r}")
    return int(raw)


def _positive_number(env, variable: str, default: float) -> float:
    raw = env.get(variable)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(variable, f"must be a number, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(variable, f"must be a positive number, got {raw!r}")
    return value
