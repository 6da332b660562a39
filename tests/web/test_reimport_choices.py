"""A re-import from the CRM never undoes what the customer chose themselves, nor what Patron learned.

Through the real ``patron contacts import``, the real preference page and one-click unsubscribe, and the
next message as the recipient's mail client reads it.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from campaigns.executors import execute_run
from campaigns.runs import start_run
from delivery.learning import raise_interests
from delivery.models import Delivery
from segments.db import utcnow
from segments.interests import decayed_score
from segments.models import Consent, Contact, Interest
from tests.campaigns.conftest import add_campaign, worker_config
from tests.web.test_preferences import page_of, submit
from tests.web.tracking_fixtures import read_mail

HALF_LIFE = 30.0  # the default PATRON_INTEREST_HALF_LIFE_DAYS


def import_file(runner, tmp_path, text: str, *, as_json: bool = True):
    """Run ``patron contacts import`` on ``text``: its --json summary, or its printed output."""
    path = tmp_path / "crm.csv"
    path.write_text(text)
    result = runner.invoke(args=["contacts", "import", str(path), *(["--json"] if as_json else [])])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if as_json else result.stdout


def consents_of(session, email: str) -> dict[str, tuple[bool, str]]:
    session.commit()  # a fresh snapshot: see what the app and the CLI committed
    rows = session.execute(
        select(Consent.purpose, Consent.granted, Consent.source).join(Contact).where(Contact.email == email)
    )
    return {purpose: (granted, source) for purpose, granted, source in rows}


def send_again(session, engine, tmp_path, name: str) -> dict:
    """Send a new campaign through the real pipeline; each recipient's mail as their client reads it."""
    session.commit()
    run = start_run(session, add_campaign(session, name=name).id)
    session.commit()
    outbox = tmp_path / name
    execute_run(worker_config(engine, tmp_path, f"outbox://{outbox}"), run.id)
    session.commit()
    ids = dict(session.execute(select(Delivery.email, Delivery.id).where(Delivery.run_id == run.id)).all())
    mails = [read_mail(path.read_bytes(), ids) for path in sorted((outbox / "new").iterdir())]
    return {mail.email: mail for mail in mails}


def test_an_import_never_grants_back_tracking_the_person_withdrew_on_the_preference_page(
    runner, client, sent, session, engine, tmp_path
):
    assert sent["bob@example.com"].pixel and sent["bob@example.com"].clicks  # tracking granted: tracked
    page = page_of(client.get(sent["bob@example.com"].unsubscribe))
    assert submit(client, page, {"tracking": None}).status_code == 303  # Bob unticks tracking

    report = import_file(
        runner,
        tmp_path,
        "email,consent:marketing,consent:tracking,consent:profiling\n"
        "bob@example.com,yes,yes,yes\n"
        "ana@example.com,yes,no,yes\n",
    )

    bob, ana = consents_of(session, "bob@example.com"), consents_of(session, "ana@example.com")
    assert bob["tracking"] == (False, "preference_page")  # the person's own answer, and its proof
    assert bob["profiling"] == (True, "import")  # a purpose Bob never withdrew may be granted
    assert bob["marketing"] == (True, "test")  # the same answer again keeps its proof
    assert ana["tracking"] == (False, "import")  # an import may always withdraw
    assert report["kept_own_choices"] == {"consent:tracking": 1}
    assert (report["updated"], report["unchanged"]) == (2, 0)  # both got profiling, never withdrawn
    mails = send_again(session, engine, tmp_path, "next-week")
    for address in ("bob@example.com", "ana@example.com"):
        assert mails[address].pixel is None and mails[address].clicks == []  # no open pixel, no tracked link

    again = import_file(runner, tmp_path, "email,consent:tracking\nbob@example.com,1\n", as_json=False)
    assert consents_of(session, "bob@example.com")["tracking"] == (False, "preference_page")
    assert "0 updated, 0 rejected, 1 unchanged" in again
    assert "kept own choices (not changed by the file): consent:tracking 1" in again


