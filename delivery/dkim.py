"""DKIM signing (RFC 6376) of built messages, with dkimpy.

Relaxed/relaxed canonicalisation, rsa-sha256. The headers a receiver shows or acts on are signed,
and those that must never be added in transit (a second From, Subject or List-Unsubscribe) are
signed once more than they occur, so adding one breaks the signature.
"""

from __future__ import annotations

from pathlib import Path

import dkim

# Signed once: each header the message has. Listing a header it lacks (Reply-To) signs its absence.
SIGNED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Language",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
    "Reply-To",
)
# Signed a second time, so that no second instance can be added without breaking the signature.
OVERSIGNED_HEADERS = ("From", "To", "Subject", "Reply-To", "List-Unsubscribe", "List-Unsubscribe-Post")


class DkimSigner:
    """Signs messages for one domain and selector with one RSA private key (PEM, PKCS#1 or PKCS#8)."""

    def __init__(self, *, selector: str, domain: str, private_key: bytes) -> None:
        self.selector = selector
        self.domain = domain
        self._selector = selector.encode("ascii")
        self._domain = domain.encode("ascii")
        self._private_key = private_key
        self._headers = [name.encode("ascii") for name in SIGNED_HEADERS + OVERSIGNED_HEADERS]
        try:  # fail at start-up on a bad key, not on the first message
            self.sign(b"From: check@" + self._domain + b"\r\n\r\n")
        except dkim.DKIMException as exc:
            raise ValueError(f"DKIM key for {selector}._domainkey.{domain} cannot sign: {exc}") from None

    @classmethod
    def from_file(cls, *, selector: str, domain: str, path: str | Path) -> DkimSigner:
        """A signer whose private key is read from a PEM file."""
        return cls(selector=selector, domain=domain, private_key=Path(path).read_bytes())

    def sign(self, message: bytes) -> bytes:
        """The message with a DKIM-Signature header in front."""
        signature = dkim.sign(
            message,
            self._selector,
            self._domain,
            self._private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=self._headers,
        )
        return signature + message
