"""Content: layouts, blocks and content packs; the sandboxed Jinja environment;
the CSS-inlining cache; block selection for a recipient.

May import ``segments`` only; never ``delivery``. Nothing lives here yet: the
send loop (issue #3) brings it.
"""
