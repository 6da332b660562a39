"""canonical emails: an internationalized domain is stored in Unicode

Revision ID: 0003_emails
Revises: 0002
Create Date: 2026-11-30 21:20:00

Addresses were stored lower-cased and ASCII-only, so an internationalized
domain could only have arrived in its IDNA form (``jonas@xn--bcher-kva.example``).
The canonical form is now the one email-validator gives, domain in Unicode
(``jonas@bücher.example``), local part lower-cased as before: see
docs/imports.md. This rewrites the stored contacts and suppressions that
differ, so that re-imports and suppressions keep matching them.

Nothing is lost or merged: an address email-validator does not accept, or
whose canonical form another row already holds, is left as it was. The
delivery ledger keeps the address each message was sent to, as history.
"""

import sqlalchemy as sa
from alembic import op
from email_validator import EmailNotValidError, validate_email

revision = "0003_emails"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = {"contacts": "id", "suppressions": "email"}


def _canonical(address: str) -> str | None:
    """The address as Patron stores it from revision 0003 on; None if it isn't one."""
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return None
    return f"{checked.local_part.lower()}@{checked.domain}"


def _ascii(address: str) -> str | None:
    """The address as Patron stored it before revision 0003; None if it had no such form."""
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return None
    return checked.ascii_email.lower() if checked.ascii_email else None


def _rewrite(candidates: str, convert) -> None:
    connection = op.get_bind()
    for name, key in TABLES.items():
        table = sa.table(name, sa.column(key), sa.column("email"))
        query = sa.select(table.c[key], table.c.email).where(sa.text(candidates))
        for row_key, address in connection.execute(query).all():
            new = convert(address)
            if new is None or new == address:
                continue
            taken = connection.execute(sa.select(sa.func.count()).select_from(table).where(table.c.email == new))
            if taken.scalar_one() == 0:
                connection.execute(sa.update(table).where(table.c[key] == row_key).values(email=new))


def upgrade() -> None:
    # Only an IDNA label (xn--) changes: every other stored address is already canonical.
    _rewrite("email LIKE '%xn--%'", _canonical)


def downgrade() -> None:
    # Back to IDNA where the address has an ASCII form; others (a Unicode local part) stay as they are.
    _rewrite("email IS NOT NULL", lambda address: None if address.isascii() else _ascii(address))
