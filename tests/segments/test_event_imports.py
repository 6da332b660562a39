"""Importing events from point of sale, call centre and other channels."""

import io
import json

from sqlalchemy import func, select

from segments.imports import RejectList, import_contacts, import_events
from segments.models import Contact, Event, Identity


def load(session, text: str, **kwargs):
    rejects = RejectList()
    summary = import_events(session, io.BytesIO(text.encode()), rejects=rejects, **kwargs)
    session.commit()
    return summary, rejects.rows


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


POS = (
    "id,type,occurred_at,id:pos,prop:amount,prop:store,prop:category\n"
    "T1,purchase,2026-11-01T10:00:00Z,POS-1,12.50,Centro,pizza\n"
    "T2,purchase,2026-11-02 09:30:00+01:00,POS-1,8,Centro,wine\n"
    "T3,purchase,2026-11-03T10:00:00,POS-404,3.20,Norte,coffee\n"
)


def test_pos_purchases_join_the_contact_by_loyalty_card(session):
    import_contacts(session, io.BytesIO(b"email,id:pos\nana@example.com,POS-1\n"))
    summary, rejects = load(session, POS, channel="pos")
    assert summary.as_dict() == {
        "rows": 3,
        "lines": 4,
        "created": 3,
        "updated": 0,
        "rejected": 0,
        "duplicates": 0,
        "contacts_created": 1,
    }
    ana = session.scalars(select(Contact).where(Contact.email == "ana@example.com")).one()
    purchases = session.scalars(select(Event).where(Event.contact_id == ana.id).order_by(Event.occurred_at)).all()
    assert [(e.channel, e.type, e.properties["amount"], e.properties["category"]) for e in purchases] == [
        ("pos", "purchase", 12.5, "pizza"),
        ("pos", "purchase", 8, "wine"),
    ]
    # Times with an offset are stored in UTC; those without are taken as UTC.
    assert purchases[1].occurred_at.isoformat() == "2026-11-02T08:30:00+00:00"
    # An unknown card makes a new profile that later imports can fill in.
    stranger = session.scalar(select(Identity.contact_id).where(Identity.value == "POS-404"))
    assert session.get(Contact, stranger).email is None


def test_reimporting_adds_no_duplicates_with_or_without_ids(session):
    without_ids = "type,occurred_at,email\n" + (
        "visit,2026-11-01T10:00:00Z,ana@example.com\nvisit,2026-11-02T10:00:00Z,ana@example.com\n"
    )
    load(session, POS, channel="pos")
    load(session, without_ids, channel="web")
    again, _ = load(session, POS, channel="pos")
    again_web, _ = load(session, without_ids, channel="web")
    assert (again.created, again.details["duplicates"]) == (0, 3)
    assert (again_web.created, again_web.details["duplicates"]) == (0, 2)
    assert count(session, Event) == 5
    assert count(session, Contact) == 3  # the holders of POS-1 and POS-404, and ana
    # The same ids from another source are other events.
    other, _ = load(session, POS, channel="pos", source="pos-franchise")
    assert other.created == 3


def test_call_centre_jsonl_joins_by_phone_or_email_and_rejects_bad_lines(session):
    import_contacts(session, io.BytesIO(b"email,phone\nana@example.com,+34600111222\n"))
    lines = [
        {
            "id": "c1",
            "type": "call",
            "occurred_at": "2026-11-20T10:00:00Z",
            "phone": "+34 600 111 222",
            "properties": {"reason": "order", "minutes": 4},
        },
        {"id": "c2", "type": "call", "occurred_at": "2026-11-21T10:00:00Z", "email": "ANA@example.com"},
        {"id": "c3", "type": "call", "occurred_at": "last tuesday", "email": "ana@example.com"},
        {"id": "c4", "type": "call", "occurred_at": "2026-11-21T10:00:00Z"},
        {
            "id": "c5",
            "type": "call",
            "occurred_at": "2026-11-21T10:00:00Z",
            "email": "ana@example.com",
            "properties": {"nested": {"x": 1}},
        },
        {"id": "c6", "kind": "call", "occurred_at": "2026-11-21T10:00:00Z", "email": "ana@example.com"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{broken\n"
    summary, rejects = load(session, text, channel="call_centre", format="jsonl")
    assert (summary.created, summary.rejected) == (2, 5)
    reasons = {line: reason for line, reason, _ in rejects}
    assert "occurred_at" in reasons[3]
    assert "must name the person" in reasons[4]
    assert "properties.nested" in reasons[5]
    assert "unknown keys kind" in reasons[6]
    assert "not JSON" in reasons[7]
    assert rejects[-1][2] == ["{broken"]
    assert count(session, Contact) == 1
