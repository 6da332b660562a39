"""Importing contacts: what a marketer sees after `patron contacts import`."""

import io

import pytest
from sqlalchemy import delete, func, select

from segments.imports import FileProblem, RejectList, import_contacts
from segments.models import Consent, Contact, Identity, Interest
from segments.suppressions import suppress

HEADER = (
    "email,first_name,last_name,locale,timezone,phone,id:pos,attr:city,attr:zip,attr:visits,"
    "interest:pizza,consent:marketing\n"
)


def run(session, text: str | bytes, **kwargs):
    data = text.encode() if isinstance(text, str) else text
    rejects = RejectList()
    summary = import_contacts(session, io.BytesIO(data), rejects=rejects, **kwargs)
    session.commit()
    return summary, rejects.rows


def counts(*, rows: int, lines: int, created: int, updated: int, rejected: int, unchanged: int = 0) -> dict:
    """A contacts import's summary (its --json output), with no choices kept over the file."""
    numbers = {"rows": rows, "lines": lines, "created": created, "updated": updated, "rejected": rejected}
    return {**numbers, "unchanged": unchanged, "kept_own_choices": {}}


def contact(session, email):
    return session.scalars(select(Contact).where(Contact.email == email)).one()


def test_import_normalizes_and_records_everything(session):
    summary, rejects = run(
        session,
        HEADER
        + " Ana@Example.COM ,Ana,García,es_mx,America/Mexico_City,+52 55 1234 5678,POS-1,Monterrey,02139,12,7.5,yes\n",
    )
    assert summary.as_dict() == counts(rows=1, lines=2, created=1, updated=0, rejected=0)
    assert rejects == []
    ana = contact(session, "ana@example.com")
    assert (ana.first_name, ana.last_name, ana.locale, ana.timezone, ana.status) == (
        "Ana",
        "García",
        "es-MX",
        "America/Mexico_City",
        "active",
    )
    # A postcode keeps its leading zero; a plain number becomes a number.
    assert ana.attributes == {"city": "Monterrey", "zip": "02139", "visits": 12}
    assert sorted(session.execute(select(Identity.channel, Identity.value)).all()) == [
        ("phone", "+525512345678"),
        ("pos", "POS-1"),
    ]
    assert session.execute(select(Interest.tag, Interest.score)).all() == [("pizza", 7.5)]
    assert session.execute(select(Consent.purpose, Consent.granted, Consent.source)).all() == [
        ("marketing", True, "import")
    ]


def test_reimport_updates_without_duplicates_and_empty_cells_keep_values(session):
    run(session, HEADER + "ana@example.com,Ana,García,es,Europe/Madrid,,POS-1,Madrid,,3,5,yes\n")
    summary, _ = run(session, "email,first_name,locale,attr:tier,interest:pizza\nANA@example.com,Anita,,gold,9\n")
    assert summary.as_dict() == counts(rows=1, lines=2, created=0, updated=1, rejected=0)
    assert session.scalar(select(func.count()).select_from(Contact)) == 1
    ana = contact(session, "ana@example.com")
    assert (ana.first_name, ana.last_name, ana.locale) == ("Anita", "García", "es")
    assert ana.attributes == {"city": "Madrid", "visits": 3, "tier": "gold"}
    assert session.scalar(select(Interest.score)) == 9


def test_same_person_by_email_then_by_pos_is_one_contact(session):
    rows = HEADER + "ana@example.com,Ana,,,,,POS-7,,,,,\n" + ",,Ruiz,,,,POS-7,,,,4,\n"
    summary, rejects = run(session, rows)
    assert summary.as_dict() == counts(rows=2, lines=3, created=1, updated=1, rejected=0)
    ana = contact(session, "ana@example.com")
    assert (ana.first_name, ana.last_name) == ("Ana", "Ruiz")
    assert session.scalar(select(func.count()).select_from(Contact)) == 1


def test_same_person_across_batches_is_one_contact(session):
    rows = HEADER + "ana@example.com,Ana,,,,,POS-7,,,,,\n" + ",,Ruiz,,,,POS-7,,,,4,\n"
    summary, _ = run(session, rows, batch_size=1)
    assert summary.as_dict() == counts(rows=2, lines=3, created=1, updated=1, rejected=0)
    assert contact(session, "ana@example.com").last_name == "Ruiz"


def test_identities_of_two_different_contacts_are_rejected_not_merged(session):
    run(session, HEADER + "ana@example.com,,,,,,POS-1,,,,,\nbob@example.com,,,,,,POS-2,,,,,\n")
    summary, rejects = run(session, HEADER + "ana@example.com,,,,,,POS-2,,,,,\n")
    assert summary.rejected == 1
    assert "id:pos POS-2" in rejects[0][1] and "different contacts" in rejects[0][1]
    assert (
        session.scalar(select(Identity.contact_id).where(Identity.value == "POS-2"))
        == contact(session, "bob@example.com").id
    )


