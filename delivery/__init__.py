"""Delivery: the message (MIME bytes), transports (outbox, SMTP), the delivery
ledger, tracking tokens and links, and (next) the responses that feed back
into the audience.

- ``models`` and ``ledger``: one row per (run, contact), written before the wire;
- ``message``: multipart MIME built directly, headers safe from CR/LF;
- ``dkim``: signing, List-Unsubscribe headers included;
- ``tracking``: signed click, open and unsubscribe URLs, the link registry;
- ``transports``: ``outbox://`` and ``smtp://``, chosen by URL scheme.

May import ``segments`` only; never ``content``.
"""
