"""The routes of the tracking blueprint: ``/o/`` (open pixel), ``/r/`` (click), ``/u/`` (unsubscribe and
preferences). Ids are ``int`` converters, so anything else is a 404 from the router; a token is verified
before any query, so a forged or mangled URL records nothing and costs no database work.
"""

from __future__ import annotations

import base64
import logging
import secrets

from flask import abort, current_app, g, make_response, redirect, render_template, request, url_for
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.http import dump_cookie
from werkzeug.urls import iri_to_uri

from content.models import Block, BlockVersion
from content.selection import locale_chain
from delivery.journal import JournalError
from delivery.models import Delivery
from delivery.responses import Client, answerable, click, record_open, unsubscribe
from delivery.tracking import LinkSigner
from segments.db import utcnow
from segments.models import Contact
from segments.preferences import PURPOSES, Preferences, current_preferences, save_preferences
from web.bodies import read_body
from web.db import click_target, get_session
from web.tracking import bp, clicks
from web.tracking.forms import preferences_form
from web.tracking.languages import offered_languages
from web.tracking.strings import FALLBACK, page_language, strings, visitor_language

log = logging.getLogger(__name__)

# A transparent 1x1 GIF89a: two-colour palette, transparency extension, 43 bytes.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache", "Expires": "0"}
MAX_BODY_BYTES = 16 * 1024  # a preference form is well under 2 KiB
MAX_USER_AGENT = 255  # the responses table's column
ONE_CLICK = "One-Click"
TEXT_VERSION = "preferences-v1"  # bump when the consent wording in strings.py changes
MAX_TAGS = 60


def signer() -> LinkSigner:
    """The app's LinkSigner (built once per app from SECRET_KEY, PATRON_BASE_URL and SECRET_KEY_FALLBACKS)."""
    return app_signer(current_app)


def app_signer(app) -> LinkSigner:
    """:func:`signer` for an app named outright (the click fast path runs outside an app context)."""
    cached = app.extensions.get("patron_signer")
    if cached is None:
        config = app.config
        cached = LinkSigner(config["SECRET_KEY"], config["PATRON_BASE_URL"], config.get("SECRET_KEY_FALLBACKS", ()))
        app.extensions["patron_signer"] = cached
    return cached


def client() -> Client:
    """Who is asking: the user agent (bounded) and the client IP (the proxy's view when PATRON_PROXY_HOPS is set)."""
    agent = request.headers.get("User-Agent")
    return Client(user_agent=agent[:MAX_USER_AGENT] if agent else None, ip=request.remote_addr)


def half_life() -> float:
    return current_app.config["PATRON_INTEREST_HALF_LIFE_DAYS"]


@bp.before_request
def bound_the_body():
    """Read a POST's body (at most MAX_BODY_BYTES, 413 beyond, chunked or not) before any view parses it."""
    request.max_form_memory_size = MAX_BODY_BYTES
    request.max_form_parts = 100
    if request.method == "POST":
        read_body(MAX_BODY_BYTES)


@bp.after_request
def page_headers(response):
    for name, value in page_header_pairs(g.get("style_nonce")):
        response.headers[name] = value
    return response


