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


_STALLED_RENDER = """
import sys
from campaigns.models import Run
from campaigns.pipeline import Assembly, load_profiles
from content.rendering import Inliner, RenderError
from delivery.tracking import LinkSigner
from segments.db import make_engine, make_session_factory, utcnow

url, run_id, contact_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with make_session_factory(make_engine(url))() as session:
    run = session.get(Run, run_id)
    signer = LinkSigner(sys.argv[4], sys.argv[5])
    assembly = Assembly(session, run, signer=signer, inliner=Inliner(), half_life_days=30.0)
    profile = load_profiles(session, [contact_id], assembly, utcnow())[contact_id]
    choices = assembly.choose(profile)
    for choice in choices.values():  # compiled now, so that the stop lands in the render itself
        assembly.block(choice.candidate.version_id)
    assembly.layout()
    print("ready", flush=True)
    try:
        rendered = assembly.render(1, profile, choices)
        print("rendered", "steps done" in rendered.html)
    except RenderError as exc:
        print("failed", exc)
"""


def test_a_render_the_machine_stalled_is_retried_once_and_succeeds(session, engine, tmp_path):
    """The worker is stopped (SIGSTOP) for longer than the budget while it renders: the render is tried again."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from campaigns.runs import start_run
    from tests.campaigns.conftest import BASE_URL, SECRET

    work = "{% for a in range(300) %}{% for b in range(1000) %}{% set c = b * 2 %}{% endfor %}{% endfor %}steps done"
    _import(session, tmp_path, [block("slow", interests={"slow": 1.0}, body=f"<p>{work}</p>")])
    (contact,) = add_contacts(session, [{"email": "slow@example.com", "interests": {"slow": 9}}])
    run = start_run(session, add_campaign(session).id)
    session.commit()
    url = engine.url.render_as_string(hide_password=False)
    child = subprocess.Popen(
        [sys.executable, "-c", _STALLED_RENDER, url, str(run.id), str(contact.id), SECRET, BASE_URL],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "ready"
    os.kill(child.pid, signal.SIGSTOP)
    time.sleep(2.5)  # longer than the whole budget
    os.kill(child.pid, signal.SIGCONT)
    out, _ = child.communicate(timeout=120)
    assert out.strip() == "rendered True", out
