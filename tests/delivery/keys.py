"""A throwaway DKIM key pair, and a DNS lookup that answers with its public half."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest


@pytest.fixture(scope="session")
def rsa_key(tmp_path_factory) -> tuple[bytes, str]:
    """A fresh 2048-bit RSA key (PEM) and the p= value of its DNS record."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test key")
    path = tmp_path_factory.mktemp("dkim") / "key.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(path), "2048"], check=True, capture_output=True)
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(path), "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    return path.read_bytes(), base64.b64encode(public).decode("ascii")


def dns_for(public_key: str):
    record = f"v=DKIM1; k=rsa; p={public_key}".encode("ascii")

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"p1._domainkey.shop.example.com." else None

    return lookup
