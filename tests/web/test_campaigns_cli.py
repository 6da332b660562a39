"""The campaigns and content commands as a marketer types them."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update

from campaigns.models import Campaign, Run
from delivery.models import STATUSES, Delivery
from segments.models import Contact
from tests.campaigns.conftest import CAMPAIGN, add_contacts
from tests.packs import block, write_pack


def campaign_file(tmp_path, **overrides):
    definition = {**CAMPAIGN, "subject": "Hi {{ contact.first_name }}", **overrides}
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(definition), encoding="utf-8")
    return path


def sendable_campaign(runner, session, tmp_path, people: list[dict] | None = None, **overrides) -> int:
    """A one-block pack imported, contacts with consent (three by default) and a campaign to all of them: its id."""
    runner.invoke(args=["content", "import", str(write_pack(tmp_path / "pack", [block("pizza")]))])
    add_contacts(session, people or [{"email": f"p{i}@example.com", "first_name": f"P{i}"} for i in range(3)])
    created = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path, **overrides)), "--json"])
    assert created.exit_code == 0, created.output
    return json.loads(created.output)["id"]


@pytest.mark.parametrize("spelling", ["jonas@xn--bcher-kva.example", "JONAS@BÜCHER.example", "jonas@bücher.example"])
def test_preview_finds_a_contact_by_any_spelling_of_the_address(runner, session, tmp_path, spelling):
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("email,first_name,consent:marketing\njonas@bücher.example,Jonas,yes\n", encoding="utf-8")
    imported = runner.invoke(args=["contacts", "import", str(contacts)])
    assert imported.exit_code == 0, imported.output
    campaign_id = sendable_campaign(runner, session, tmp_path)

    preview = runner.invoke(args=["campaigns", "preview", str(campaign_id), "--contact", spelling])
    assert preview.exit_code == 0, preview.output
    assert "to: jonas@bücher.example" in preview.output and "subject: Hi Jonas" in preview.output

    refused = runner.invoke(args=["campaigns", "preview", str(campaign_id), "--contact", "jonas@@example"])
    assert refused.exit_code == 1 and "--contact" in refused.output and "Traceback" not in refused.output


def test_preview_html_to_a_path_that_cannot_be_written_is_one_line(runner, session, tmp_path):
    campaign_id = sendable_campaign(runner, session, tmp_path)
    target = tmp_path / "no-such-folder" / "p0.html"
    result = runner.invoke(
        args=["campaigns", "preview", str(campaign_id), "--contact", "p0@example.com", "--html", str(target)]
    )
    assert result.exit_code == 1
    assert f"--html: cannot write {target}" in result.output and "Traceback" not in result.output


def test_content_import_counts_skipped_blocks_in_its_summary(runner, tmp_path):
    pack = write_pack(tmp_path / "pack", [block("pizza"), block("broken", body="{{ contact.firstname }}")])
    result = runner.invoke(args=["content", "import", str(pack)])
    assert result.exit_code == 0, result.output
    summary, *problems = result.output.splitlines()
    assert summary.endswith("blocks 1 created; 1 skipped (why below)"), summary
    assert len(problems) == 1 and "broken.html" in problems[0] and "contact.first_name" in problems[0]


def test_import_create_send_status_preview(runner, session, tmp_path):
    pack = write_pack(
        tmp_path / "pack",
        [
            block("pizza", interests={"pizza": 1}),
            block("card", slots=("offer",), default=True),
            block("broken", body="{% if %}"),
        ],
    )
    imported = runner.invoke(args=["content", "import", str(pack), "--json"])
    assert imported.exit_code == 0, imported.output
    report = json.loads(imported.output)
    assert report["blocks"]["created"] == 2 and report["problems"][0]["path"].endswith("broken.html")
    add_contacts(session, [{"email": "ana@example.com", "first_name": "Ana", "interests": {"pizza": 3}}])

    created = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path)), "--json"])
    assert created.exit_code == 0, created.output
    campaign_id = json.loads(created.output)["id"]

    preview = runner.invoke(args=["campaigns", "preview", str(campaign_id), "--contact", "ANA@example.com"])
    assert preview.exit_code == 0, preview.output
    assert "to: ana@example.com (in the audience)" in preview.output
    assert "subject: Hi Ana" in preview.output
    assert "hero: pizza v1 (en) score 3.00 = pizza 1.0×3.00 + priority 0.00 — best match" in preview.output

    sent = runner.invoke(args=["campaigns", "send", str(campaign_id), "--wait"])
    assert sent.exit_code == 0, sent.output
    status = json.loads(runner.invoke(args=["campaigns", "status", str(campaign_id), "--json"]).output)
    assert status["state"] == "finished" and status["sent"] == status["total"] == 1

    paused = runner.invoke(args=["campaigns", "pause", str(campaign_id)])
    assert paused.exit_code == 1 and "no run in progress" in paused.output


def test_a_bad_campaign_file_names_the_field(runner, tmp_path):
    result = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path, **{"from": "Corner Shop"}))])
    assert result.exit_code == 1
    assert "campaign.yaml: field 'from': is not an email address" in result.output
    two = {"reply_to": "help@shop.example.com, other@evil.example"}
    result = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path, **two))])
    assert result.exit_code == 1
    assert "campaign.yaml: field 'reply_to': must be exactly one address" in result.output
    result = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path, subject="{{ oops"))])
    assert "field 'subject': template error" in result.output
    result = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path, layout="nope"))])
    assert "field 'layout': there is no layout 'nope'" in result.output
    result = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path, segment="vips"))])
    assert "give exactly one of `segment`" in result.output


@pytest.mark.parametrize(
    ("yaml_text", "problem"),
    [
        ("name: x\nsegment: &a [*a]\n", "line 2: not valid YAML: refers to itself through an alias"),
        ("name: x\nrules: " + "[" * 1000 + "]" * 1000 + "\n", "line 2: not valid YAML: nests lists and mappings"),
        ("name: x\nstarts: 2026-02-30\n", "line 2: not valid YAML: cannot read the value '2026-02-30'"),
    ],
)
def test_a_hostile_campaign_file_is_one_line_naming_its_line(runner, tmp_path, yaml_text, problem):
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml_text)
    result = runner.invoke(args=["campaigns", "create", str(path)])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: {path}, {problem}")


def test_pause_resume_and_cancel_a_run(runner, session, tmp_path):
    from campaigns.runs import start_run

    campaign_id = sendable_campaign(
        runner, session, tmp_path, [{"email": f"p{i}@example.com", "first_name": f"P{i}"} for i in range(5)]
    )
    run = start_run(session, campaign_id)
    run.state, run.planned_at = "sending", None
    session.commit()
    assert runner.invoke(args=["campaigns", "pause", str(campaign_id)]).exit_code == 0
    status = json.loads(runner.invoke(args=["campaigns", "status", str(campaign_id), "--json"]).output)
    assert status["state"] == "paused" and status["note"] == "paused by request"

    resumed = runner.invoke(args=["campaigns", "resume", str(campaign_id), "--wait"])
    assert resumed.exit_code == 0, resumed.output
    status = json.loads(runner.invoke(args=["campaigns", "status", str(campaign_id), "--json"]).output)
    assert status["state"] == "finished" and status["sent"] == 5

    again = runner.invoke(args=["campaigns", "send", str(campaign_id), "--again", "--wait"])
    assert again.exit_code == 0
    cancelled = runner.invoke(args=["campaigns", "cancel", str(campaign_id)])
    assert cancelled.exit_code == 1 and "its last run 2 is finished" in cancelled.output


def test_send_without_wait_sends_from_a_background_process(runner, session, tmp_path):
    import time

    campaign_id = sendable_campaign(
        runner, session, tmp_path, [{"email": f"b{i}@example.com", "first_name": f"B{i}"} for i in range(20)]
    )
    started = runner.invoke(args=["campaigns", "send", str(campaign_id)])
    assert started.exit_code == 0, started.output
    assert "is sending in the background" in started.output
    deadline = time.monotonic() + 60
    while True:
        status = json.loads(runner.invoke(args=["campaigns", "status", str(campaign_id), "--json"]).output)
        if status["state"] == "finished" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status["state"] == "finished" and status["sent"] == 20


# --- `campaigns list` and `show`: every campaign, and one campaign with its runs ---------------------------------


def table_rows(output: str) -> list[dict[str, str]]:
    """The rows of a CLI table as {header: cell}, cut at the columns the dashed rule under the headers marks."""
    header, rule, *rows = output.splitlines()
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", rule)]
    names = [header[start:end].strip() for start, end in spans]
    return [{name: row[start:end].strip() for name, (start, end) in zip(names, spans)} for row in rows]


def labelled(output: str) -> dict[str, str]:
    """``label: value`` lines of `campaigns show`, up to its runs."""
    head = output.split("\nruns, newest first:\n")[0].splitlines()[1:]
    return dict(line.split(": ", 1) for line in head)


def test_list_and_show_with_no_campaigns(runner):
    listed = runner.invoke(args=["campaigns", "list"])
    assert (listed.exit_code, listed.output) == (
        0,
        "no campaigns yet: `patron campaigns create FILE.yaml` stores one\n",
    )
    assert json.loads(runner.invoke(args=["campaigns", "list", "--json"]).output) == []
    for args in (["show", "7"], ["show", "7", "--json"], ["status", "7"]):
        shown = runner.invoke(args=["campaigns", *args])
        assert (shown.exit_code, shown.output) == (1, "Error: there is no campaign 7\n")


def test_list_and_show_every_campaign_with_its_last_run(runner, session, tmp_path):
    runner.invoke(args=["content", "import", str(write_pack(tmp_path / "pack", [block("pizza")]))])
    rules = tmp_path / "fans.yaml"
    rules.write_text("interest: pizza\nop: gte\nvalue: 3\n", encoding="utf-8")
    assert runner.invoke(args=["segments", "create", "pizza-fans", "--rules", str(rules)]).exit_code == 0
    add_contacts(
        session,
        [
            {"email": "ana@example.com", "first_name": "Ana", "interests": {"pizza": 5}},
            {"email": "bo@example.com", "first_name": "Bo", "interests": {"pizza": 4}},
            {"email": "cy@example.com", "first_name": "Cy", "interests": {"pizza": 1}},
        ],
    )
    weekly = campaign_file(tmp_path)  # inline rules: everyone with consent
    fans = tmp_path / "fans-campaign.yaml"
    fans.write_text(
        yaml.safe_dump(
            {
                **{k: v for k, v in CAMPAIGN.items() if k != "rules"},
                "name": "Pizza fans",
                "segment": "pizza-fans",
                "reply_to": "Help <help@shop.example.com>",
                "subject": {"en": "Hi {{ contact.first_name }}", "es": "Hola {{ contact.first_name }}"},
                "preheader": "Hot from the oven",
                "slots": {"hero": {"interests": ["pizza"], "blocks": ["pizza"], "tags": ["pizza", "new"]}},
                "frequency_cap": {"max": 2, "days": 7},
            }
        ),
        encoding="utf-8",
    )
    first = json.loads(runner.invoke(args=["campaigns", "create", str(weekly), "--json"]).output)["id"]
    second = json.loads(runner.invoke(args=["campaigns", "create", str(fans), "--json"]).output)["id"]
    assert runner.invoke(args=["campaigns", "send", str(second), "--wait"]).exit_code == 0

    listed = runner.invoke(args=["campaigns", "list"])
    assert listed.exit_code == 0, listed.output
    created = {c.id: c.created_at for c in session.scalars(select(Campaign))}
    assert table_rows(listed.output) == [
        {
            "id": str(first),
            "name": "Weekly",
            "segment": "(inline rules)",
            "layout": "mail",
            "created": f"{created[first]:%Y-%m-%d %H:%M} UTC",
            "last run": "never sent",
            "recipients": "",
            "sent": "",
            "skipped": "",
            "failed": "",
        },
        {
            "id": str(second),
            "name": "Pizza fans",
            "segment": "pizza-fans",
            "layout": "mail",
            "created": f"{created[second]:%Y-%m-%d %H:%M} UTC",
            "last run": "1 finished",
            "recipients": "2",
            "sent": "2",
            "skipped": "0",
            "failed": "0",
        },
    ]
    as_json = json.loads(runner.invoke(args=["campaigns", "list", "--json"]).output)
    assert [(c["id"], c["name"], c["segment"], c["layout"]) for c in as_json] == [
        (first, "Weekly", None, "mail"),
        (second, "Pizza fans", "pizza-fans", "mail"),
    ]
    assert as_json[0]["last_run"] is None
    run = session.scalar(select(Run).where(Run.campaign_id == second))
    assert as_json[1]["created"] == created[second].isoformat()
    assert as_json[1]["last_run"] == {
        "run": run.id,
        "state": "finished",
        "note": run.note,
        "started": run.created_at.isoformat(),
        "finished": run.finished_at.isoformat(),
        "total": 2,
        "pending": 0,
        "sending": 0,
        "sent": 2,
        "failed": 0,
        "skipped": 0,
        "unknown": 0,
        "skipped_by_reason": {},
        "failed_by_reason": {},
    }

    shown = runner.invoke(args=["campaigns", "show", str(second)])
    assert shown.exit_code == 0, shown.output
    assert (
        shown.output.splitlines()[0] == f"campaign {second}: Pizza fans, created {created[second]:%Y-%m-%d %H:%M} UTC"
    )
    assert labelled(shown.output) == {
        "from": "Corner Shop <news@shop.example.com>",
        "reply to": "Help <help@shop.example.com>",
        "subject (en)": "Hi {{ contact.first_name }}",
        "subject (es)": "Hola {{ contact.first_name }}",
        "preheader": "Hot from the oven",
        "segment": "pizza-fans",
        "layout": "mail",
        "slot hero": "tags pizza, new; interests pizza; blocks pizza",
        "frequency cap": "at most 2 message(s) in 7 day(s)",
    }
    assert shown.output.split("\nruns, newest first:\n")[1].splitlines() == [
        f"  run {run.id}: finished, started {run.created_at:%Y-%m-%d %H:%M} UTC,"
        f" finished {run.finished_at:%Y-%m-%d %H:%M} UTC",
        "    2 recipients: 2 sent, 0 pending, 0 sending, 0 failed, 0 skipped, 0 unknown",
    ]
    never = runner.invoke(args=["campaigns", "show", str(first)])
    assert labelled(never.output.replace("\nno runs yet", "\nruns, newest first:\nno runs yet"))["rules"] == (
        '{"consent": "marketing", "op": "eq", "value": true}'
    )
    assert never.output.endswith(f"no runs yet: `patron campaigns send {first}` starts one\n")
    detail = json.loads(runner.invoke(args=["campaigns", "show", str(second), "--json"]).output)
    assert (detail["id"], detail["name"], detail["definition"]["segment"]) == (second, "Pizza fans", "pizza-fans")
    assert detail["definition"]["frequency_cap"] == {"max": 2, "days": 7.0}
    assert [r["run"] for r in detail["runs"]] == [run.id] and detail["runs"][0] == as_json[1]["last_run"]


def test_a_name_with_control_characters_cannot_break_the_list_or_the_terminal(runner, session, tmp_path):
    refused = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path, name="Weekly\x1b[2J\nBcc: x"))])
    assert refused.exit_code == 1 and "field 'name': must not contain" in refused.output
    assert "Traceback" not in refused.output and "\x1b" not in refused.output
    # A name stored before create refused them is still shown escaped.
    campaign_id = sendable_campaign(runner, session, tmp_path)
    session.execute(update(Campaign).where(Campaign.id == campaign_id).values(name="Weekly\x1b[2J\nBcc: x"))
    session.commit()
    for args in (["list"], ["show", str(campaign_id)]):
        output = runner.invoke(args=["campaigns", *args]).output
        assert "\x1b" not in output
    listed = runner.invoke(args=["campaigns", "list"]).output
    assert len(listed.splitlines()) == 3 and table_rows(listed)[0]["name"] == "Weekly\\x1b[2J\\nBcc: x"


# --- `send` after a run that mailed the audience needs `--again` -------------------------------------------------


def test_sending_a_finished_campaign_again_needs_again(runner, session, tmp_path):
    campaign_id = sendable_campaign(runner, session, tmp_path)
    assert runner.invoke(args=["campaigns", "send", str(campaign_id), "--wait"]).exit_code == 0
    run = session.scalar(select(Run).where(Run.campaign_id == campaign_id))
    outbox = Path(runner.app.instance_path) / "outbox" / "new"
    assert len(list(outbox.iterdir())) == 3

    refused = runner.invoke(args=["campaigns", "send", str(campaign_id), "--wait"])
    assert refused.exit_code == 1
    assert refused.output == (
        f"Error: campaign {campaign_id} was sent already: its last run {run.id} finished at"
        f" {run.finished_at:%Y-%m-%d %H:%M} UTC, sending 3 message(s);"
        f" `patron campaigns send {campaign_id} --again` sends to everyone again (those the new run's rules select)\n"
    )
    session.rollback()  # see what the commands committed
    assert session.scalar(select(func.count()).select_from(Run)) == 1 and len(list(outbox.iterdir())) == 3

    again = runner.invoke(args=["campaigns", "send", str(campaign_id), "--again", "--wait"])
    assert again.exit_code == 0, again.output
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Run)) == 2 and len(list(outbox.iterdir())) == 6


def test_the_service_refuses_a_new_run_after_one_that_mailed_anyone(session, tmp_path, runner):
    from campaigns.runs import AlreadySent, RunError, cancel, start_run

    campaign_id = sendable_campaign(runner, session, tmp_path)
    # Cancelled before anything went out: nobody was mailed, so a new run needs no `again`.
    first = start_run(session, campaign_id)
    session.commit()
    cancel(session, campaign_id)
    session.commit()
    second = start_run(session, campaign_id)
    session.flush()
    with pytest.raises(RunError, match=f"already has run {second.id}, which is planning: resume or cancel it"):
        start_run(session, campaign_id, again=True)  # `again` never joins a second run to an active one
    # Cancelled after one message went out: the next run would mail that person again.
    session.add(Delivery(run_id=second.id, contact_id=session.scalar(select(Contact.id).limit(1)), status="sent"))
    second.state = "sending"
    cancel(session, campaign_id)
    session.commit()
    with pytest.raises(AlreadySent) as refused:
        start_run(session, campaign_id)
    assert str(refused.value) == (
        f"campaign {campaign_id} was sent already: its last run {second.id} was cancelled at"
        f" {second.finished_at:%Y-%m-%d %H:%M} UTC, sending 1 message(s)"
    )
    assert start_run(session, campaign_id, again=True).id > second.id > first.id


# --- `status` says why recipients were skipped, one count per reason ---------------------------------------------


def test_a_run_that_skips_everyone_says_why(runner):
    demo = runner.invoke(args=["demo"])
    assert demo.exit_code == 0, demo.output
    audience = int(re.search(r"finished: ([\d,]+) sent", demo.output).group(1).replace(",", ""))
    # The weekly campaign's cap is three messages in seven days: two more weeks reach it.
    for _ in range(2):
        assert runner.invoke(args=["campaigns", "send", "1", "--again", "--wait"]).exit_code == 0
    capped = runner.invoke(args=["campaigns", "send", "1", "--again", "--wait"])
    assert capped.exit_code == 0, capped.output
    # The demo's readers included one who unsubscribed (no longer in the audience: marketing consent withdrawn)
    # and one whose address bounced (in it, skipped for that).
    recipients, capped_count = audience - 1, audience - 2
    summary, skipped = capped.output.splitlines()[-2:]
    assert summary == (
        f"campaign 1, run 4: finished — {recipients:,} recipients:"
        f" 0 sent, 0 pending, 0 sending, 0 failed, {recipients:,} skipped, 0 unknown"
    )
    assert skipped.startswith(f"{recipients:,} skipped: {capped_count:,} frequency cap (3 in 7 days)"), skipped
    assert runner.invoke(args=["campaigns", "status", "1"]).output.splitlines() == [summary, skipped]
    status = json.loads(runner.invoke(args=["campaigns", "status", "1", "--json"]).output)
    assert (status["sent"], status["skipped"]) == (0, recipients)
    assert status["skipped_by_reason"] == {"frequency cap (3 in 7 days)": capped_count, "contact status: bounced": 1}


def test_status_counts_the_skipped_by_each_reason(runner, session, tmp_path):
    people = [
        {"email": "ok@example.com", "first_name": "Ok"},
        {"email": "gone1@example.com", "first_name": "Gone", "status": "unsubscribed"},
        {"email": "gone2@example.com", "first_name": "Gone", "status": "unsubscribed"},
        {"email": "bounced@example.com", "first_name": "Bounced"},
        {"email": None, "first_name": "Till only"},
    ]
    campaign_id = sendable_campaign(runner, session, tmp_path, people)
    assert runner.invoke(args=["contacts", "suppress", "bounced@example.com", "--reason", "bounced"]).exit_code == 0
    sent = runner.invoke(args=["campaigns", "send", str(campaign_id), "--wait"])
    assert sent.exit_code == 0, sent.output
    why = "4 skipped: 2 contact status: unsubscribed, 1 contact status: bounced, 1 no email address"
    assert sent.output.splitlines()[-1] == why
    status = runner.invoke(args=["campaigns", "status", str(campaign_id)]).output.splitlines()
    assert status[1:] == [why]
    as_json = json.loads(runner.invoke(args=["campaigns", "status", str(campaign_id), "--json"]).output)
    assert (as_json["sent"], as_json["skipped"]) == (1, 4)
    assert list(as_json["skipped_by_reason"].items()) == [
        ("contact status: unsubscribed", 2),
        ("contact status: bounced", 1),
        ("no email address", 1),
    ]
    shown = runner.invoke(args=["campaigns", "show", str(campaign_id)]).output
    assert f"    {why}" in shown.splitlines()


def test_status_counts_are_the_ledger_tallied_whatever_its_rows(engine, session, tmp_path, runner):
    from campaigns.runs import status

    campaign_id = sendable_campaign(runner, session, tmp_path, [{"email": "a@example.com", "first_name": "A"}])
    runs = [Run(campaign_id=campaign_id, state="finished", rules={}, content={}) for _ in range(2)]
    session.add_all(runs)
    session.commit()
    reasons = st.sampled_from(["run cancelled", "no email address", "contact status: bounced", "suppressed: manual"])
    # Skipped rows drawn more often than the rest, so that reasons compete for first place.
    row = st.tuples(st.one_of(st.just("skipped"), st.sampled_from(STATUSES)), reasons)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(rows=st.lists(st.tuples(st.sampled_from([0, 1]), row), max_size=40))
    def check(rows):
        session.execute(delete(Delivery))
        session.execute(delete(Contact).where(Contact.email.is_(None)))
        contacts = [Contact(status="active") for _ in rows]
        session.add_all(contacts)
        session.flush()
        for contact, (which, (state, reason)) in zip(contacts, rows):
            session.add(Delivery(run_id=runs[which].id, contact_id=contact.id, status=state, reason=reason))
        session.flush()
        latest = [(state, reason) for which, (state, reason) in rows if which == 1]
        current = status(session, campaign_id)
        assert current["run"] == runs[1].id
        assert {s: current[s] for s in STATUSES} == {s: sum(1 for state, _ in latest if state == s) for s in STATUSES}
        assert current["total"] == len(latest)
        skipped = Counter(reason for state, reason in latest if state == "skipped")
        assert current["skipped_by_reason"] == dict(skipped)
        counts = list(current["skipped_by_reason"].items())
        assert counts == sorted(counts, key=lambda item: (-item[1], item[0]))  # the most frequent first

    check()
