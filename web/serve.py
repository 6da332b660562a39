"""``patron serve``: the app under gunicorn, the production WSGI server.

The command checks what would otherwise fail later and less clearly (the schema is migrated, the address is
free) and then hands over to gunicorn's arbiter: ``--workers`` processes, each with ``--threads`` threads
(gunicorn's ``gthread`` worker when more than one, which also keeps connections alive). Each worker builds
its own app, so no database connection crosses a fork. Access lines go to standard output, gunicorn's own
log to standard error. Behind a reverse proxy see docs/deploying.md.
"""

from __future__ import annotations

import errno
import socket

import click
from flask import current_app
from flask.cli import with_appcontext
from gunicorn.app.base import BaseApplication
from sqlalchemy.exc import SQLAlchemyError

from web.db import check_schema, unreachable

# Gunicorn's combined-log format plus the time taken, in microseconds.
ACCESS_LOG_FORMAT = '%(h)s - - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)sus'


class PatronServer(BaseApplication):
    """Gunicorn run from Python: the options given, and an app built by ``web.create_app`` in each worker."""

    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from web import create_app  # here: web imports this module
        from web.tracking import clicks

        app = create_app()
        clicks.start(app)  # in the worker: records what an earlier worker left in the click journal
        return app


def bind_address(host: str, port: int) -> str:
    """Gunicorn's bind string for ``host``:``port`` (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_address_free(host: str, port: int) -> None:
    """Raise a one-line ClickException when ``host``:``port`` cannot be listened on (in use, no such address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise click.ClickException(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(f"{bind_address(host, port)} is in use; pick another --port") from None
            raise click.ClickException(f"cannot listen on {bind_address(host, port)}: {exc.strerror}") from None


def gunicorn_options(host: str, port: int, workers: int, threads: int) -> dict:
    """The gunicorn settings ``patron serve`` runs with."""
    return {
        "bind": [bind_address(host, port)],
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        "accesslog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "patron",
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
    }


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True, help="The port.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Worker processes.")
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True, help="Threads per worker.")
@with_appcontext
def serve_command(host: str, port: int, workers: int, threads: int):
    """Serve Patron (tracking links, unsubscribe and preference pages) under gunicorn."""
    engine = current_app.extensions["patron_engine"]
    try:
        check_schema(engine)
    except SQLAlchemyError as exc:  # unreached, or answering but not as a Patron database should
        raise unreachable(engine.url, exc) from None
    finally:
        engine.dispose()  # the workers open their own connections
    check_address_free(host, port)
    click.echo(f"Patron at http://{bind_address(host, port)} ({workers} workers x {threads} threads)", err=True)
    PatronServer(gunicorn_options(host, port, workers, threads)).run()
