"""A campaign's render budget end to end: hostile blocks fail their recipients alone, one-time work is free.

Real runs over the real SMTP test server, on SQLite and PostgreSQL: the ledger
rows and the messages the server received are what is checked.
"""

from __future__ import annotations

from sqlalchemy import func, select

from content.packs import import_pack
from delivery.models import Delivery, Link
from tests.campaigns.conftest import add_campaign, add_contacts
from tests.campaigns.test_send import by_recipient, send
from tests.packs import block, write_pack

LAYOUT = (
    "<html><body><p class='x0'>Hi {{ contact.first_name }}</p>{{ slots.hero }}"
    "<a href='{{ unsubscribe_url }}'>stop</a></body></html>"
)
HOSTILE = {
    "loops": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "product": "{% for i in range(255) %}{{ 'a'*10**7 }}{% endfor %}",
    "format": "{{ '%999999999d'|format(1) }}",
    "doubling": "{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
    "macro": "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}",
}
REASONS = {
    "loops": "loop steps",
    "product": "would be 10,000,000",
    "format": "would be 1,000,000,012",
    "doubling": "would be 1,048,576",
    "macro": "too deeply",
}


def _import(session, tmp_path, blocks, *, css: str | None = None, name="pack"):
    root = write_pack(tmp_path / name, blocks, slots=("hero",), layout=LAYOUT)
    if css is not None:
        (root / "style.css").write_text(css, encoding="utf-8")
    report = import_pack(session, root)
    session.commit()
    assert not report.problems, report.problems
    return report


def test_hostile_blocks_fail_their_recipients_with_the_reason_and_the_others_are_sent(
    session, engine, tmp_path, smtp_server
):
    blocks = [block(key, interests={key: 1.0}, body=f"<p>{source}</p>") for key, source in HOSTILE.items()]
    _import(session, tmp_path, [*blocks, block("plain", interests={"plain": 1.0})])
    people = [{"email": f"{key}@example.com", "first_name": key, "interests": {key: 9}} for key in HOSTILE]
    add_contacts(session, [*people, {"email": "fine@example.com", "first_name": "F", "interests": {"plain": 9}}])
    campaign = add_campaign(session)
    run, _ = send(engine, tmp_path, campaign.id, smtp_server.url, session)
    rows = {email: (status, reason) for email, status, reason in session.execute(
        select(Delivery.email, Delivery.status, Delivery.reason).where(Delivery.run_id == run.id))}  # fmt: skip
    assert rows.pop("fine@example.com")[0] == "sent"
    for key, reason in REASONS.items():
        status, why = rows[f"{key}@example.com"]
        assert status == "failed" and reason in why, (key, status, why)
    assert session.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "sending")) == 0
    assert sorted(by_recipient(smtp_server)) == ["fine@example.com"]


def test_a_pack_with_a_stylesheet_of_two_thousand_rules_sends_to_everyone(session, engine, tmp_path, smtp_server):
    """Inlining this stylesheet takes seconds (premailer, once per version); no recipient pays for it."""
    css = "\n".join(
        f".c{i} p.x{i}, div.y{i} > span {{ color: #{i % 999:03d}; margin: {i % 7}px; }}" for i in range(2000)
    )
    keys = ("one", "two", "three")
    _import(session, tmp_path, [block(key, interests={key: 1.0}) for key in keys], css=css + "\n.x0 { color: red }")
    add_contacts(session, [{"email": f"{k}{n}@example.com", "interests": {k: 9}} for k in keys for n in range(2)])
    campaign = add_campaign(session)
    run, _ = send(engine, tmp_path, campaign.id, smtp_server.url, session)
    statuses = dict(session.execute(select(Delivery.email, Delivery.status).where(Delivery.run_id == run.id)).all())
    assert set(statuses.values()) == {"sent"}, statuses
    received = by_recipient(smtp_server)
    assert sorted(received) == sorted(statuses)
    html = received["one0@example.com"][0].get_body(("html",)).get_content()
    assert 'style="color:red"' in html  # the stylesheet was inlined, not skipped


def test_link_cannot_reach_a_link_of_another_pack(session, engine, tmp_path, smtp_server):
    """Pack A's block links to its shop; pack B's block asks for A's link id: B's recipients fail, A's are sent."""
    _import(session, tmp_path, [block("a", interests={"a": 1.0})], name="a")
    add_contacts(session, [{"email": "a@example.com", "interests": {"a": 9}}])
    first = add_campaign(session)
    send(engine, tmp_path, first.id, smtp_server.url, session)
    (link_id,) = session.scalars(select(Link.id).where(Link.url == "https://shop.example.com/a")).all()

    other = block("b", interests={"b": 1.0}, body=f"<p><a href='{{{{ link({link_id}) }}}}'>win</a></p>")
    layouts = [{"key": "other", "html": "layouts/mail.html", "css": ["style.css"], "slots": ["hero"]}]
    root = write_pack(tmp_path / "b", [other], layout=LAYOUT, key="other-pack", name="Other", layouts=layouts)
    assert not import_pack(session, root).problems
    session.commit()
    add_contacts(session, [{"email": "b@example.com", "interests": {"b": 9}}])
    second = add_campaign(session, name="Other", layout="other")
    run, _ = send(engine, tmp_path, second.id, smtp_server.url, session)
    status, reason = session.execute(
        select(Delivery.status, Delivery.reason).where(Delivery.run_id == run.id, Delivery.email == "b@example.com")
    ).one()
    assert status == "failed" and f"link({link_id}) is not a link of this template" in reason
    assert "b@example.com" not in by_recipient(smtp_server)
