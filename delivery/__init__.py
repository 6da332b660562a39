"""Delivery: the message (MIME bytes), transports (outbox, SMTP), the delivery
ledger, tracking tokens and links, and the responses that feed back into the
audience.

May import ``segments`` only; never ``content``. Nothing lives here yet: the
send loop (issue #3) brings it.
"""