def test_bad_rows_are_rejected_with_line_and_reason_and_the_rest_imported(session):
    rows = (
        HEADER
        + "good@example.com,Good,,,,,,,,,,\n"
        + "not-an-email,X,,,,,,,,,,\n"
        + "loc@example.com,,,english,,,,,,,,\n"
        + "tz@example.com,,,,Mars/Base,,,,,,,\n"
        + "num@example.com,,,,,,,,,,lots,\n"
        + 'crlf@example.com,"Eve\r\nil",,,,,,,,,,\n'
        + f"long@example.com,{'x' * 101},,,,,,,,,,\n"
        + ",,,,,,,,,,,\n"
        + "phone@example.com,,,,,12345,,,,,,\n"
        + "extra@example.com,,,,,,,,,,,,,\n"
        + "also-good@example.com,Fine,,,,,,,,,,\n"
    )
    summary, rejects = run(session, rows)
    assert summary.as_dict() == counts(rows=11, lines=13, created=2, updated=0, rejected=9)
    reasons = {line: reason for line, reason, _ in rejects}
    assert "not a valid email" in reasons[3]
    assert "locale" in reasons[4] and "BCP 47" in reasons[4]
    assert "timezone" in reasons[5]
    assert "interest:pizza" in reasons[6] and "not a number" in reasons[6]
    assert "line break" in reasons[7] and "first_name" in reasons[7]
    assert "101 characters" in reasons[9]
    assert "must name the person" in reasons[10]
    assert "E.164" in reasons[11]
    assert "fields" in reasons[12]
    assert sorted(session.scalars(select(Contact.email))) == ["also-good@example.com", "good@example.com"]


def test_quoted_newlines_and_bom(session):
    data = "\ufeff" + "email,attr:note,first_name\n" + 'a@example.com,"two\nlines",Ann\n' + "b@example.com,,\u0000Bad\n"
    summary, rejects = run(session, data)
    assert contact(session, "a@example.com").attributes == {"note": "two\nlines"}
    # The bad row is reported at its own line, counting the quoted newline.
    assert [(line, "control character" in reason) for line, reason, _ in rejects] == [(4, True)]


def test_non_utf8_bytes_reject_only_their_row(session):
    data = b"email,first_name\nok@example.com,Jos\xc3\xa9\nlatin1@example.com,Jos\xe9\nfine@example.com,Zoe\n"
    summary, rejects = run(session, data)
    assert summary.as_dict() == counts(rows=3, lines=4, created=2, updated=0, rejected=1)
    line, reason, fields = rejects[0]
    assert line == 3 and "not valid UTF-8 (byte 0xE9)" in reason
    assert contact(session, "ok@example.com").first_name == "José"


def test_suppressed_address_stays_suppressed_after_delete_and_reimport(session):
    run(session, "email,first_name\nana@example.com,Ana\n")
    suppress(session, "ana@example.com", "unsubscribed", source="test")
    session.commit()
    assert contact(session, "ana@example.com").status == "unsubscribed"
    run(session, "email,first_name\nana@example.com,Ana\n")
    assert contact(session, "ana@example.com").status == "unsubscribed"
    session.execute(delete(Contact))
    session.commit()
    summary, _ = run(session, "email,first_name\nANA@example.com,Ana\n")
    assert summary.created == 1
    assert contact(session, "ana@example.com").status == "unsubscribed"


@pytest.mark.parametrize(
    "header, message",
    [
        ("email,emial\n", "column 2 'emial': unknown column"),
        ("email,email\n", "repeats column 1"),
        ("first_name,last_name\n", "no identity column"),
        ("email,id:email\n", "use the email column"),
    ],
)
def test_header_problems_stop_before_any_row(session, header, message):
    with pytest.raises(FileProblem, match=message):
        run(session, header + "a@example.com,x\n")
    assert session.scalar(select(func.count()).select_from(Contact)) == 0


def test_an_empty_file_says_so(session):
    with pytest.raises(FileProblem, match="empty: a header row is required"):
        run(session, b"")


def test_a_file_by_path_in_small_batches_imports_the_same(session, tmp_path):
    path = tmp_path / "customers.csv"
    rows = [HEADER.strip()] + [f"user{i}@example.com,User{i},,es,,,POS-{i},,,,{i % 10},yes" for i in range(25)]
    rows.insert(5, "broken,,,,,,,,,,,")
    path.write_text("\n".join(rows) + "\n")
    rejects = RejectList()
    summary = import_contacts(session, path, rejects=rejects, batch_size=7)
    session.commit()
    assert summary.as_dict() == counts(rows=26, lines=27, created=25, updated=0, rejected=1)
    assert [line for line, _, _ in rejects.rows] == [6]
    assert rejects.header[0] == "email"
    assert session.scalar(select(func.count()).select_from(Identity)) == 25


def test_interest_tags_are_lower_cased_so_blocks_and_segments_find_them(session, tmp_path):
    from segments.compiler import count_contacts
    from segments.db import utcnow

    path = tmp_path / "c.csv"
    path.write_text("email,interest:Pizza\nana@example.com,5\n", encoding="utf-8")
    import_contacts(session, path)
    assert session.scalars(select(Interest.tag)).all() == ["pizza"]
    rule = {"interest": "PIZZA", "op": "gte", "value": 4}
    assert count_contacts(session, rule, now=utcnow(), half_life_days=30) == 1
