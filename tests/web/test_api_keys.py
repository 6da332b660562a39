"""API keys: ``patron api-keys create|list|revoke`` and bearer authentication of the API, on both databases."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from segments.db import utcnow
from web.api.keys import ApiKey, create_key


def make_key(session, name: str = "shop", scopes=("conversions",)) -> str:
    """A committed API key with ``scopes``; returns the key itself."""
    _row, key = create_key(session, name, list(scopes))
    session.commit()
    return key


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def cli_key(runner, name: str, *scopes: str) -> str:
    result = runner.invoke(args=["api-keys", "create", name, *(arg for scope in scopes for arg in ("--scope", scope))])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, "stdout is the key alone, for scripts"
    return lines[0]


def test_create_prints_the_key_once_and_stores_only_its_digest(runner, session):
    key = cli_key(runner, "shop", "conversions", "bounces")
    row = session.scalar(select(ApiKey).where(ApiKey.name == "shop"))
    assert len(key) == 43  # 32 random bytes, base64url
    assert row.digest == hashlib.sha256(key.encode()).hexdigest()
    assert row.prefix == key[:8]
    assert row.scopes == ["bounces", "conversions"]
    assert row.revoked_at is None and row.last_used_at is None

    listed = runner.invoke(args=["api-keys", "list"])
    assert listed.exit_code == 0
    assert key not in listed.output
    assert listed.output.split("\t")[:3] == ["shop", f"{key[:8]}…", "bounces,conversions"]
    as_json = [json.loads(line) for line in runner.invoke(args=["api-keys", "list", "--json"]).stdout.splitlines()]
    assert [(item["name"], item["prefix"], item["revoked_at"]) for item in as_json] == [("shop", key[:8], None)]
    assert key not in json.dumps(as_json)


def test_two_keys_are_different(runner):
    assert cli_key(runner, "one", "conversions") != cli_key(runner, "two", "conversions")


@pytest.mark.parametrize(
    "args, problem",
    [
        (["api-keys", "create", "shop"], "Missing option '--scope'"),
        (["api-keys", "create", "shop", "--scope", "admin"], "'admin' is not one of"),
        (["api-keys", "create", " ", "--scope", "bounces"], "name: 1 to 100 printable characters"),
        (["api-keys", "create", "a\nb", "--scope", "bounces"], "name: 1 to 100 printable characters"),
        (["api-keys", "revoke", "nobody"], "name: no API key named 'nobody'"),
    ],
)
def test_bad_commands_are_one_line_naming_the_problem(runner, args, problem):
    result = runner.invoke(args=args)
    assert result.exit_code != 0
    assert problem in result.output
    assert "Traceback" not in result.output


def test_a_name_is_taken_once(runner):
    cli_key(runner, "shop", "conversions")
    again = runner.invoke(args=["api-keys", "create", "shop", "--scope", "bounces"])
    assert again.exit_code == 1
    assert again.output.strip() == "Error: name: an API key named 'shop' exists already"


def test_revoke_lists_the_key_as_revoked(runner, session):
    cli_key(runner, "shop", "conversions")
    first = runner.invoke(args=["api-keys", "revoke", "shop"])
    again = runner.invoke(args=["api-keys", "revoke", "shop"])
    assert first.exit_code == again.exit_code == 0
    assert first.output == again.output  # revoked once, at the first time
    (listed,) = [json.loads(line) for line in runner.invoke(args=["api-keys", "list", "--json"]).stdout.splitlines()]
    assert listed["revoked_at"] is not None


# Authentication: every way of not being a live key with the scope is refused, in JSON.


def post_conversion(client, headers):
    return client.post("/api/v1/conversions", json={}, headers=headers)


def assert_refused(response, status: int, error: str):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert error in response.get_json()["error"]
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="patron"')


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic c2hvcDpzZWNyZXQ="},
        {"Authorization": "Bearer " + "A" * 300},
    ],
    ids=["none", "empty", "scheme-only", "blank-key", "basic", "oversized"],
)
def test_no_bearer_key_is_401(app, headers):
    assert_refused(post_conversion(app.test_client(), headers), 401, "Authorization")


def test_unknown_malformed_and_revoked_keys_are_401(app, session, runner):
    client = app.test_client()
    key = make_key(session)
    for wrong in ("A" * 43, key[:-1], key + "A", key[:-1] + ("B" if key[-1] != "B" else "C"), "é" * 43):
        assert_refused(post_conversion(client, bearer(wrong)), 401, "unknown or revoked API key")
    assert post_conversion(client, bearer(key)).status_code == 422  # authenticated: the empty body is the problem
    runner.invoke(args=["api-keys", "revoke", "shop"])
    assert_refused(post_conversion(client, bearer(key)), 401, "unknown or revoked API key")


def test_a_key_without_the_scope_is_403(app, session):
    client = app.test_client()
    bounces_only = make_key(session, "mta", ["bounces"])
    conversions_only = make_key(session, "shop", ["conversions"])
    assert_refused(post_conversion(client, bearer(bounces_only)), 403, "lacks the scope 'conversions'")
    refused = client.post("/api/v1/bounces", data=b"x", content_type="message/rfc822", headers=bearer(conversions_only))
    assert_refused(refused, 403, "lacks the scope 'bounces'")


def test_the_scheme_is_case_insensitive_and_use_is_recorded(app, session):
    key = make_key(session)
    response = post_conversion(app.test_client(), {"Authorization": f"bearer {key}"})
    assert response.status_code == 422
    session.expire_all()
    used = session.scalar(select(ApiKey.last_used_at))
    assert used is not None and utcnow() - used < timedelta(minutes=1)


def test_refusals_are_json_and_api_routes_take_no_cookie_or_csrf(app, session):
    """A browser's cookie is no credential: the same request with a session cookie and no key is refused."""
    assert "csrf" in app.extensions  # CSRFProtect is on for the app's forms; the API is exempt, not unprotected
    client = app.test_client()
    client.set_cookie("session", "anything")
    assert_refused(post_conversion(client, {}), 401, "Authorization")


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/api/v1/conversions", 405),
        ("DELETE", "/api/v1/bounces", 405),
        ("GET", "/api/v1/contacts", 404),
        ("POST", "/api/v2/conversions", 404),
        ("GET", "/api/", 404),
    ],
)
def test_other_paths_and_methods_under_api_are_json_too(app, method, path, status):
    response = app.test_client().open(path, method=method)
    assert (response.status_code, response.mimetype) == (status, "application/json")
    assert response.get_json()["error"].split(":")[0] in ("method", "path")
