"""Delivery: the message (MIME bytes), transports (outbox, SMTP), the delivery
ledger, tracking tokens and links, and the responses that feed back into the
audience.

- ``models`` and ``ledger``: one row per (run, contact), written before the wire;
- ``message``: multipart MIME built directly, headers safe from CR/LF;
- ``dkim``: signing, List-Unsubscribe headers included;
- ``tracking``: signed click, open and unsubscribe URLs, VERP addresses, the link registry
  (each link with its block's interest weights);
- ``responses``: opens, clicks, unsubscribes, conversions: a response row and a
  timeline event each (docs/responses.md);
- ``journal`` and ``clicks``: the click journal (a click answered once appended to a local file)
  and the batch writer that records journalled clicks, exactly once by their journal position;
- ``machine``: which opens and clicks a machine made (Apple MPP, scanners, bots, prefetch);
- ``learning``: the closed loop, human clicks and conversions raising interests;
- ``dsn`` and ``bounces``: the bounce mailbox (DSNs, ARF complaints, auto-replies, mailto
  unsubscribes) matched by VERP or Message-ID, and what each suppresses (docs/bounces.md);
- ``transports``: ``outbox://`` and ``smtp://``, chosen by URL scheme.

May import ``segments`` only; never ``content``.
"""
