"""Templates are checked when they enter, not when they are sent (issue #7, item 3; item 7's from/reply_to).

One fault kind: something a marketer or an agency wrote that would fail, or
print nothing, for every recipient. Each way in (a pack import, a campaign
file, a preview, a send) names the problem and its file or field; a fault
that still stops a worker's batch pauses the run with the reason.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text, update

from campaigns.definition import CampaignError, parse_definition, parse_mailbox
from campaigns.models import Campaign, Run
from campaigns.runs import audience_rules, create_campaign, frozen_content, start_run
from content.checking import CONTACT_FIELDS, check_template
from content.models import Layout, LayoutVersion
from content.packs import PackError, import_pack
from content.rendering import html_environment
from delivery.models import Delivery
from tests.campaigns.conftest import CAMPAIGN, add_contacts, pack_blocks, patron_environment
from tests.packs import LAYOUT, block, write_pack

NOSUCHFILTER = "{{ contact.first_name | nosuchfilter }}"
IDENTIFIERS = st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True)


def messages(source: str, kind: str = "block", **names) -> list[str]:
    return [problem.message for problem in check_template(source, kind, **names)]


# --- the static check of one template ------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        NOSUCHFILTER,
        # Inside {% if %} Jinja compiles an unknown filter without a word and fails at render time.
        "{% if contact.first_name %}{{ contact.first_name | nosuchfilter }}{% endif %}",
        "{% filter nosuchfilter %}Hello{% endfilter %}",
    ],
)
def test_an_unknown_filter_is_an_error_wherever_it_is(source):
    assert messages(source, "subject") == ["no filter named 'nosuchfilter'"]


def test_an_unknown_test_and_a_near_miss_filter_name_the_real_one():
    assert messages("{% if contact.first_name is nosuchtest %}x{% endif %}") == ["no test named 'nosuchtest'"]
    assert messages("{{ contact.first_name | fallbak('friend') }}") == [
        "no filter named 'fallbak'; did you mean 'fallback'?"
    ]


def test_a_misspelt_merge_field_names_the_nearest_real_one_on_its_line():
    problems = check_template("<p>Hello</p>\n<p>{{ contact.firstname }}</p>\n{{ contact['lastname'] }}", "block")
    assert [(p.line, p.message) for p in problems] == [
        (2, "contact.firstname: no such merge field; did you mean contact.first_name?"),
        (3, "contact.lastname: no such merge field; did you mean contact.last_name?"),
    ]


@given(IDENTIFIERS)
def test_a_merge_field_is_accepted_exactly_when_the_contact_has_it(name):
    for source in (f"{{{{ contact.{name} }}}}", f"{{{{ contact[{name!r}] }}}}"):
        problems = messages(source)
        assert (problems == []) == (name in CONTACT_FIELDS), (source, problems)
        if problems:
            assert problems[0].startswith(f"contact.{name}: no such merge field")


@given(IDENTIFIERS)
def test_a_filter_is_accepted_exactly_when_the_sending_sandbox_has_it(name):
    problems = messages(f"{{% if contact.email %}}{{{{ contact.email | {name} }}}}{{% endif %}}")
    assert (problems == []) == (name in html_environment().filters), problems


def test_attributes_are_free_form_and_names_a_template_sets_are_its_own():
    source = (
        "{{ contact.attributes.city | fallback('your town') }} {{ contact.get('first_name') }}"
        "{% set name = contact.first_name | fallback('') %}{{ name }}"
        "{% for i in range(2) %}{{ loop.index }}{{ i }}{% endfor %}"
    )
    assert messages(source) == []


def test_unknown_names_phrases_and_slots_are_errors_that_say_what_exists():
    assert messages("{{ firstname }}", "subject") == [
        "firstname: no such name; templates here can use"
        " campaign, contact, language, link, preferences_url, strings, unsubscribe_url"
    ]
    assert messages("{{ strings.greting }}", phrases={"greeting"}) == [
        "strings.greting: no such phrase in the pack's strings; did you mean strings.greeting?"
    ]
    assert messages("{{ slots.sidebar }}", "layout", slots=["hero", "offer"]) == [
        "slots.sidebar: the layout has no such slot (there are: slots.hero, slots.offer)"
    ]
    # A block is rendered before the layout: it has no slots, and the subject comes later still.
    assert messages("{{ slots.hero }}", "block")[0].startswith("slots: no such name")
    assert messages("{{ subject }}", "preheader") == []
    assert messages("{{ preheader }}", "subject")[0].startswith("preheader: no such name")


def test_include_extends_and_import_are_refused():
    for source in ('{% include "footer.html" %}', '{% extends "base.html" %}', '{% import "m.html" as m %}'):
        assert messages(source) == [
            "include, extends and import are not available: each template of a pack stands alone"
        ]


TOKENS = [
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    " ",
    "\n",
    "if",
    "endif",
    "for",
    "in",
    "endfor",
    "set",
    "=",
    "x",
    "(",
    ")",
]
TOKENS += ["contact", ".", "first_name", "firstname", "|", "upper", "nosuch", "is", "defined", "'a'", "slots", "raw"]


@given(st.one_of(st.text(), st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)))
def test_the_check_never_raises_and_what_it_accepts_compiles_in_the_sending_sandbox(source):
    for kind in ("block", "layout"):
        if not check_template(source, kind, phrases=(), slots=("hero",)):
            html_environment().from_string(source)


def test_a_template_nested_too_deeply_for_jinja_is_a_problem_not_a_crash():
    deep = "{% if contact.email %}" * 400 + "x" + "{% endif %}" * 400
    assert messages(deep) == ["is nested too deeply to compile (tags or brackets inside one another)"]


# --- the campaign file -------------------------------------------------------------------------


def definition(**overrides) -> dict:
    return {**CAMPAIGN, "subject": "Hi {{ contact.first_name | fallback('there') }}", **overrides}


def test_the_issue_subject_is_refused_naming_the_field_and_locale():
    with pytest.raises(CampaignError) as refused:
        parse_definition(definition(subject={"en": "Hi", "es": NOSUCHFILTER}), "weekly.yaml")
    assert str(refused.value) == "weekly.yaml: field 'subject.es': template error: no filter named 'nosuchfilter'"
    with pytest.raises(CampaignError) as refused:
        parse_definition(definition(preheader="For {{ contact.firstname }}"), "weekly.yaml")
    assert str(refused.value) == (
        "weekly.yaml: field 'preheader': template error: "
        "contact.firstname: no such merge field; did you mean contact.first_name?"
    )


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("Weekly\nBcc: x", "must not contain a line break"),
        ("Weekly\u202e", "must not contain the invisible bidirectional control U+202E"),
        ("Weekly\x85", "must not contain the control character U+0085"),
    ],
)
def test_a_campaign_name_with_a_control_or_invisible_character_is_refused(name, problem):
    # Names are printed in every list and report: a line break or an override there misleads the reader.
    with pytest.raises(CampaignError) as refused:
        parse_definition(definition(name=name), "weekly.yaml")
    assert str(refused.value).startswith(f"weekly.yaml: field 'name': {problem}")


@pytest.mark.parametrize("field", ["from", "reply_to"])
@pytest.mark.parametrize(
    "written",
    [
        "news@shop.example.com, other@evil.example",
        "Shop <news@shop.example.com>, Evil <other@evil.example>",
        "news@shop.example.com; other@evil.example",
        "undisclosed-recipients:;",
        "Shop news@shop.example.com <other@evil.example>",
    ],
)
def test_from_and_reply_to_must_be_exactly_one_address(field, written):
    with pytest.raises(CampaignError) as refused:
        parse_definition(definition(**{field: written}), "weekly.yaml")
    assert str(refused.value).startswith(f"weekly.yaml: field '{field}': must be exactly one address")


ADDRESSES = st.tuples(
    st.from_regex(r"[a-z0-9]([a-z0-9._+-]{0,10}[a-z0-9])?", fullmatch=True).filter(lambda s: ".." not in s),
    st.sampled_from(["shop.example.com", "evil.example", "bücher.example", "例え.example"]),
).map("@".join)


@given(st.lists(ADDRESSES, min_size=2, max_size=4), st.sampled_from([", ", ",", "; ", " , "]))
def test_any_list_of_addresses_is_refused(addresses, separator):
    with pytest.raises(ValueError, match="must be exactly one address"):
        parse_mailbox(separator.join(addresses))


@given(ADDRESSES, st.text(st.characters(codec="utf-8", exclude_characters='"\\\r\n\0<>'), max_size=20))
def test_one_address_with_any_quoted_name_is_read_whole(address, name):
    mailbox = parse_mailbox(f'"{name}" <{address}>')
    assert mailbox["name"] == (name or None)
    local, _, domain = address.partition("@")
    assert mailbox["email"] == f"{local}@{domain.encode('idna').decode('ascii')}"


def test_an_internationalized_domain_is_accepted_in_the_form_it_is_sent_in():
    checked = parse_definition(definition(**{"from": "Bücher <jonas@Bücher.example>"}))
    assert checked["sender"] == {"name": "Bücher", "email": "jonas@xn--bcher-kva.example"}
    with pytest.raises(CampaignError, match="field 'from': is not an email address: 'Corner Shop'"):
        parse_definition(definition(**{"from": "Corner Shop"}))


# --- pack import ---------------------------------------------------------------------------------


def test_a_block_with_a_template_fault_is_skipped_naming_its_file_and_line(session, tmp_path):
    pack = write_pack(
        tmp_path / "p",
        [
            block("good"),
            block("misspelt", body="<h2>Hi</h2>\n<p>{{ contact.firstname }}</p>\n"),
            block("filter-in-if", body="{% if contact.email %}\n{{ contact.email | nosuchfilter }}{% endif %}\n"),
            block("phrase", body="<p>{{ strings.greting }}</p>\n"),
        ],
    )
    report = import_pack(session, pack)
    assert report.blocks["created"] == 1
    found = {(Path(p.path).name, p.line, p.message) for p in report.problems}
    # Lines count from the top of the file: four lines of front matter between the '---' lines.
    front = 2 + len(yaml.safe_dump(block("misspelt")["front"], sort_keys=False).splitlines())
    assert found == {
        (
            "misspelt.html",
            front + 2,
            "template error: contact.firstname: no such merge field; did you mean contact.first_name?",
        ),
        ("filter-in-if.html", front + 2, "template error: no filter named 'nosuchfilter'"),
        (
            "phrase.html",
            front + 1,
            "template error: strings.greting: no such phrase in the pack's strings; did you mean strings.greeting?",
        ),
    }


def test_a_layout_with_a_template_fault_stops_the_import_naming_every_problem(session, tmp_path):
    layout = LAYOUT.replace("{{ slots.hero }}", "{{ slots.hero }}{{ slots.sidebar }}").replace(
        "{{ subject }}", "{{ subject | nosuchfilter }}"
    )
    with pytest.raises(PackError) as stopped:
        import_pack(session, write_pack(tmp_path / "p", [block("good")], layout=layout))
    assert [(Path(p.path).name, p.line, p.message) for p in stopped.value.problems] == [
        ("mail.html", 2, "template error: no filter named 'nosuchfilter'")
    ]
    layout = LAYOUT.replace("{{ slots.hero }}", "{{ slots.hero }}{{ slots.sidebar }}")
    with pytest.raises(PackError) as stopped:
        import_pack(session, write_pack(tmp_path / "p", [block("good")], layout=layout))
    assert str(stopped.value).endswith(
        "mail.html, line 6: template error: slots.sidebar: the layout has no such slot "
        "(there are: slots.hero, slots.offer)"
    )
    assert session.scalar(select(Layout.id)) is None


# --- campaigns create ----------------------------------------------------------------------------


@pytest.fixture
def imported(session, tmp_path):
    report = import_pack(session, write_pack(tmp_path / "pack", pack_blocks()))
    session.commit()
    assert not report.problems


def create(session, **overrides):
    return create_campaign(session, parse_definition(definition(**overrides), "weekly.yaml"), "weekly.yaml")


def test_create_refuses_a_subject_missing_for_the_packs_default_locale(session, imported):
    with pytest.raises(CampaignError) as refused:
        create(session, subject={"es": "Hola"})
    assert str(refused.value) == (
        "weekly.yaml: field 'subject': none for 'en', the default locale of pack 'test-pack', "
        "where every locale falls back to: add subject.en or one subject for everyone"
    )
    assert create(session, subject="Hello everyone").id
    assert create(session, subject={"EN": "Hello", "es": "Hola"}).id


def test_create_refuses_slots_the_layout_does_not_have_and_phrases_the_pack_lacks(session, imported):
    with pytest.raises(CampaignError) as refused:
        create(session, slots={"sidebar": {"tags": ["offer"]}, "hero": {}}, subject="{{ strings.greting }}")
    assert str(refused.value).splitlines() == [
        "weekly.yaml: field 'subject': template error: "
        "strings.greting: no such phrase in the pack's strings; did you mean strings.greeting?",
        "weekly.yaml: field 'slots': layout 'mail' has no slot 'sidebar'; its slots are hero, offer",
    ]
    assert session.scalar(select(Campaign.id)) is None


def test_create_compiles_the_stored_layout_and_blocks_too(session, imported):
    # Content stored before these checks existed (or changed behind Patron's back) is checked as well.
    layout = session.scalar(select(LayoutVersion))
    layout.html = layout.html.replace("{{ subject }}", "{{ subject | nosuchfilter }}")
    session.commit()
    with pytest.raises(CampaignError) as refused:
        create(session)
    assert str(refused.value) == (
        "weekly.yaml: pack 'test-pack': layout 'mail' v1, HTML line 2: template error: no filter named 'nosuchfilter'"
    )


# --- commands: one line naming the problem, never a traceback -----------------------------------


def campaign_file(tmp_path, **overrides) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(definition(**overrides)), encoding="utf-8")
    return path


def store_unchecked(session, **overrides) -> Campaign:
    """A campaign stored as an older Patron (which did not check templates) would have stored it."""
    checked = parse_definition(definition())
    checked.update(overrides)
    campaign = Campaign(name="Unchecked", definition=checked)
    session.add(campaign)
    session.commit()
    return campaign


ISSUE_ERROR = "field 'subject': template error: no filter named 'nosuchfilter'"
FROZEN = "; the run's content is frozen: cancel it, fix the pack or the campaign, and send again"


def test_create_preview_send_resume_and_status_say_what_is_wrong_in_one_line(runner, session, tmp_path, imported):
    add_contacts(session, [{"email": "ana@example.com", "first_name": "Ana"}])
    created = runner.invoke(args=["campaigns", "create", str(campaign_file(tmp_path, subject=NOSUCHFILTER))])
    assert (created.exit_code, created.output) == (1, f"Error: {tmp_path / 'campaign.yaml'}: {ISSUE_ERROR}\n")

    campaign = store_unchecked(session, subject={"*": NOSUCHFILTER})
    expected = f"Error: campaign {campaign.id}: {ISSUE_ERROR}\n"
    preview = runner.invoke(args=["campaigns", "preview", str(campaign.id), "--contact", "ana@example.com"])
    assert (preview.exit_code, preview.output) == (1, expected)
    sent = runner.invoke(args=["campaigns", "send", str(campaign.id), "--wait"])
    assert (sent.exit_code, sent.output) == (1, expected)
    assert session.scalar(select(Run.id)) is None

    # The service refuses too, whoever calls it (a scheduler, the web UI), before any run exists.
    with pytest.raises(CampaignError, match=re.escape(ISSUE_ERROR)):
        start_run(session, campaign.id)
    session.rollback()

    # A run frozen with the broken subject (started by an older Patron, which did not check) pauses, and says why.
    rules = audience_rules(session, campaign.definition)
    run = Run(
        campaign_id=campaign.id,
        state="paused",
        note="paused by request",
        rules=rules,
        content=frozen_content(session, campaign.definition["layout"]),
    )
    session.add(run)
    session.commit()
    resumed = runner.invoke(args=["campaigns", "resume", str(campaign.id), "--wait"])
    assert resumed.exit_code == 1 and "Traceback" not in resumed.output
    note = f"note: paused: {ISSUE_ERROR}{FROZEN}"
    assert resumed.output.splitlines()[-1] == note
    status = runner.invoke(args=["campaigns", "status", str(campaign.id)])
    assert status.output.splitlines()[0].startswith(f"campaign {campaign.id}, run {run.id}: paused")
    assert status.output.splitlines()[1] == note
    as_json = json.loads(runner.invoke(args=["campaigns", "status", str(campaign.id), "--json"]).output)
    assert as_json["state"] == "paused" and as_json["note"] == note.removeprefix("note: ")
    assert as_json["sent"] == 0 and as_json["pending"] == 1


def patron_env(engine, tmp_path) -> dict:
    return patron_environment(engine, tmp_path, f"outbox://{tmp_path / 'outbox'}")


def patron(env, *args) -> subprocess.CompletedProcess:
    """The installed ``patron`` command, as a marketer runs it."""
    command = Path(sys.executable).with_name("patron")
    return subprocess.run([str(command), *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_real_patron_command_prints_no_traceback(session, engine, tmp_path, imported):
    add_contacts(session, [{"email": "ana@example.com", "first_name": "Ana"}])
    campaign = store_unchecked(session, subject={"*": NOSUCHFILTER})
    env = patron_env(engine, tmp_path)
    results = [
        patron(env, "campaigns", "create", str(campaign_file(tmp_path, subject=NOSUCHFILTER))),
        patron(env, "campaigns", "preview", str(campaign.id), "--contact", "ana@example.com"),
        patron(env, "campaigns", "send", str(campaign.id), "--wait"),
        patron(env, "campaigns", "send", str(campaign.id)),
    ]
    for result in results:
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == 1 and ISSUE_ERROR in result.stderr
    broken = write_pack(
        tmp_path / "broken", [block("good")], layout=LAYOUT.replace("}}</title>", "| nosuchfilter }}</title>")
    )
    imported = patron(env, "content", "import", str(broken))
    assert (imported.returncode, imported.stderr) == (
        1,
        f"Error: {broken / 'layouts' / 'mail.html'}, line 2: template error: no filter named 'nosuchfilter'\n",
    )


# --- a worker that stops: the run pauses with the reason ---------------------------------------


def wait_for_state(runner, campaign_id: int, state: str) -> dict:
    deadline = time.monotonic() + 60  # well within the 2-minute lease after which a driver is presumed dead
    while True:
        current = json.loads(runner.invoke(args=["campaigns", "status", str(campaign_id), "--json"]).output)
        if current["state"] == state or time.monotonic() > deadline:
            return current
        time.sleep(0.2)


def test_a_background_send_whose_worker_raises_reads_paused_with_the_reason(
    runner, session, engine, tmp_path, imported
):
    add_contacts(session, [{"email": f"b{i}@example.com", "first_name": f"B{i}"} for i in range(5)])
    campaign = create(session)
    session.commit()
    # A real database fault, in the worker only: the table of blocks already shown is gone.
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE shown_blocks RENAME TO shown_blocks_away"))
    try:
        started = runner.invoke(args=["campaigns", "send", str(campaign.id)])
        assert started.exit_code == 0 and "is sending in the background" in started.output
        current = wait_for_state(runner, campaign.id, "paused")
    finally:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE shown_blocks_away RENAME TO shown_blocks"))
    assert current["state"] == "paused", current
    assert current["note"].startswith("paused: a worker stopped on an error: ")
    assert "shown_blocks" in current["note"] and current["note"].endswith("; resume once it is fixed")
    assert "\n" not in current["note"]
    status = runner.invoke(args=["campaigns", "status", str(campaign.id)])
    assert status.output.splitlines()[1] == f"note: {current['note']}"

    # Fixed: resume sends everyone (the rows the worker held are 'unknown', never resent silently).
    resumed = runner.invoke(args=["campaigns", "resume", str(campaign.id), "--wait"])
    assert resumed.exit_code == 0, resumed.output
    done = wait_for_state(runner, campaign.id, "finished")
    assert done["sent"] + done["unknown"] == 5 and done["pending"] == done["sending"] == 0


def test_a_background_resume_of_a_run_whose_layout_no_longer_compiles_pauses(
    runner, session, engine, tmp_path, imported
):
    add_contacts(session, [{"email": "ana@example.com", "first_name": "Ana"}])
    campaign = create(session)
    run = start_run(session, campaign.id)
    run.state, run.note = "paused", "paused by request"
    session.execute(update(LayoutVersion).values(html=LAYOUT.replace("{{ subject }}", "{{ subject | nosuchfilter }}")))
    session.commit()
    resumed = runner.invoke(args=["campaigns", "resume", str(campaign.id)])
    assert resumed.exit_code == 0, resumed.output
    current = wait_for_state(runner, campaign.id, "paused")
    assert current["note"] == (
        "paused: pack 'test-pack': layout 'mail' v1, HTML line 2: template error: no filter named 'nosuchfilter'"
        + FROZEN
    )
    assert session.scalars(select(Delivery.status)).all() == ["pending"]


def test_a_worker_process_that_dies_pauses_the_run_with_the_reason(app, runner, session, imported, smtp_server):
    add_contacts(session, [{"email": f"w{i:03d}@example.com", "first_name": f"W{i}"} for i in range(400)])
    campaign = create(session)
    session.commit()
    app.config["PATRON_DELIVERY_URL"] = f"{smtp_server.url}?max_rate=40"  # ten seconds of sending, at least
    started = runner.invoke(args=["campaigns", "send", str(campaign.id), "--workers", "2"])
    assert started.exit_code == 0, started.output
    driver = psutil.Process(int(started.output.split("(process ")[1].split(",")[0]))
    try:
        deadline = time.monotonic() + 60
        while len(smtp_server.messages) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = [p for p in driver.children() if any("spawn_main" in part for part in p.cmdline())]
        logs = [log.read_text() for log in (Path(app.instance_path) / "logs").iterdir()]
        assert workers, (len(smtp_server.messages), logs)
        workers[0].kill()  # what the kernel's out-of-memory killer does
        current = wait_for_state(runner, campaign.id, "paused")
    finally:
        kill_tree(driver)  # only if it outlived the test
    assert current["state"] == "paused", current
    assert current["note"].startswith("paused: a worker process died (BrokenProcessPool: ")
    assert current["note"].endswith("); resume carries on") and current["sent"] < 400


def kill_tree(process: psutil.Process) -> None:
    try:
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass


def test_status_pauses_a_run_whose_killed_sender_was_never_reaped(runner, session, imported):
    # Under a container's init that reaps nothing, a sender killed with SIGKILL stays a zombie: dead, not sending.
    add_contacts(session, [{"email": "ana@example.com", "first_name": "Ana"}])
    campaign = create(session)
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        zombie.kill()
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.01)
        run = start_run(session, campaign.id)
        run.state, run.owner = "sending", f"{socket.gethostname()}:{zombie.pid}"
        session.commit()
        current = json.loads(runner.invoke(args=["campaigns", "status", str(campaign.id), "--json"]).output)
    finally:
        zombie.wait()
    assert current["state"] == "paused"
    assert current["note"] == f"paused: the process sending it ({run.owner}) stopped; resume carries on"


def test_status_pauses_a_run_whose_sending_process_is_gone(runner, session, imported):
    add_contacts(session, [{"email": "ana@example.com", "first_name": "Ana"}])
    campaign = create(session)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that existed and is no more
    run = start_run(session, campaign.id)
    run.state, run.owner = "sending", f"{socket.gethostname()}:{gone.pid}"
    session.commit()
    current = json.loads(runner.invoke(args=["campaigns", "status", str(campaign.id), "--json"]).output)
    assert current["state"] == "paused"
    assert current["note"] == f"paused: the process sending it ({run.owner}) stopped; resume carries on"
