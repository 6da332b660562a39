"""Campaigns: runs, the assembly pipeline (segment → selection → render →
message → transport), executors, the scheduler, experiments and follow-ups.

May import ``segments``, ``content`` and ``delivery``; never ``web``, Flask or
``config``. Nothing lives here yet: the send loop (issue #3) brings it.
"""
