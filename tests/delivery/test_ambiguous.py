"""Where an SMTP transaction fails decides what happens next: before the final "." it is retried,
after it (no reply) the outcome is ambiguous and never retried, a 4xx/5xx reply is as it says.

Each case runs against a server that really misbehaves (tests/delivery/faulty_smtp.py), and counts
the copies it received.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery.transports import AmbiguousError, PermanentError, SmtpTransport, TransientError, deliver
from tests.delivery.faulty_smtp import FaultySmtp

SENDER = "news@shop.example"
MESSAGE = b"From: news@shop.example\r\nTo: a@example.com\r\nSubject: hi\r\n\r\nHello.\r\n.hidden dot\r\n"


def first_only(fault):
    """A fault for the server's first transaction, none after it."""
    return lambda number, recipient: fault if number == 0 else None


def transport(server: FaultySmtp, timeout: float = 5.0) -> SmtpTransport:
    return SmtpTransport(host="127.0.0.1", port=server.port, timeout=timeout, helo="client.test")


@pytest.mark.parametrize("fault", ["drop_at_rcpt", "drop_at_data"])
def test_a_drop_before_the_message_is_complete_is_retried_on_a_new_connection(fault):
    with FaultySmtp(first_only(fault)) as server, transport(server) as smtp:
        assert deliver(smtp, SENDER, "a@example.com", MESSAGE, sleep=lambda _: None) == 1
        assert server.copies() == {"a@example.com": 1}
        assert server.connections == 2
        assert server.messages[0][1] == MESSAGE  # dot-stuffing undone by the server: the message as built


def test_a_reset_while_the_message_is_being_written_is_retried():
    # Big enough that the client is still writing when the reset arrives: the "." never left.
    big = MESSAGE + b"x" * 998 + b"\r\n" * 1 + (b"y" * 76 + b"\r\n") * 400_000
    with FaultySmtp(first_only("drop_in_data")) as server, transport(server) as smtp:
        deliver(smtp, SENDER, "a@example.com", big, sleep=lambda _: None)
        assert server.copies() == {"a@example.com": 1}
        assert server.connections == 2


@pytest.mark.parametrize("fault", ["drop_after_dot", "reset_after_dot", "timeout_after_dot"])
def test_no_reply_after_the_final_dot_is_ambiguous_and_never_retried(fault):
    with FaultySmtp(first_only(fault)) as server, transport(server, timeout=1.0) as smtp:
        with pytest.raises(AmbiguousError, match="may have been delivered") as caught:
            deliver(smtp, SENDER, "a@example.com", MESSAGE, sleep=lambda _: None)
        assert not isinstance(caught.value, TransientError)
        assert server.copies() == {"a@example.com": 1}  # the server had it, once
        assert server.connections == 1  # and no second try, not even on a new connection
        # The transport is still usable: the next recipient goes out on a new connection.
        deliver(smtp, SENDER, "b@example.com", MESSAGE, sleep=lambda _: None)
        assert server.copies() == {"a@example.com": 1, "b@example.com": 1}


def test_a_4xx_reply_after_the_dot_is_retried_and_a_5xx_fails():
    with FaultySmtp(first_only("reply_451")) as server, transport(server) as smtp:
        assert deliver(smtp, SENDER, "a@example.com", MESSAGE, sleep=lambda _: None) == 2
        assert server.copies() == {"a@example.com": 1}
        assert server.connections == 1  # a refusal leaves the connection usable (RSET)
    with FaultySmtp(first_only("reply_550")) as server, transport(server) as smtp:
        with pytest.raises(PermanentError) as caught:
            deliver(smtp, SENDER, "a@example.com", MESSAGE, sleep=lambda _: None)
        assert caught.value.code == 550 and server.copies() == {}


QUICK_FAULTS = [None, "drop_at_rcpt", "drop_at_data", "drop_after_dot", "reset_after_dot", "reply_451", "reply_550"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(faults=st.lists(st.sampled_from(QUICK_FAULTS), min_size=1, max_size=30))
def test_whatever_fails_where_no_recipient_gets_two_copies_and_each_outcome_says_what_the_server_has(faults):
    recipients = [f"r{i}@example.com" for i in range(8)]
    with FaultySmtp(lambda number, recipient: faults[number] if number < len(faults) else None) as server:
        outcomes = {}
        with transport(server) as smtp:
            for recipient in recipients:
                try:
                    deliver(smtp, SENDER, recipient, MESSAGE, sleep=lambda _: None)
                    outcomes[recipient] = "sent"
                except AmbiguousError:
                    outcomes[recipient] = "unknown"
                except (TransientError, PermanentError):
                    outcomes[recipient] = "not sent"
        copies = server.copies()
    assert max(copies.values(), default=0) <= 1
    for recipient, outcome in outcomes.items():
        assert copies[recipient] == (0 if outcome == "not sent" else 1), (recipient, outcome)


def test_an_outbox_write_that_fails_leaves_no_message_behind_so_writing_it_again_is_safe(tmp_path):
    from delivery.transports import DeliveryError, OutboxTransport

    outbox = OutboxTransport(tmp_path / "box")
    (tmp_path / "box" / "new").rmdir()
    (tmp_path / "box" / "new").write_text("not a folder")  # the rename into new/ fails (ENOTDIR), even for root
    with pytest.raises(DeliveryError, match="cannot write to the outbox") as caught:
        outbox.send(SENDER, "a@example.com", MESSAGE)
    assert not isinstance(caught.value, (AmbiguousError, TransientError))
    assert list((tmp_path / "box" / "tmp").iterdir()) == []  # no half-delivered file either
    (tmp_path / "box" / "new").unlink()
    (tmp_path / "box" / "new").mkdir()
    outbox.send(SENDER, "a@example.com", MESSAGE)
    assert len(list((tmp_path / "box" / "new").iterdir())) == 1
