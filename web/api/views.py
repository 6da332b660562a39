"""The server-to-server API (``/api/v1/…``, bearer keys) and the thank-you-page conversion pixel (``/c.gif``).

Every answer under ``/api/v1`` is JSON, errors included: ``{"error": "one line", "fields": {name: [problems]}}``.
The pixel answers the same 1×1 GIF whatever happens.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from functools import wraps

from flask import Blueprint, current_app, jsonify, make_response, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from delivery.bounces import process_message
from delivery.dsn import MAX_BYTES as MAX_MESSAGE_BYTES  # what the bounce reader reads at most
from delivery.responses import ConversionError, record_conversion
from web.api.keys import authenticate, mark_used
from web.api.schemas import ConversionIn, ConversionOut, PixelConversionIn
from web.bodies import read_body
from web.db import get_session
from web.tracking.views import NO_CACHE, PIXEL, records, signer

bp = Blueprint("api", __name__)
log = logging.getLogger(__name__)

MAX_JSON_BYTES = 16 * 1024
MAX_AUTHORIZATION = 256
CLICK_COOKIE = "patron_click"  # set by the tracking blueprint on a click redirect


class ApiError(HTTPException):
    """An API failure answered as JSON: a status, one line, and the problem of each field."""

    def __init__(self, code: int, message: str, fields: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields or {}
        self.extra_headers = headers or {}


@bp.errorhandler(HTTPException)
def _json_error(exc: HTTPException):
    fields = getattr(exc, "fields", {})
    body = {"error": getattr(exc, "message", None) or exc.description or exc.name, "fields": fields}
    response = jsonify(body)
    response.status_code = exc.code or 500
    response.headers.update(getattr(exc, "extra_headers", {}))
    return response


def _one_line(messages: dict) -> str:
    """``{"value": ["must be …"]}`` as ``value: must be …``, the first problem of each field."""
    parts = []
    for name, problems in sorted(messages.items()):
        problem = problems[0] if isinstance(problems, list) and problems else problems
        parts.append(f"{name}: {problem if isinstance(problem, str) else 'invalid'}")
    return "; ".join(parts)


def require_scope(scope: str):
    """Let the view run only for a live API key with ``scope`` (``Authorization: Bearer KEY``, RFC 6750)."""

    def decorate(view):
        @wraps(view)
        def guarded(*args, **kwargs):
            header = request.headers.get("Authorization", "")
            scheme, _, key = header.partition(" ")
            challenge = f'Bearer realm="patron", scope="{scope}"'
            if len(header) > MAX_AUTHORIZATION or scheme.lower() != "bearer" or not key.strip():
                raise ApiError(
                    401,
                    "Authorization: send `Authorization: Bearer <API key>`",
                    headers={"WWW-Authenticate": challenge},
                )
            session = get_session()
            verdict, row = authenticate(session, key.strip(), scope)
            used = (row.id, row.last_used_at) if row is not None else None
            # End the read before any write: on SQLite a transaction that read before another request wrote
            # cannot write any more, so the use and the view's own work each start a fresh transaction.
            session.rollback()
            if verdict == "ok":
                mark_used(session, *used)
                session.commit()  # kept even when the request then fails
            if verdict == "unauthorized":
                raise ApiError(
                    401,
                    "Authorization: unknown or revoked API key",
                    headers={"WWW-Authenticate": challenge + ', error="invalid_token"'},
                )
            if verdict == "forbidden":
                raise ApiError(403, f"Authorization: this API key lacks the scope {scope!r}")
            return view(*args, **kwargs)

        return guarded

    return decorate


def _body(limit: int, mimetypes: tuple[str, ...]) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond), of one of ``mimetypes`` (415 otherwise)."""
    if request.mimetype not in mimetypes:
        raise ApiError(415, f"Content-Type: must be {' or '.join(mimetypes)}, got {request.mimetype or 'none'!r}")
    return read_body(limit)


