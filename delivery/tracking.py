"""Signed tracking and unsubscribe URLs, and the registry of links they may lead to.

A token is a key id and a MAC of the ledger row's id (and the link's id, for
a click) under the secret key (see ``LinkSigner``), so nobody can forge a click, an open or an
unsubscribe for somebody else's message, and a click can only redirect to a
URL registered when the message was built.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from delivery.models import Link
from segments.db import insert_for

_SIGNATURE_BYTES = 12
_KEY_ID_BYTES = 3  # four base64url characters
_TOKEN = re.compile(r"(?:([A-Za-z0-9_-]{4})\.)?([A-Za-z0-9_-]{16})")
# VERP: the delivery id and its token in the local part; "bounces" for the envelope sender, "unsubscribe" for mailto.
_VERP_PREFIXES = {"bounces": "b", "unsubscribe": "m"}
_VERP = re.compile(
    r"(bounces|unsubscribe)\+([0-9]{1,19})-([A-Za-z0-9_.-]{16,21})@([A-Za-z0-9.-]{1,253})", re.IGNORECASE
)


def _key(secret: str) -> bytes:
    return hashlib.blake2b(secret.encode(), person=b"patron-links").digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _fields(parts: tuple) -> bytes:
    """The MAC input: each part as text (UTF-8), after its length as 4 bytes, so no two tuples share one."""
    out = bytearray()
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, (int, str)):
            raise TypeError(f"a token part is an int or a str, not {type(part).__name__}")
        data = str(part).encode("utf-8", "surrogatepass")
        out += struct.pack(">I", len(data)) + data
    return bytes(out)


class LinkSigner:
    """Builds and checks the signed URLs of one deployment (its base URL, secret and retired secrets).

    A token is ``KID.MAC``: KID names the key (4 base64url characters derived from it, no secret), MAC is a
    12-byte keyed BLAKE2b over the length-prefixed parts, base64url (16 characters). Tokens signed with a key
    in ``old_secrets`` still verify, so the secret can be rotated; once a key is removed its tokens fail.
    Tokens from before key ids (16 characters, parts joined with ".") verify under any configured key when no
    part contains a ".", where that old input was unambiguous: links already in inboxes keep working.
    """

    def __init__(
        self, secret: str, base_url: str, old_secrets: Sequence[str] = (), bounce_domain: str | None = None
    ) -> None:
        # BLAKE2b in keyed mode is a MAC in one call, several times cheaper than
        # HMAC-SHA256, and every message carries about ten signed links.
        self._key = _key(secret)
        self._keys = [self._key, *(_key(old) for old in old_secrets if old != secret)]
        self.key_id = self._key_id(self._key)
        self.base_url = base_url.rstrip("/")
        # Where bounces and mailto unsubscribes come back (PATRON_BOUNCE_DOMAIN); None: the sender's domain.
        self.bounce_domain = bounce_domain.lower() if bounce_domain else None

    @staticmethod
    def _key_id(key: bytes) -> str:
        return _b64(hashlib.blake2b(key, person=b"patron-key-id", digest_size=_KEY_ID_BYTES).digest())

    @staticmethod
    def _mac(key: bytes, data: bytes, person: bytes = b"patron-token-v2") -> str:
        return _b64(hashlib.blake2b(data, key=key, digest_size=_SIGNATURE_BYTES, person=person).digest())

    def sign(self, *parts: int | str) -> str:
        """The token of ``parts`` (ints and strs): ``KID.MAC``, URL-safe, unforgeable without the secret."""
        return f"{self.key_id}.{self._mac(self._key, _fields(parts))}"

    def verify(self, token: object, *parts: object) -> bool:
        """Whether ``token`` is a token of ``parts`` under a configured key; False for anything malformed."""
        if not isinstance(token, str) or not token.isascii():
            return False
        match = _TOKEN.fullmatch(token)
        if match is None:
            return False
        key_id, mac = match.groups()
        try:
            data = _fields(parts)
        except TypeError:
            return False
        if key_id is None:
            return self._verify_legacy(mac, parts)
        return any(hmac.compare_digest(mac, self._mac(key, data)) for key in self._keys if self._key_id(key) == key_id)

    def _verify_legacy(self, mac: str, parts: tuple) -> bool:
        texts = [str(part) for part in parts]
        if any("." in text for text in texts):
            return False  # "." joined them: such parts were ambiguous
        data = ".".join(texts).encode("utf-8", "surrogatepass")
        legacy = [_b64(hashlib.blake2b(data, key=key, digest_size=_SIGNATURE_BYTES).digest()) for key in self._keys]
        return any(hmac.compare_digest(mac, expected) for expected in legacy)

    def click_url(self, delivery_id: int, link_id: int) -> str:
        return f"{self.base_url}/r/{delivery_id}/{link_id}/{self.sign('r', delivery_id, link_id)}"

    def open_url(self, delivery_id: int) -> str:
        return f"{self.base_url}/o/{delivery_id}/{self.sign('o', delivery_id)}.gif"

    def unsubscribe_url(self, delivery_id: int) -> str:
        return f"{self.base_url}/u/{delivery_id}/{self.sign('u', delivery_id)}"

    def preferences_url(self, delivery_id: int) -> str:
        """The preference page: the unsubscribe page's own address, at its preferences form."""
        return f"{self.unsubscribe_url(delivery_id)}#preferences"

    def return_path(self, delivery_id: int, sender_domain: str) -> str:
        """The VERP envelope sender (MAIL FROM, later Return-Path) of a delivery: ``bounces+D-TOKEN@domain``.

        The domain is the bounce domain, else ``sender_domain``; the token signs ('b', D).
        """
        return f"bounces+{delivery_id}-{self.sign('b', delivery_id)}@{self.bounce_domain or sender_domain}"

    def unsubscribe_mailto(self, delivery_id: int, sender_domain: str) -> str:
        """The per-recipient ``mailto:`` of List-Unsubscribe: ``unsubscribe+D-TOKEN@domain`` (token of ('m', D))."""
        address = f"unsubscribe+{delivery_id}-{self.sign('m', delivery_id)}@{self.bounce_domain or sender_domain}"
        return f"mailto:{address}?subject=unsubscribe"

    def parse_verp(self, address: object) -> tuple[str, int] | None:
        """("bounce" or "unsubscribe", delivery id) of a VERP address this deployment signed; None otherwise.

        Takes a bare address or one in angle brackets; never raises. The domain is not checked: the token is
        what proves the address is ours, and mail may arrive through an alias domain.
        """
        if not isinstance(address, str) or len(address) > 512:
            return None
        match = _VERP.fullmatch(address.strip().strip("<>").strip())
        if match is None:
            return None
        prefix, delivery, token, _ = match.groups()
        part = _VERP_PREFIXES[prefix.lower()]
        if not self.verify(token, part, int(delivery)):
            return None
        return ("bounce" if part == "b" else "unsubscribe"), int(delivery)


def register_links(
    session: Session,
    urls: Sequence[str],
    block_version_id: int | None = None,
    interests: dict[str, float] | None = None,
) -> list[int]:
    """The link ids of ``urls`` in one block version (None: the layout), registering new ones; safe across workers.

    ``interests`` is that block version's interest weights ({tag: weight}), kept with each new link so a
    click can teach them (``delivery.learning``); None for the layout's links.
    """
    where = "" if block_version_id is None else str(block_version_id)
    digests = [hashlib.sha256(f"{where}\n{url}".encode()).hexdigest() for url in urls]
    if not digests:
        return []
    session.execute(
        insert_for(session, Link).on_conflict_do_nothing(index_elements=["digest"]),
        [
            {"url": url, "digest": digest, "block_version_id": block_version_id, "interests": interests}
            for url, digest in zip(urls, digests)
        ],
    )
    ids = dict(session.execute(select(Link.digest, Link.id).where(Link.digest.in_(digests))).all())
    return [ids[digest] for digest in digests]
