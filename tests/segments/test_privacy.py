"""Erasure in the audience: only a digest is kept, and no import brings the person back."""

from __future__ import annotations

import hashlib
import io

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from segments.db import utcnow
from segments.imports import RejectList, import_contacts, import_events
from segments.models import Consent, Contact, Erasure, Event, Identity, Interest, Suppression
from segments.privacy import ERASED_REASON, email_digest, erase_audience, erased_emails, export_audience
from segments.suppressions import suppress


def _import_contacts(session, text: str):
    rejects = RejectList()
    summary = import_contacts(session, io.BytesIO(text.encode()), rejects=rejects)
    session.commit()
    return summary, rejects.rows


def _import_events(session, text: str):
    rejects = RejectList()
    summary = import_events(session, io.BytesIO(text.encode()), channel="pos", rejects=rejects)
    session.commit()
    return summary, rejects.rows


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


ANA = (
    "email,first_name,locale,id:pos,interest:pizza,consent:marketing\n"
    "Ana@Example.com,Ana,es,POS-1,3,yes\n"
    "bob@example.com,Bob,en,POS-2,1,yes\n"
)


def test_the_digest_is_of_the_normalized_address():
    assert email_digest(" Jonas@BÜCHER.example") == email_digest("jonas@xn--bcher-kva.example")
    assert email_digest("ana@example.com") == hashlib.sha256(b"ana@example.com").hexdigest()
    assert email_digest("not an address") == hashlib.sha256(b"not an address").hexdigest()


@given(st.emails())
def test_any_spelling_of_an_address_has_one_digest(address):
    local, _, domain = address.rpartition("@")
    assert email_digest(address) == email_digest(f"{local.upper()}@{domain.upper()}")


def test_erasing_keeps_only_the_digest_and_a_tombstone(session):
    _import_contacts(session, ANA)
    _import_events(session, "id,type,occurred_at,id:pos\nT1,purchase,2026-11-01T10:00:00Z,POS-1\n")
    suppress(session, "ana@example.com", "manual", source="test")
    session.commit()
    ana_id = session.scalar(select(Contact.id).where(Contact.email == "ana@example.com"))

    done = erase_audience(session, "ANA@example.com")
    session.commit()
    assert (done.contact_id, done.events, done.suppressions) == (ana_id, 1, 1)
    assert session.scalars(select(Erasure.email_digest)).all() == [email_digest("ana@example.com")]
    tombstone = session.get(Contact, ana_id)
    assert (tombstone.email, tombstone.first_name, tombstone.locale, tombstone.attributes, tombstone.status) == (
        None,
        None,
        None,
        {},
        "deleted",
    )
    assert (tombstone.frequency_cap, tombstone.locale_chosen_at) == (None, None)  # not even when she chose
    for model in (Event, Interest, Consent, Identity):
        assert session.scalar(select(func.count()).select_from(model).where(model.contact_id == ana_id)) == 0
    assert _count(session, Suppression) == 0
    # Bob is untouched.
    assert session.scalar(select(func.count()).select_from(Identity)) == 1
    # Once more changes nothing and fails nothing.
    again = erase_audience(session, "ana@example.com")
    assert (again.contact_id, again.events, again.suppressions) == (None, 0, 0)
    assert _count(session, Erasure) == 1
    exported = export_audience(session, "ana@example.com", half_life_days=30)
    assert exported["erased"] is True and exported["contact"] is None and exported["suppressions"] == []


def test_a_reimport_of_an_erased_person_is_rejected_with_the_reason(session):
    _import_contacts(session, ANA)
    erase_audience(session, "ana@example.com")
    session.commit()
    summary, rejects = _import_contacts(session, ANA.replace("Ana@Example.com", "ANA@example.COM"))
    assert (summary.created, summary.details["unchanged"], summary.rejected) == (0, 1, 1)
    assert [(line, reason) for line, reason, _ in rejects] == [(2, ERASED_REASON)]
    assert session.scalars(select(Contact.email).where(Contact.email.is_not(None))).all() == ["bob@example.com"]


def test_events_naming_an_erased_person_are_rejected(session):
    _import_contacts(session, ANA)
    erase_audience(session, "ana@example.com")
    session.commit()
    summary, rejects = _import_events(
        session,
        "id,type,occurred_at,email,id:pos\n"
        "E1,purchase,2026-11-01T10:00:00Z,ana@example.com,\n"
        "E2,purchase,2026-11-01T10:00:00Z,ana@example.com,POS-1\n"
        "E3,purchase,2026-11-01T10:00:00Z,bob@example.com,\n",
    )
    assert (summary.created, summary.rejected) == (1, 2)
    assert {reason for _, reason, _ in rejects} == {ERASED_REASON}
    assert _count(session, Event) == 1
    # The erased contact's loyalty card was deleted with it: a purchase on that card alone starts a new,
    # address-less contact (never mailed), not the erased one.
    summary, _ = _import_events(session, "id,type,occurred_at,id:pos\nE4,purchase,2026-11-02T10:00:00Z,POS-1\n")
    assert summary.details["contacts_created"] == 1
    card_owner = session.scalar(select(Contact).join(Identity).where(Identity.value == "POS-1"))
    assert card_owner.email is None and card_owner.status == "active"


def test_erased_emails_answers_for_many_addresses_in_one_query(session):
    session.add(Erasure(email_digest=email_digest("gone@example.com"), created_at=utcnow()))
    session.flush()
    assert erased_emails(session, ["gone@example.com", "here@example.com", "", None]) == {"gone@example.com"}
    assert erased_emails(session, []) == set()
