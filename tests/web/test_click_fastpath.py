"""The click fast path (web.tracking.fastpath) answers exactly as the click view would, or lets the view answer.

Each click below is made twice, once through the view (the fast path stands aside until the app's schema
check has run, which these tests undo) and once through the fast path, and the two answers are compared
as a browser sees them: status, every header, the cookie and the body.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from delivery.models import Response
from segments.models import Consent, Contact
from tests.web.test_tracking_endpoints import tampered
from tests.web.tracking_fixtures import table_away
from web.tracking import clicks

NO_RETRY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Counted:
    """Counts the calls of the click view: a fast-path answer never reaches it."""

    def __init__(self, app):
        self.view = app.view_functions["tracking.click_redirect"]
        self.calls = 0
        self.__module__, self.__name__ = self.view.__module__, self.view.__name__  # as Flask-WTF reads a view
        app.view_functions["tracking.click_redirect"] = self

    def __call__(self, **kwargs):
        self.calls += 1
        return self.view(**kwargs)


def through_view(client, path: str, **kwargs):
    """The view's answer: the fast path stands aside until the schema check has run, which this undoes
    for one request; the check is then taken as done (the schema is migrated), so the next is the fast path's."""
    extensions = client.application.extensions
    extensions["patron_schema_ready"] = False
    try:
        return client.get(path, **kwargs)
    finally:
        extensions["patron_schema_ready"] = True


def answer(response) -> tuple:
    """What a browser gets: status, headers (Date aside) and body."""
    headers = sorted((name, value) for name, value in response.headers.items() if name != "Date")
    return response.status_code, headers, response.get_data()


def test_the_fast_path_answers_a_click_as_the_view_does_and_both_clicks_are_recorded(client, sent, session):
    mail = sent["bob@example.com"]
    view = Counted(client.application)
    by_view = through_view(client, mail.clicks[0], headers={"User-Agent": "Mozilla/5.0"})
    assert view.calls == 1
    fast = client.get(mail.clicks[0], headers={"User-Agent": "Mozilla/5.0"})
    assert view.calls == 1  # answered before Flask
    assert by_view.status_code == 302 and answer(fast) == answer(by_view)
    cookie = [value for name, value in fast.headers.items() if name == "Set-Cookie"]
    assert len(cookie) == 1 and "HttpOnly" in cookie[0] and "SameSite=Lax" in cookie[0]
    assert clicks.flush(client.application) == 2
    session.commit()
    assert session.scalar(select(func.count()).select_from(Response).where(Response.kind == "click")) == 2


def test_without_tracking_consent_the_view_answers_and_nothing_is_recorded(client, sent, session):
    mail = sent["bob@example.com"]
    contact_id = session.scalar(select(Contact.id).where(Contact.email == mail.email))
    session.merge(Consent(contact_id=contact_id, purpose="tracking", granted=False, source="test"))
    session.commit()
    view = Counted(client.application)
    first, second = through_view(client, mail.clicks[0]), client.get(mail.clicks[0])
    assert view.calls == 2  # the fast path answers tracked clicks only
    assert answer(first) == answer(second) and first.status_code == 302 and "Set-Cookie" not in first.headers
    assert clicks.flush(client.application) == 0


def test_when_the_database_cannot_be_read_the_view_answers_503(client, sent, engine):
    mail = sent["bob@example.com"]
    assert client.get(mail.clicks[1]).status_code == 302  # the schema check has run: the fast path is on
    view = Counted(client.application)
    with table_away(engine, "links"):
        answer_ = client.get(mail.clicks[0])
    assert view.calls == 1 and answer_.status_code == 503 and "Location" not in answer_.headers


@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT"])
def test_other_methods_are_the_views_to_answer(client, sent, method):
    mail = sent["bob@example.com"]
    assert client.get(mail.clicks[1]).status_code == 302
    view = Counted(client.application)
    response = client.open(mail.clicks[0], method=method)
    assert response.status_code == {"HEAD": 302, "POST": 405, "PUT": 405}[method]
    assert view.calls == (1 if method == "HEAD" else 0)
    assert clicks.flush(client.application) == 1  # the GET above; a HEAD (a link checker's) is not a click


def _variant(mail, choice: int, number: str) -> str:
    _, r, delivery, link, token = mail.clicks[0].split("/")
    return [
        mail.clicks[0],
        tampered(mail.clicks[0]),
        f"/r/{number}/{link}/{token}",
        f"/r/{delivery}/{number}/{token}",
        f"/r/0{delivery}/{link}/{token}",
        f"/r/{delivery}/{link}/{token}/",
        f"/r/{delivery}/{link}/{token}x",
        f"/r//{delivery}/{link}/{token}",
        f"/r/{delivery}/{link}/{token[:-1]}%41",
    ][choice]


@NO_RETRY
@given(choice=st.integers(0, 8), number=st.one_of(st.integers(0, 2**70).map(str), st.sampled_from(["-1", "1e3", "٣"])))
def test_any_click_path_gets_the_same_status_and_location_with_or_without_the_fast_path(client, sent, choice, number):
    path = _variant(sent["bob@example.com"], choice, number)
    by_view = through_view(client, path)
    fast = client.get(path)
    assert (fast.status_code, fast.headers.get("Location")) == (by_view.status_code, by_view.headers.get("Location"))