def test_an_import_never_resubscribes_after_a_one_click_unsubscribe(runner, client, sent, session, tmp_path):
    answer = client.post(sent["ana@example.com"].unsubscribe, data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200

    report = import_file(runner, tmp_path, "email,consent:marketing\nana@example.com,true\nbob@example.com,false\n")

    assert consents_of(session, "ana@example.com")["marketing"] == (False, "one_click")
    assert consents_of(session, "bob@example.com")["marketing"] == (False, "import")
    assert session.scalar(select(Contact.status).where(Contact.email == "ana@example.com")) == "unsubscribed"
    assert report["kept_own_choices"] == {"consent:marketing": 1}


def test_the_language_and_interests_chosen_on_the_page_outrank_the_import(
    runner, client, sent, session, engine, tmp_path
):
    crm = "email,locale,interest:pasta,interest:pizza\nbob@example.com,pt-BR,7.1,1\n"
    assert import_file(runner, tmp_path, crm)["updated"] == 1  # the CRM's view: pasta 7.1 (ticked)
    page = page_of(client.get(sent["bob@example.com"].unsubscribe))
    assert "pasta" in page.xpath("//ul[@id='interests']//input[@checked]/@value")
    assert submit(client, page, {"locale": "es", "interests": []}).status_code == 303  # es; pasta unticked

    report = import_file(runner, tmp_path, crm.replace(",7.1,1", ",8.5,2"))  # the CRM changed both scores

    session.commit()
    bob, locale = session.execute(select(Contact.id, Contact.locale).where(Contact.email == "bob@example.com")).one()
    scores = dict(session.execute(select(Interest.tag, Interest.score).where(Interest.contact_id == bob)).all())
    assert (locale, scores["pasta"], scores["pizza"]) == ("es", 0.0, 2.0)
    assert report["kept_own_choices"] == {"locale": 1, "interest:pasta": 1}
    assert report["updated"] == 1  # pizza, which Bob never touched on the page, follows the CRM
    page = page_of(client.get(sent["bob@example.com"].unsubscribe))
    assert page.get("lang") == "es" and "pasta" not in page.xpath("//ul[@id='interests']//input[@checked]/@value")
    mail = send_again(session, engine, tmp_path, "next-week")["bob@example.com"]
    assert session.scalar(select(Delivery.locale).where(Delivery.id == mail.delivery_id)) == "es"


def test_reimporting_an_unchanged_file_keeps_what_clicks_taught(runner, session, tmp_path):
    crm = "email,interest:vegan,interest:pizza\nana@example.com,2.6,4\nbob@example.com,1,1\n"
    assert import_file(runner, tmp_path, crm)["created"] == 2
    session.commit()
    ana = session.scalar(select(Contact.id).where(Contact.email == "ana@example.com"))
    raise_interests(session, ana, {"vegan": 1.0}, 6.0, now=utcnow(), half_life_days=HALF_LIFE)  # clicks taught
    learned = interest(session, ana, "vegan")

    report = import_file(runner, tmp_path, crm)

    assert interest(session, ana, "vegan") == learned  # the score, and the time it decays from
    assert decayed_score(*learned, utcnow(), HALF_LIFE) > 8.5  # 2.6 + 6, not 2.6 again
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 0, 2)

    changed = import_file(runner, tmp_path, crm.replace("2.6,4", "3,4"))  # the CRM changed vegan

    score, updated_at = interest(session, ana, "vegan")
    assert score == 3.0 and updated_at > learned[1]
    assert interest(session, ana, "pizza")[0] == 4.0
    assert (changed["updated"], changed["unchanged"]) == (1, 1)


def interest(session, contact_id: int, tag: str) -> tuple[float, object]:
    """The stored (score, updated_at), as committed."""
    session.commit()
    query = select(Interest.score, Interest.updated_at).where(Interest.contact_id == contact_id, Interest.tag == tag)
    return tuple(session.execute(query).one())