def page_header_pairs(nonce: str | None = None) -> list[tuple[str, str]]:
    """The headers every tracking answer carries: no indexing, no referrer, no sniffing, a strict CSP."""
    style = f"style-src 'nonce-{nonce}'; " if nonce else ""
    return [
        ("X-Robots-Tag", "noindex, nofollow"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Content-Type-Options", "nosniff"),
        (
            "Content-Security-Policy",
            f"default-src 'none'; {style}img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ]


def records() -> bool:
    """Whether this request may record anything: not a HEAD, which a link checker or ``curl -I`` sends, never a
    reader. Every endpoint that records answers a HEAD as it would a GET (status and headers) without recording."""
    return request.method != "HEAD"


@bp.get("/o/<int:delivery_id>/<token>.gif", merge_slashes=False)
def open_pixel(delivery_id: int, token: str):
    """The open pixel: a 43-byte GIF that is never cached; the open is recorded when the token verifies.

    A HEAD gets the same answer and records nothing (see :func:`records`).
    """
    if not signer().verify(token, "o", delivery_id):
        abort(404)
    if records():
        session = get_session()
        try:
            record_open(session, delivery_id, client(), half_life_days=half_life())
            session.commit()
        except SQLAlchemyError:
            # The reader still gets their image; the open is lost and logged.
            session.rollback()
            log.exception("open of delivery %s not recorded", delivery_id)
    response = make_response(PIXEL)
    response.headers.update({"Content-Type": "image/gif", **NO_CACHE})
    return response


@bp.get("/r/<int:delivery_id>/<int:link_id>/<token>", merge_slashes=False)
def click_redirect(delivery_id: int, link_id: int, token: str):
    """A click: a 302 to the URL registered at send time, once the click is journalled (or recorded).

    Any query string is ignored; a HEAD is answered but not recorded. The click is appended to the click
    journal and recorded by its drainer within a moment (web.tracking.clicks); when the journal is off or
    cannot take it, it is recorded here before the answer; when neither can, the answer is a 503 that
    redirects nowhere.
    """
    if not signer().verify(token, "r", delivery_id, link_id):
        abort(404)
    try:
        target = click_target(delivery_id, link_id)
    except SQLAlchemyError:
        log.exception("click on link %s of delivery %s: the database did not answer", link_id, delivery_id)
        abort(503)
    if target is None:
        abort(404)
    recorded = target.tracked and records() and _keep_click(delivery_id, link_id)
    headers, body = click_answer(current_app, target.url, delivery_id if recorded else None)
    return current_app.response_class(body, 302, headers)


def click_answer(app, url: str, delivery_id: int | None) -> tuple[list[tuple[str, str]], bytes]:
    """The 302 of a click, as (headers, body): Location, no caching, the page headers, and the attribution
    cookie ``patron_click`` when ``delivery_id`` is given (the click was recorded: tracking is granted).

    The cookie is ``<delivery>.<signature>``, HttpOnly, SameSite=Lax, Secure on https, for the attribution
    window. Shared by the view and the fast path, so both answer alike.
    """
    location = iri_to_uri(url)
    body = f'<!doctype html>\n<title>Redirecting</title>\n<p><a href="{escape(location)}">{escape(location)}</a>\n'
    body_bytes = body.encode()
    headers = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(body_bytes))),
        ("Location", location),
        ("Cache-Control", "no-store"),
        *page_header_pairs(),
    ]
    if delivery_id is not None:
        config = app.config
        cookie = dump_cookie(
            "patron_click",
            f"{delivery_id}.{app_signer(app).sign('c', delivery_id)}",
            max_age=int(config["PATRON_ATTRIBUTION_WINDOW_DAYS"] * 86400),
            path="/",
            secure=config["PATRON_BASE_URL"].startswith("https:"),
            httponly=True,
            samesite="Lax",
        )
        headers.append(("Set-Cookie", cookie))
    return headers, body_bytes


def _keep_click(delivery_id: int, link_id: int) -> bool:
    """Journal the click, else record it now; whether it was kept. Aborts with 503 when neither can."""
    asked = client()
    try:
        if clicks.journal_click(current_app, delivery_id, link_id, utcnow(), asked.user_agent):
            return True
    except JournalError as exc:
        log.error("click on link %s of delivery %s: journal refused (%s); recording it now", link_id, delivery_id, exc)
    session = get_session()
    try:
        kept = click(session, delivery_id, link_id, asked, half_life_days=half_life())
        session.commit()
    except SQLAlchemyError:
        session.rollback()
        log.exception("click on link %s of delivery %s not recorded", link_id, delivery_id)
        abort(503)
    return kept is not None and kept.recorded


def _one_click_body() -> bool:
    """Whether the body is RFC 8058's ``List-Unsubscribe=One-Click`` (as a form, urlencoded or multipart)."""
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return request.form.getlist("List-Unsubscribe") == [ONE_CLICK]
    return request.get_data(cache=False).strip() == f"List-Unsubscribe={ONE_CLICK}".encode()


@bp.post("/u/<int:delivery_id>/<token>", merge_slashes=False)
def one_click_unsubscribe(delivery_id: int, token: str):
    """RFC 8058 one-click unsubscribe: no cookie, no CSRF token; any other body is a 400."""
    if not signer().verify(token, "u", delivery_id):
        abort(404)
    if not _one_click_body():
        abort(400, description="expected the body List-Unsubscribe=One-Click (RFC 8058)")
    session = get_session()
    if not unsubscribe(session, delivery_id, source="one_click", client=client()):
        session.rollback()
        abort(404)
    session.commit()
    contact = _delivery_contact(session, delivery_id)
    return _page("tracking/unsubscribed.html", page_language(contact.locale if contact else None))


def _delivery_contact(session, delivery_id: int) -> Contact | None:
    """The contact of delivery ``delivery_id``; None when there is none or its person was erased."""
    return session.scalar(
        select(Contact)
        .join(Delivery, Delivery.contact_id == Contact.id)
        .where(Delivery.id == delivery_id, answerable(Delivery.__table__))
    )


def _offered_tags(session) -> list[str]:
    """The interest tags the current versions of live blocks carry, sorted (at most MAX_TAGS)."""
    rows = session.scalars(
        select(BlockVersion.interests)
        .join(Block, Block.current_version_id == BlockVersion.id)
        .where(Block.retired_at.is_(None))
    )
    tags = {tag for interests in rows for tag in (interests or {})}
    return sorted(tags)[:MAX_TAGS]


