"""Addresses by the standard: checked by email-validator, stored in one canonical form so that re-imports match.

The fault kind: ``jonas@bücher.example`` was rejected at import although the
sending side encodes internationalized domains, and nothing said that
``jonas@xn--bcher-kva.example`` is the same person. The canonical form
(docs/imports.md): local part lower-cased, domain IDNA-normalized and kept in
Unicode.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest
from alembic import command
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import column, insert, select, table

from segments.compiler import count_contacts
from segments.db import make_session_factory, utcnow
from segments.imports import RejectList, import_contacts, import_events, values
from segments.models import Contact, Event, Suppression
from tests.conftest import empty_tables
from web.db import alembic_config, upgrade


def contacts_import(session, text: str):
    rejects = RejectList()
    summary = import_contacts(session, io.BytesIO(text.encode()), rejects=rejects)
    session.commit()
    return summary, rejects.rows


def stored(session) -> list[str]:
    return sorted(session.scalars(select(Contact.email)))


def test_an_internationalized_domain_imports_and_every_spelling_is_the_same_contact(session):
    summary, rejects = contacts_import(session, "email,first_name\njonas@bücher.example,Jonas\n")
    assert (summary.created, rejects) == (1, [])
    assert stored(session) == ["jonas@bücher.example"]
    again, _ = contacts_import(session, "email,last_name\nJonas@BÜCHER.example,Weber\njonas@xn--bcher-kva.example,\n")
    assert (again.created, again.updated, again.rejected) == (0, 2, 0)
    jonas = session.scalars(select(Contact)).one()
    assert (jonas.email, jonas.first_name, jonas.last_name) == ("jonas@bücher.example", "Jonas", "Weber")


def test_the_idna_spelling_first_is_stored_in_unicode(session):
    contacts_import(session, "email\nJONAS@XN--BCHER-KVA.EXAMPLE\n")
    assert stored(session) == ["jonas@bücher.example"]


def test_an_internationalized_local_part_is_accepted_as_smtputf8_allows(session):
    summary, rejects = contacts_import(session, "email\n用户@例子.广告\nÉlodie@Café.example\n")
    assert (summary.created, rejects) == (2, [])
    assert stored(session) == ["élodie@café.example", "用户@例子.广告"]


@pytest.mark.parametrize(
    "address, why",
    [
        ("ana@example.test", "special-use or reserved name"),
        ("ana@localhost", "should have a period"),
        ("ana..b@example.com", "two periods in a row"),
        ("ana@xn--zz.example", "not valid IDNA"),
        ('"ana"@example.com', "Quoting the part before the @-sign is not allowed"),
        ("x" * 65 + "@example.com", "too long before the @-sign"),
        ("ana@exa mple.com", "invalid characters"),
    ],
)
def test_addresses_outside_the_standard_are_rejected_naming_the_column_and_why(session, address, why):
    cell = '"' + address.replace('"', '""') + '"'
    summary, rejects = contacts_import(session, f"email\n{cell}\nfine@example.com\n")
    assert (summary.created, summary.rejected) == (1, 1)
    [(line, reason, fields)] = rejects
    assert (line, fields) == (2, [address])
    assert reason.startswith(f"email: {address!r} is not a valid email address: ")
    assert why in reason


def test_events_find_the_contact_by_any_spelling_of_the_address(session):
    contacts_import(session, "email\njonas@bücher.example\n")
    lines = [
        {"id": "1", "type": "call", "occurred_at": "2026-11-20T10:00:00Z", "email": "Jonas@XN--BCHER-KVA.example"},
        {
            "id": "2",
            "type": "call",
            "occurred_at": "2026-11-21T10:00:00Z",
            "identities": {"email": "JONAS@Bücher.example"},
        },
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    summary = import_events(session, io.BytesIO(text.encode()), channel="call_centre", format="jsonl")
    session.commit()
    assert (summary.created, summary.rejected, summary.details["contacts_created"]) == (2, 0, 0)
    jonas = session.scalars(select(Contact.id)).one()
    assert session.scalars(select(Event.contact_id)).all() == [jonas, jonas]


def test_suppressing_any_spelling_suppresses_the_contact(runner, tmp_path, session):
    path = tmp_path / "c.csv"
    path.write_text("email\njonas@bücher.example\n", encoding="utf-8")
    assert runner.invoke(args=["contacts", "import", str(path)]).exit_code == 0
    result = runner.invoke(args=["contacts", "suppress", "Jonas@xn--BCHER-kva.example", "--reason", "complained"])
    assert result.exit_code == 0, result.output
    assert session.scalars(select(Suppression.email)).all() == ["jonas@bücher.example"]
    assert session.scalars(select(Contact.status)).one() == "complained"


def test_a_segment_rule_finds_the_contact_by_any_spelling_of_the_address(session):
    contacts_import(session, "email\njonas@bücher.example\nana@example.com\n")
    for rule, expected in [
        ({"field": "email", "op": "eq", "value": "Jonas@XN--BCHER-KVA.example"}, 1),
        ({"field": "email", "op": "in", "value": ["JONAS@BÜCHER.EXAMPLE", "Ana@Example.com"]}, 2),
        ({"field": "email", "op": "ne", "value": "jonas@xn--bcher-kva.example"}, 1),
        ({"field": "email", "op": "startswith", "value": "JONAS@"}, 1),
    ]:
        assert count_contacts(session, rule, now=utcnow(), half_life_days=30) == expected, rule


# Letters with one lower-case and one upper-case form each (no ß, no final
# sigma), so that changing a domain's case spells the same domain.
DOMAIN_LETTERS = "abcdefghijklmnopqrstuvwxyzäöüéñçåøžšłπλωжд日本中文한국"
LOCAL_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789_+-äöüéπжд日本"

labels = st.text(DOMAIN_LETTERS, min_size=1, max_size=10)
domains = st.lists(labels, min_size=1, max_size=3).map(lambda parts: ".".join([*parts, "example"]))
locals_ = st.text(LOCAL_LETTERS, min_size=1, max_size=12)


@st.composite
def spellings(draw, local: str, domain: str) -> str:
    """``local@domain`` spelt another way: each domain label in Unicode or IDNA, in any case."""
    parts = []
    for label in domain.split("."):
        if draw(st.booleans()) and not label.isascii():
            label = label.encode("idna").decode("ascii")
        parts.append(draw(st.sampled_from([label, label.upper(), label.title()])))
    return f"{draw(st.sampled_from([local, local.upper()]))}@{'.'.join(parts)}"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), local=locals_, domain=domains)
def test_any_two_spellings_of_one_address_import_as_one_contact(engine, data, local, domain):
    first, second = data.draw(spellings(local, domain)), data.draw(spellings(local, domain))
    empty_tables(engine)
    with make_session_factory(engine)() as session:
        one, _ = contacts_import(session, f"email\n{first}\n")
        two, _ = contacts_import(session, f"email\n{second}\n")
        both, _ = contacts_import(session, f"email\n{second}\n{first}\n")
        unchanged = (two.details["unchanged"], both.details["unchanged"])  # another spelling is no change
        assert (one.created, one.rejected, two.updated, both.updated, unchanged) == (1, 0, 0, 0, (1, 2))
        assert stored(session) == [f"{local.lower()}@{domain.lower()}"]


def _by_email_validator_alone(address: str) -> str | None:
    try:
        checked = validate_email(address.strip(), check_deliverability=False, strict=True)
    except EmailNotValidError:
        return None
    canonical = f"{checked.local_part.lower()}@{checked.domain}"
    return canonical if len(canonical) <= 254 else None


ADDRESS_PIECES = st.sampled_from(["a", "Z", "0", ".", "_", "+", "-", "@", '"', " ", "ü", "日", "xn--", "x" * 63, "é"])
raw_addresses = st.one_of(
    st.lists(ADDRESS_PIECES, max_size=12).map("".join),
    st.builds("{}@{}.{}".format, st.text("aZ._-ü", min_size=1, max_size=70), labels, st.sampled_from(["com", "COM"])),
)


@settings(max_examples=500, deadline=None)
@given(address=raw_addresses)
def test_the_quick_path_for_plain_local_parts_agrees_with_email_validator(address):
    try:
        ours = values.email(address)
    except values.BadValue:
        ours = None
    assert ours == _by_email_validator_alone(address)


def test_migration_0003_stores_idna_domains_in_unicode_and_loses_nothing(engine):
    """Data stored before 0003 (lower-cased ASCII) is rewritten to the canonical form; nothing is merged or dropped."""
    contacts = table("contacts", *(column(c) for c in ("email", "attributes", "status", "created_at", "updated_at")))
    suppressions = table("suppressions", *(column(c) for c in ("email", "reason", "created_at")))
    moment = datetime(2026, 11, 1, tzinfo=timezone.utc).replace(tzinfo=None)
    before = [
        "jonas@xn--bcher-kva.example",  # becomes jonas@bücher.example
        "ana@example.com",  # already canonical
        "bad@xn--zz.example",  # not an address email-validator accepts: left as it was
        "twice@bücher.example",  # twice@xn--bcher-kva.example would collide with it: both stay
        "twice@xn--bcher-kva.example",
    ]
    command.downgrade(alembic_config(engine), "0002")
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(contacts),
                [
                    {"email": e, "attributes": "{}", "status": "active", "created_at": moment, "updated_at": moment}
                    for e in before
                ],
            )
            connection.execute(
                insert(suppressions),
                [{"email": "jonas@xn--bcher-kva.example", "reason": "bounced", "created_at": moment}],
            )
    finally:
        upgrade(engine)
    with make_session_factory(engine)() as session:
        assert stored(session) == sorted(
            [
                "jonas@bücher.example",
                "ana@example.com",
                "bad@xn--zz.example",
                "twice@bücher.example",
                "twice@xn--bcher-kva.example",
            ]
        )
        assert session.scalars(select(Suppression.email)).all() == ["jonas@bücher.example"]
        summary, _ = contacts_import(session, "email\nJonas@BÜCHER.example\n")
        assert (summary.created, summary.updated) == (0, 1)
