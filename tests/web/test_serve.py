"""``patron serve``: gunicorn in a process of its own, what it checks first, and what it says."""

from __future__ import annotations

import http.client
import socket
import subprocess

from tests.campaigns.conftest import patron_environment
from tests.web.tracking_fixtures import PATRON, free_port, serving


def serve_once(env, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([PATRON, "serve", *options], env=env, capture_output=True, text=True, timeout=60)


def test_serve_answers_over_http_logs_access_lines_and_stops_on_sigterm(engine, tmp_path):
    env = patron_environment(engine, tmp_path, "outbox:")
    with serving(env, "--workers", "2", "--threads", "2") as (base, process):
        connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
        statuses = []
        for path in ("/r/1/1/nope", "/o/1/nope.gif", "/u/1/nope"):  # one keep-alive connection
            connection.request("GET", path, headers={"User-Agent": "serve-test"})
            answer = connection.getresponse()
            answer.read()
            statuses.append(answer.status)
        connection.close()
    assert statuses == [404, 404, 404]
    assert process.returncode == 0
    access = [line for line in process.stdout.read().splitlines() if '"GET ' in line]
    assert len(access) == 3 and all('" 404 ' in line and "serve-test" in line for line in access)
    assert "Traceback" not in process.stderr.read()


def test_an_unmigrated_database_is_one_line_saying_to_upgrade(tmp_path):
    env = {**patron_environment_for(tmp_path), "PATRON_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    result = serve_once(env, "--port", str(free_port()))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "run `patron db upgrade`" in lines[0]


def test_a_port_in_use_is_one_line(engine, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve_once(patron_environment(engine, tmp_path, "outbox:"), "--port", str(port))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [f"Error: 127.0.0.1:{port} is in use; pick another --port"]


def test_an_unreachable_database_is_one_line(tmp_path):
    env = {**patron_environment_for(tmp_path), "PATRON_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/x"}
    result = serve_once(env, "--port", str(free_port()))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach the database postgresql+psycopg://nobody@")


def test_bad_options_are_refused_by_name(tmp_path):
    result = serve_once(patron_environment_for(tmp_path), "--workers", "0")
    assert result.returncode == 2 and "--workers" in result.stderr and "Traceback" not in result.stderr


def patron_environment_for(tmp_path) -> dict[str, str]:
    """An environment with no database of the test run's: each test names its own."""
    import os

    return {**os.environ, "PATRON_INSTANCE_PATH": str(tmp_path / "instance"), "PATRON_SECRET_KEY": "k" * 40}
