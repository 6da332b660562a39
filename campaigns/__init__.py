"""Campaigns: campaigns and their runs, the assembly pipeline (segment → selection
→ render → message → transport) and the executors that run it.

- ``definition``: the campaign YAML contract, checked field by field;
- ``runs``: create, start (``start_run(session, campaign_id)``; after a run that
  mailed its audience, only with ``again=True``), plan, pause, resume, cancel,
  resend-unknown, status (skipped recipients by reason), list and show;
- ``pipeline``: one worker's ``Assembly`` of a run: select, render, build;
- ``batches``: claim ledger rows, assemble, send on a sender thread, record each
  outcome as it comes on a recorder thread;
- ``executors``: the id-only batch task, the local pool and ``execute_run``;
- ``preview``: one contact's email, with the reasons for each block;
- ``reports``: what came back from each run, by block, locale and day, in
  aggregate SQL;
- ``privacy``: a person's whole record (audience and messages) exported or
  erased.

The scheduler, experiments and follow-ups come later. May import ``segments``,
``content`` and ``delivery``; never ``web``, Flask or ``config``.
"""
