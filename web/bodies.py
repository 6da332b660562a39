"""Request bodies read within a limit, whatever ``Content-Length`` says or whether there is one (chunked).

Werkzeug's own limit (``request.max_content_length``) refuses a ``Content-Length`` over it, but a body sent with
``Transfer-Encoding: chunked`` has no length: Werkzeug then reads up to the limit and stops there without a word,
so a padded body was silently cut and accepted. ``read_body`` reads one byte more than the limit and answers 413
when it gets it.
"""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge


class BodyTooLarge(RequestEntityTooLarge):
    """A body over its endpoint's limit: 413, the description naming the limit in bytes."""

    def __init__(self, limit: int):
        super().__init__(f"body: larger than this endpoint's limit of {limit} bytes")
        self.limit = limit


def read_body(limit: int) -> bytes:
    """The request body (bytes, at most ``limit``); raises ``BodyTooLarge`` (413) past ``limit`` bytes.

    At most ``limit + 1`` bytes are read, with or without ``Content-Length``. The body is kept on the request,
    so ``request.form`` and ``request.get_data()`` then parse and return the same bytes without reading again.
    """
    request.max_content_length = limit + 1  # a Content-Length over it is refused before anything is read
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise BodyTooLarge(limit) from None
    if len(body) > limit:
        raise BodyTooLarge(limit)
    return body
