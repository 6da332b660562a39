"""Settings: embedded defaults, and a clear stop on a bad value."""

import stat

import pytest
from click.testing import CliRunner
from flask.cli import FlaskGroup

from config import SettingsError, load_settings
from web.cli import _create_app


def test_defaults_are_embedded_and_the_secret_key_is_kept(tmp_path):
    settings = load_settings({}, instance_path=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'patron.db'}"
    assert settings.base_url == "http://127.0.0.1:5000"
    assert settings.attribution_window_days == 7.0
    assert settings.proxy_hops == 0
    assert len(settings.secret_key) >= 32
    key_file = tmp_path / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_settings({}, instance_path=tmp_path).secret_key == settings.secret_key


def test_postgresql_urls_use_psycopg_3(tmp_path):
    settings = load_settings({"PATRON_DATABASE_URL": "postgresql://u:p@db:5432/patron"}, instance_path=tmp_path)
    assert settings.database_url == "postgresql+psycopg://u:p@db:5432/patron"


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("PATRON_DATABASE_URL", "mysql://x/y", "sqlite or postgresql"),
        ("PATRON_DATABASE_URL", "not a url", "not a database URL"),
        ("PATRON_SECRET_KEY", "short", "at least 32"),
        ("PATRON_BASE_URL", "ftp://example.com", r"http\(s\) URL"),
        ("PATRON_BASE_URL", "https://example.com/?a=1", "query"),
        ("PATRON_INTEREST_HALF_LIFE_DAYS", "soon", "must be a number"),
        ("PATRON_INTEREST_HALF_LIFE_DAYS", "-3", "positive"),
        ("PATRON_ATTRIBUTION_WINDOW_DAYS", "0", "positive"),
        ("PATRON_PROXY_HOPS", "-1", "whole number"),
        ("PATRON_PROXY_HOPS", "11", "whole number"),
        ("PATRON_PROXY_HOPS", "one", "whole number"),
        ("PATRON_BOUNCE_DOMAIN", "not a domain", "domain name"),
        ("PATRON_BOUNCE_DOMAIN", "bounces.example.com\r\nBcc: x", "domain name"),
        ("PATRON_SOFT_BOUNCE_LIMIT", "2.5", "whole number"),
        ("PATRON_SOFT_BOUNCE_LIMIT", "0", "positive"),
        ("PATRON_SOFT_BOUNCE_DAYS", "soon", "must be a number"),
        ("PATRON_BASE_URL", "http://x.example\r\nBcc: victim@example.com", "line break"),
        ("PATRON_BASE_URL", "http://x.example\t/", "control character"),
        ("PATRON_BASE_URL", "http://x .example", "spaces"),
        ("PATRON_BASE_URL", "http://shop!.example", "host name or IP address"),
        ("PATRON_BASE_URL", "https://x.example:0", "port must be a number from 1 to 65535, got '0'"),
        ("PATRON_DELIVERY_URL", "smtp://u:hunter2@host:99999", "port must be a number from 1 to 65535, got '99999'"),
        ("PATRON_DELIVERY_URL", "smtp://u:hunter2@host:25x", "port must be a number"),
        ("PATRON_DELIVERY_URL", "smtp://u:hunter2@:25", "host name"),
        ("PATRON_DELIVERY_URL", "smtp://u:hunter 2@mail.example:25", "spaces"),
        ("PATRON_DELIVERY_URL", "outbox:///var/mail\nBcc", "line break"),
        ("PATRON_DATABASE_URL", "postgresql://u:hunter2@db:70000/patron", "port must be a number"),
        ("PATRON_DATABASE_URL", "sqlite:////tmp/x\r.db", "control character"),
    ],
)
def test_a_bad_value_names_its_variable(tmp_path, variable, value, message):
    with pytest.raises(SettingsError, match=message) as raised:
        load_settings({variable: value}, instance_path=tmp_path)
    assert raised.value.variable == variable
    assert str(raised.value).startswith(variable)
    assert "hunter" not in str(raised.value)  # a password is never shown


@pytest.mark.parametrize(
    "variable, value",
    [
        ("PATRON_BASE_URL", "https://bücher.example:8443/patron"),
        ("PATRON_BASE_URL", "http://[::1]:5000"),
        ("PATRON_DELIVERY_URL", "smtp://user:p%20w@mail.example:587?security=starttls"),
        ("PATRON_DELIVERY_URL", "outbox:///home/me/My Outbox"),  # a local path may hold spaces
        ("PATRON_DATABASE_URL", "postgresql:///patron?host=/var/run/postgresql"),
        ("PATRON_DATABASE_URL", "sqlite:////home/me/My Patron/patron.db"),
    ],
)
def test_good_urls_pass(tmp_path, variable, value):
    load_settings({variable: value}, instance_path=tmp_path)


def test_the_cli_stops_with_one_line_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATRON_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("PATRON_BASE_URL", "ftp://example.com")
    result = CliRunner().invoke(FlaskGroup(create_app=_create_app), ["db", "upgrade"])
    assert result.exit_code == 1
    assert "invalid setting PATRON_BASE_URL" in result.output
    assert "Traceback" not in result.output


def test_old_secret_keys_are_read_for_rotation_and_never_shown_when_refused(tmp_path):
    old = "o" * 40
    settings = load_settings({"PATRON_OLD_SECRET_KEYS": f" {old} , {'p' * 32}"}, instance_path=tmp_path)
    assert settings.old_secret_keys == (old, "p" * 32)
    assert load_settings({}, instance_path=tmp_path).old_secret_keys == ()
    with pytest.raises(SettingsError) as refused:
        load_settings({"PATRON_OLD_SECRET_KEYS": f"{old},short-key"}, instance_path=tmp_path)
    assert "PATRON_OLD_SECRET_KEYS: key 2 of 2 is 9 characters" in str(refused.value)
    assert "short-key" not in str(refused.value)


def test_proxy_hops_and_attribution_window_are_read(tmp_path):
    settings = load_settings(
        {"PATRON_PROXY_HOPS": "2", "PATRON_ATTRIBUTION_WINDOW_DAYS": "1.5"}, instance_path=tmp_path
    )
    assert (settings.proxy_hops, settings.attribution_window_days) == (2, 1.5)


def test_bounce_settings_default_to_the_sender_domain_and_three_soft_bounces_in_30_days(tmp_path):
    settings = load_settings({}, instance_path=tmp_path)
    assert (settings.bounce_domain, settings.soft_bounce_limit, settings.soft_bounce_days) == (None, 3, 30.0)
    environ = {"PATRON_BOUNCE_DOMAIN": "Bounces.Example.COM", "PATRON_SOFT_BOUNCE_LIMIT": "5"}
    settings = load_settings({**environ, "PATRON_SOFT_BOUNCE_DAYS": "7"}, instance_path=tmp_path)
    assert settings.bounce_domain == "bounces.example.com"
    assert (settings.soft_bounce_limit, settings.soft_bounce_days) == (5, 7.0)
