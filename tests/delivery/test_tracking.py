"""Signed tracking URLs and the link registry."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

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


# Hostile tokens: whatever arrives in a URL, verify answers False and never raises.
@given(token=st.text(), parts=st.lists(st.one_of(st.text(), st.integers()), max_size=4))
def test_verify_returns_false_for_any_text(token, parts):
    signer = LinkSigner(SECRET, "https://patron.example.com")
    assert signer.verify(token, *parts) is False or signer.sign(*parts) == token


def test_verify_returns_false_for_malformed_tokens():
    signer = LinkSigner(SECRET, "https://patron.example.com")
    good = signer.sign("u", 41)
    for bad in [
        "é" * 16,
        good + "é",
        "",
        None,
        41,
        b"x" * 21,
        good[:-1],
        good + "=",
        "\x00" * 21,
        good.replace(".", ""),
    ]:
        assert signer.verify(bad, "u", 41) is False
    assert signer.verify(good, "u", object()) is False
    assert signer.verify(good, "u", "\ud800") is False


# The MAC input is unambiguous: tuples that joined with "." to the same text no longer share a token.
def test_tuples_that_collided_under_dot_joining_get_different_tokens():
    signer = LinkSigner(SECRET, "https://patron.example.com")
    collided = [("r", "41.7"), ("r", 41, 7), ("r.41", 7), ("r.41.7",)]
    tokens = [signer.sign(*parts) for parts in collided]
    assert len(set(tokens)) == len(collided)
    for token, parts in zip(tokens, collided):
        for other in collided:
            assert signer.verify(token, *other) == (other == parts)


@given(st.lists(st.text(), max_size=4), st.lists(st.text(), max_size=4))
def test_different_field_tuples_never_share_a_token(a, b):
    signer = LinkSigner(SECRET, "https://patron.example.com")
    assert (signer.sign(*a) == signer.sign(*b)) == (a == b)


# Rotation: the key id in each token picks the key; retired keys verify until removed.
def test_a_rotated_secret_keeps_old_tokens_until_the_old_key_is_removed():
    old = LinkSigner("o" * 40, "https://patron.example.com")
    token = old.sign("u", 41)
    rotated = LinkSigner("n" * 40, "https://patron.example.com", old_secrets=["o" * 40])
    assert rotated.sign("u", 41) != token and rotated.sign("u", 41).split(".")[0] != token.split(".")[0]
    assert rotated.verify(token, "u", 41)
    assert not rotated.verify(token, "u", 42)
    assert not LinkSigner("n" * 40, "https://patron.example.com").verify(token, "u", 41)


def test_links_already_sent_in_the_old_format_still_verify():
    import base64
    import hashlib

    key = hashlib.blake2b(SECRET.encode(), person=b"patron-links").digest()
    mac = hashlib.blake2b(b"r.41.7", key=key, digest_size=12).digest()
    legacy = base64.urlsafe_b64encode(mac).decode()
    signer = LinkSigner(SECRET, "https://patron.example.com")
    assert signer.verify(legacy, "r", 41, 7)
    assert signer.verify(legacy, "r", "41", "7")
    assert not signer.verify(legacy, "r", "41.7")  # the ambiguous reading is refused
    assert not signer.verify(legacy, "r", 41, 8)


@given(delivery=st.integers(min_value=1, max_value=2**63 - 1), domain=st.sampled_from(["shop.example.com", "b.co"]))
def test_verp_addresses_parse_back_to_their_delivery_and_nothing_else(delivery, domain):
    signer = LinkSigner(SECRET, "https://patron.example.com", bounce_domain="Bounces.Example.NET")
    bounce = signer.return_path(delivery, domain)
    mailto = signer.unsubscribe_mailto(delivery, domain)
    assert bounce.endswith("@bounces.example.net") and len(bounce.partition("@")[0]) <= 64
    assert signer.parse_verp(bounce) == ("bounce", delivery)
    assert signer.parse_verp(f" <{bounce}> ") == ("bounce", delivery)
    address = mailto.removeprefix("mailto:").removesuffix("?subject=unsubscribe")
    assert signer.parse_verp(address) == ("unsubscribe", delivery)
    # The other kind's prefix, another delivery, another key or one changed character: not ours.
    local, _, rest = bounce.partition("@")
    assert signer.parse_verp(local.replace("bounces+", "unsubscribe+") + "@" + rest) is None
    assert signer.parse_verp(bounce.replace(f"+{delivery}-", f"+{delivery + 1}-")) is None
    assert LinkSigner("x" * 40, "https://patron.example.com").parse_verp(bounce) is None
    flipped = local[:-1] + ("A" if local[-1] != "A" else "B")
    assert signer.parse_verp(f"{flipped}@{rest}") is None
    # Without a bounce domain, the sender's.
    assert LinkSigner(SECRET, "https://p.example").return_path(delivery, domain).endswith("@" + domain)


@given(st.one_of(st.text(max_size=600), st.integers(), st.none()))
def test_parse_verp_never_raises(value):
    assert LinkSigner(SECRET, "https://patron.example.com").parse_verp(value) is None  # none of them is signed
