"""Signed tracking URLs and the link registry."""

from __future__ import annotations

from delivery.tracking import LinkSigner, register_links

SECRET = "k" * 40


def test_signed_urls_verify_and_cannot_be_forged_or_moved():
    signer = LinkSigner(SECRET, "https://patron.example.com/")
    url = signer.click_url(41, 7)
    assert url.startswith("https://patron.example.com/r/41/7/")
    signature = url.rsplit("/", 1)[1]
    assert signer.verify(signature, "r", 41, 7)
    assert not signer.verify(signature, "r", 42, 7)  # another recipient's message
    assert not signer.verify(signature, "r", 41, 8)  # another link
    assert not signer.verify(signature, "u", 41)  # a click signature is not an unsubscribe
    assert not LinkSigner("x" * 40, "https://patron.example.com").verify(signature, "r", 41, 7)
    unsubscribe = signer.unsubscribe_url(41).rsplit("/", 1)[1]
    assert signer.verify(unsubscribe, "u", 41) and unsubscribe != signature
    assert signer.open_url(41).endswith(".gif")


def test_a_url_is_registered_once_per_block_version(session):
    first = register_links(session, ["https://shop.example.com/a", "https://shop.example.com/b"], 3)
    again = register_links(session, ["https://shop.example.com/b", "https://shop.example.com/a"], 3)
    elsewhere = register_links(session, ["https://shop.example.com/a"], None)
    assert again == first[::-1]
    assert elsewhere[0] not in first
    assert register_links(session, [], 3) == []