@bp.route("/u/<int:delivery_id>/<token>", methods=["GET"], merge_slashes=False)
@bp.route(
    "/u/<int:delivery_id>/<token>/preferences", methods=["POST"], endpoint="save_preferences", merge_slashes=False
)
def preferences(delivery_id: int, token: str):
    """The unsubscribe confirmation (one button) and the preference page; a GET changes nothing.

    The URL's token and message are checked before the form: a bad one is a 404 whatever is posted. The form
    then checks its own CSRF token (``forms.PreferencesForm``; the app's CSRFProtect skips this view so that
    it comes second); a missing session or an expired token is a 400 page in the contact's language that
    links back to the form.
    """
    if not signer().verify(token, "u", delivery_id):
        abort(404)
    session = get_session()
    contact = _delivery_contact(session, delivery_id)
    if contact is None:
        abort(404)
    language = page_language(contact.locale)
    words = strings(language)
    languages = offered_languages(session)
    tags = _offered_tags(session)
    now_prefs = current_preferences(session, contact, half_life_days=half_life())
    # The offered language the contact reads now (es-MX reads es): shown ticked, and keeping it changes nothing.
    offered = {key for key, _name in languages}
    shown_locale = next((key for key in locale_chain(contact.locale, FALLBACK) if key in offered), None)
    defaults = {
        "locale": shown_locale,
        "interests": sorted(now_prefs.interests),
        "frequency": now_prefs.frequency,
        **now_prefs.consents,
    }
    form = preferences_form(words, languages, tags, data=defaults)
    suppressed = contact.status != "active"
    if suppressed:
        del form.marketing  # coming back is not a checkbox: the suppression stays
    notice = words["saved"] if request.args.get("saved") == "1" else None
    if request.method == "POST":
        if not form.validate() and form.csrf_token.errors:  # no session cookie, or a token past its lifetime
            again = url_for("tracking.preferences", delivery_id=delivery_id, token=token)
            return _message(language, "expired", status=400, link=again, link_text=words["expired_link"])
        if form.errors:
            return _page(
                "tracking/preferences.html",
                language,
                form=form,
                words=words,
                notice=words["invalid"],
                suppressed=suppressed,
                status=400,
            )
        ip = request.remote_addr
        if form.unsubscribe.data:
            unsubscribe(session, delivery_id, source="preference_page", client=client())
            session.commit()
            return _page("tracking/unsubscribed.html", language)
        chosen = Preferences(
            locale=form.locale.data if "locale" in form and form.locale.data != shown_locale else None,
            interests=frozenset(form.interests.data or ()),
            frequency=form.frequency.data,
            consents={purpose: bool(form[purpose].data) for purpose in PURPOSES if purpose in form},
        )
        save_preferences(
            session,
            contact,
            chosen,
            offered_tags=tags,
            source="preference_page",
            ip=ip,
            text_version=TEXT_VERSION,
            half_life_days=half_life(),
        )
        session.commit()
        return redirect(url_for("tracking.preferences", delivery_id=delivery_id, token=token, saved=1), 303)
    return _page("tracking/preferences.html", language, form=form, words=words, notice=notice, suppressed=suppressed)


def _message(language: str, key: str, status: int, **context):
    """A page of one message, ``<key>_title`` and ``<key>_text`` of the page strings, in ``language``."""
    words = strings(language)
    return _page(
        "tracking/message.html",
        language,
        status=status,
        words=words,
        title=words[f"{key}_title"],
        text=words[f"{key}_text"],
        **context,
    )


@bp.app_errorhandler(404)
def not_found(_exc):
    """Any 404 outside the API: one page, in the visitor's language, that never says whether a token was valid."""
    return _public_error("not_found", 404)


@bp.app_errorhandler(405)
def not_allowed(exc):
    """Any 405 outside the API: the project's page, with the methods the URL allows."""
    response = _public_error("not_allowed", 405)
    if getattr(exc, "valid_methods", None):
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _public_error(key: str, status: int):
    response = _message(visitor_language(request.accept_languages), key, status)
    for name, value in page_header_pairs(g.style_nonce):  # the blueprint's after_request may not run
        response.headers[name] = value
    return response


def _page(template: str, language: str, status: int = 200, **context):
    """A page in ``language`` with a per-response style nonce for the strict CSP."""
    g.style_nonce = secrets.token_urlsafe(16)
    words = context.pop("words", None) or strings(language)
    html = render_template(template, lang=language, words=words, nonce=g.style_nonce, **context)
    response = make_response(html, status)
    response.headers["Cache-Control"] = "no-store"
    return response
