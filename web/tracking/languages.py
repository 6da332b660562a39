"""The languages the preference page offers: the locales the imported packs write in, named in themselves."""

from __future__ import annotations

from functools import lru_cache

from babel import Locale, UnknownLocaleError
from sqlalchemy import select, union

from content.models import Block, Pack


@lru_cache(maxsize=256)
def language_name(key: str) -> str:
    """A locale key's name in its own language via Babel/CLDR (``es-mx`` → ``Español (México)``); the key if unknown."""
    try:
        locale = Locale.parse(key.replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        return key
    name = locale.get_display_name(locale) or key
    return name[:1].upper() + name[1:]


def offered_languages(session) -> list[tuple[str, str]]:
    """(locale key, own name) of every locale a live block or a pack's default is in, by name."""
    keys = session.scalars(
        union(select(Block.locale).where(Block.retired_at.is_(None)), select(Pack.default_locale))
    ).all()
    return sorted(((key, language_name(key)) for key in keys if key), key=lambda pair: pair[1].casefold())
