"""Signed tracking and unsubscribe URLs, and the registry of links they may lead to.

A token is the ledger row's id (and the link's id, for a click) with an HMAC
of them under the secret key, so nobody can forge a click, an open or an
unsubscribe for somebody else's message, and a click can only redirect to a
URL registered when the message was built.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from delivery.models import Link

_SIGNATURE_BYTES = 12


class LinkSigner:
    """Builds and checks the signed URLs of one deployment (its base URL and secret)."""

    def __init__(self, secret: str, base_url: str):
        # BLAKE2b in keyed mode is a MAC in one call, several times cheaper than
        # HMAC-SHA256, and every message carries about ten signed links.
        self._key = hashlib.blake2b(secret.encode(), person=b"patron-links").digest()
        self.base_url = base_url.rstrip("/")

    def sign(self, *parts: object) -> str:
        """The signature of ``parts``: short, URL-safe, unforgeable without the secret."""
        mac = hashlib.blake2b(".".join(map(str, parts)).encode(), key=self._key, digest_size=_SIGNATURE_BYTES)
        return base64.urlsafe_b64encode(mac.digest()).decode()

    def verify(self, signature: str, *parts: object) -> bool:
        """Whether ``signature`` is the signature of ``parts``."""
        return hmac.compare_digest(signature, self.sign(*parts))

    def click_url(self, delivery_id: int, link_id: int) -> str:
        return f"{self.base_url}/r/{delivery_id}/{link_id}/{self.sign('r', delivery_id, link_id)}"

    def open_url(self, delivery_id: int) -> str:
        return f"{self.base_url}/o/{delivery_id}/{self.sign('o', delivery_id)}.gif"

    def unsubscribe_url(self, delivery_id: int) -> str:
        return f"{self.base_url}/u/{delivery_id}/{self.sign('u', delivery_id)}"


def register_links(session: Session, urls: Sequence[str], block_version_id: int | None = None) -> list[int]:
    """The link ids of ``urls`` in one block version (None: the layout), registering new ones; safe across workers."""
    where = "" if block_version_id is None else str(block_version_id)
    digests = [hashlib.sha256(f"{where}\n{url}".encode()).hexdigest() for url in urls]
    if not digests:
        return []
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(Link).on_conflict_do_nothing(index_elements=["digest"]),
        [{"url": url, "digest": digest, "block_version_id": block_version_id} for url, digest in zip(urls, digests)],
    )
    ids = dict(session.execute(select(Link.digest, Link.id).where(Link.digest.in_(digests))).all())
    return [ids[digest] for digest in digests]
