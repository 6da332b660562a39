"""``patron api-keys create|list|revoke``: the keys shops and mail systems call the API with."""

from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from web.api.keys import SCOPES, ApiKeyError, create_key, list_keys, revoke_key
from web.db import get_session


@click.group("api-keys")
def api_keys_group():
    """Create, list and revoke API keys (see docs/api.md)."""


@api_keys_group.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(SCOPES),
    help="What the key may do; repeat for several.",
)
@with_appcontext
def create_command(name, scopes):
    """Create a key NAME and print it: the only time it is shown."""
    session = get_session()
    try:
        row, key = create_key(session, name, scopes)
    except ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    session.commit()
    click.echo(f"API key {row.name!r} ({', '.join(row.scopes)}); store it now, it is not shown again:", err=True)
    click.echo(key)


@api_keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
@with_appcontext
def list_command(as_json):
    """List the keys: name, first characters, scopes, when created, last used and revoked. Never the key."""
    rows = list_keys(get_session())
    if as_json:
        for row in rows:
            click.echo(
                json.dumps(
                    {
                        "name": row.name,
                        "prefix": row.prefix,
                        "scopes": row.scopes,
                        "created_at": row.created_at.isoformat(),
                        "last_used_at": row.last_used_at and row.last_used_at.isoformat(),
                        "revoked_at": row.revoked_at and row.revoked_at.isoformat(),
                    }
                )
            )
        return
    if not rows:
        click.echo("no API keys; create one with `patron api-keys create NAME --scope conversions`")
        return
    for row in rows:
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
        click.echo(
            f"{row.name}\t{row.prefix}…\t{','.join(row.scopes)}\tcreated {row.created_at:%Y-%m-%d %H:%M}"
            f"\tlast used {used}\t{state}"
        )


@api_keys_group.command("revoke")
@click.argument("name")
@with_appcontext
def revoke_command(name):
    """Revoke the key NAME: it authorizes nothing from now on."""
    session = get_session()
    try:
        row = revoke_key(session, name)
    except ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    session.commit()
    click.echo(f"API key {row.name!r} revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
