"""`patron demo`: the main job on embedded defaults, run twice."""

import email
import email.policy
import re
from pathlib import Path
from urllib.parse import urlsplit

import lxml.html
from sqlalchemy import func, select

from delivery.models import Response
from segments.db import utcnow
from segments.interests import decayed_score
from segments.models import Contact, Event, Identity, Interest, Segment


def test_demo_imports_the_audience_and_counts_the_example_segments(runner, session, app):
    first = runner.invoke(args=["demo"])
    assert first.exit_code == 0, first.output
    assert "Imported customers from customers.csv: 1200 rows, 1200 created" in first.output
    contacts = session.scalar(select(func.count()).select_from(Contact))
    events = session.scalar(select(func.count()).select_from(Event))
    # Purchases joined customers by loyalty card alone: most events have a contact with an email.
    joined = session.scalar(select(func.count()).select_from(Event).join(Contact).where(Contact.email.is_not(None)))
    assert joined > 0.9 * events
    assert session.scalar(select(func.count()).select_from(Identity).where(Identity.channel == "pos")) > 800
    names = set(session.scalars(select(Segment.name)))
    assert {"spanish-pizza-lovers", "gold-regulars", "recent-complaints"} <= names
    printed = dict(re.findall(r"^  ([a-z-]+)\s+([\d,]+)  ", first.output, re.M))
    assert set(printed) == names
    assert all(int(count.replace(",", "")) > 0 for count in printed.values())

    # Then it sends the weekly campaign: one email per consenting customer, in the outbox.
    outbox = Path(app.instance_path) / "outbox" / "new"
    sent = int(re.search(r"finished: ([\d,]+) sent", first.output).group(1).replace(",", ""))
    assert sent > 900 and len(list(outbox.iterdir())) == sent
    assert re.search(r"^  \S+@\S+ +es +\S+, \S+, \S+$", first.output, re.M)  # a Spanish reader's three blocks
    # Every email's footer: the unsubscribe page and, beside it, the same page at its preference form.
    message = email.message_from_bytes(next(outbox.iterdir()).read_bytes(), policy=email.policy.default)
    unsubscribe = next(p.strip(" <>") for p in str(message["List-Unsubscribe"]).split(",") if "http" in p)
    footer = lxml.html.fromstring(message.get_body(("html",)).get_content()).xpath("//a/@href")
    assert unsubscribe in footer and f"{unsubscribe}#preferences" in footer
    assert f"{unsubscribe}#preferences" in message.get_body(("plain",)).get_content().split()
    page = lxml.html.fromstring(app.test_client().get(urlsplit(unsubscribe).path).text)
    assert page.get_element_by_id("preferences").tag == "form"

    # Readers open, click, buy, unsubscribe and bounce through the endpoints; the report and a profile show it.
    answers = dict(
        re.findall(r"(opens|clicks|conversions|one-click unsubscribes|bounces) \d+ \((\d+) × \d+\)", first.output)
    )
    statuses = re.findall(r"(\w[\w -]*?) \d+ \(\d+ × (\d+)\)", first.output)
    assert {status for _, status in statuses} <= {"200", "201", "302"}, statuses
    recorded = dict(
        session.execute(
            select(Response.kind, func.count()).where(Response.machine.is_(False)).group_by(Response.kind)
        ).all()
    )
    machine_opens = session.scalar(select(func.count()).select_from(Response).where(Response.machine.is_(True)))
    assert recorded["click"] == int(answers["clicks"]) > 0
    assert recorded["open"] + machine_opens == int(answers["opens"])
    assert recorded["conversion"] == int(answers["conversions"]) > 0
    assert recorded["unsubscribe"] == 1 and recorded["bounce"] == 1
    assert re.search(r"^clicked \(human\) +(\d+) +(\d+)", first.output, re.M).group(2) == answers["clicks"]
    # The block table is cut to the most clicked, and says so.
    heading = re.search(
        r"^by block: the (\d+) most clicked of (\d+) blocks shown \(`patron campaigns report \d+`", first.output, re.M
    )
    assert heading and 0 < int(heading.group(1)) <= 8 < int(heading.group(2))
    table = first.output[heading.end() :].split("\n\n", 1)[0].splitlines()[1:]
    assert (
        len([row for row in table if row.strip() and not set(row.strip()) <= set("-  ")]) == int(heading.group(1)) + 1
    )
    # One customer's interests, before and after their click and purchase: the clicked block's tags went up.
    before = dict(re.findall(r"(\w+) ([\d.]+)", re.search(r"^  before: (.*)$", first.output, re.M).group(1)))
    after = dict(re.findall(r"(\w+) ([\d.]+)", re.search(r"^  after: +(.*)$", first.output, re.M).group(1)))
    raised = [tag for tag in after if float(after[tag]) > float(before.get(tag, 0)) + 0.5]
    assert raised, (before, after)

    imported = select(func.count()).select_from(Event).where(Event.channel != "email")  # responses are email events
    imported_events = session.scalar(imported)
    second = runner.invoke(args=["demo"])
    assert second.exit_code == 0, second.output
    # The same customers file again changes nobody, and keeps the one-click unsubscribe of run 1.
    assert "1200 rows, 0 created, 0 updated, 0 rejected, 1200 unchanged" in second.output
    assert "kept own choices (not changed by the file): consent:marketing 1" in second.output
    # ... and what run 1's click and purchase taught stays: the featured customer's raised scores.
    featured = re.search(r"^(\S+) clicked the block", first.output, re.M).group(1)
    session.commit()  # a fresh snapshot: see what the second run committed
    now = utcnow()
    rows = session.execute(
        select(Interest.tag, Interest.score, Interest.updated_at).join(Contact).where(Contact.email == featured)
    )
    learned = {
        tag: decayed_score(score, at, now, app.config["PATRON_INTEREST_HALF_LIFE_DAYS"]) for tag, score, at in rows
    }
    assert all(learned[tag] >= float(after[tag]) - 0.05 for tag in raised), (after, learned)
    assert "2695 rows, 0 created, 0 updated, 0 rejected, 2695 duplicates" in second.output
    assert session.scalar(select(func.count()).select_from(Contact)) == contacts
    assert session.scalar(imported) == imported_events
    # Next week's email: a new run, to the same people but the one who unsubscribed and the one who bounced.
    again = int(re.search(r"finished: ([\d,]+) sent", second.output).group(1).replace(",", ""))
    assert again == sent - 2
    assert len(list(outbox.iterdir())) == sent + again


def test_demo_without_examples_says_where_it_looked(runner, tmp_path):
    result = runner.invoke(args=["demo", "--examples", str(tmp_path)])
    assert result.exit_code == 1
    assert str(tmp_path) in result.output and "customers.csv" in result.output