def _json_object(raw: bytes) -> dict:
    """``raw`` as a JSON object; numbers with a fraction become Decimals, NaN and Infinity are refused."""

    def refuse(constant):
        raise ValueError(f"{constant} is not a number")

    try:
        data = json.loads(raw, parse_float=Decimal, parse_constant=refuse)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ApiError(400, f"body: not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body: must be a JSON object")
    return data


def _record(data: dict, source: str):
    """Record the conversion ``data`` (ConversionIn's output) and commit: (response, created)."""
    session = get_session()
    response, created = record_conversion(  # a concurrent duplicate of the order ends as not created
        session,
        window_days=float(current_app.config["PATRON_ATTRIBUTION_WINDOW_DAYS"]),
        half_life_days=current_app.config["PATRON_INTEREST_HALF_LIFE_DAYS"],
        source=source,
        **data,
    )
    session.commit()
    return response, created


@bp.route("/api/", defaults={"rest": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/api/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def elsewhere(rest: str):
    """Any other path or method under /api/: a JSON 404 or 405 (the router's own would be HTML)."""
    if request.path in ("/api/v1/conversions", "/api/v1/bounces"):
        raise ApiError(405, f"method: {request.method} is not allowed here; use POST", headers={"Allow": "POST"})
    raise ApiError(404, f"path: no API endpoint {request.path[:100]!r}")


@bp.post("/api/v1/conversions")
@require_scope("conversions")
def post_conversion():
    """Record a conversion (JSON body, see ConversionIn): 201 when new, 200 when the order id was known."""
    body = _json_object(_body(MAX_JSON_BYTES, ("application/json",)))
    try:
        data = ConversionIn(signer=signer()).load(body)
    except ValidationError as exc:
        raise ApiError(422, _one_line(exc.messages), exc.messages) from None
    try:
        response, created = _record(data, "api")
    except ConversionError as exc:
        get_session().rollback()
        field, _, problem = str(exc).partition(": ")  # "value: …": the field, then what is wrong with it
        raise ApiError(422, str(exc), {field: [problem]}) from None
    return jsonify(created=created, conversion=ConversionOut().dump(response)), 201 if created else 200


@bp.post("/api/v1/bounces")
@require_scope("bounces")
def post_bounce():
    """Classify and apply one raw bounce, complaint or auto-reply (``message/rfc822``); answer its result."""
    raw = _body(MAX_MESSAGE_BYTES, ("message/rfc822",))
    if not raw.strip():
        raise ApiError(400, "body: empty; send one raw message as message/rfc822")
    session = get_session()
    settings = current_app.config["PATRON_SETTINGS"]
    result = process_message(
        session,
        raw,
        signer=signer(),
        source="webhook",
        soft_limit=settings.soft_bounce_limit,
        soft_days=settings.soft_bounce_days,
    )
    session.commit()
    return jsonify(result.as_json())


@bp.get("/c.gif")
def conversion_pixel():
    """The thank-you page's pixel: records a conversion for the click in the ``patron_click`` cookie, if valid.

    Always the same GIF: a bad query, a missing or forged cookie, a HEAD, or a failure records nothing and
    shows nothing to the shopper.
    """
    cookie = request.cookies.get(CLICK_COOKIE)
    if cookie and records():  # a HEAD gets the same GIF and records nothing
        query = {name: request.args.get(name) for name in ("order_id", "value", "currency") if name in request.args}
        try:
            data = PixelConversionIn(signer=signer()).load({**query, "click": cookie})
            _record(data, "pixel")
        except (ValidationError, ConversionError):
            pass  # nothing recorded; the session is rolled back when the request ends
        except Exception:  # the shopper sees a GIF whatever broke; the log says what
            log.exception("conversion pixel: recording failed")
    response = make_response(PIXEL)  # the open pixel's bytes and headers
    response.headers.update({"Content-Type": "image/gif", **NO_CACHE})
    return response
