"""The preference page ("tell us once"): served in the contact's language, every choice stored, the next run uses it."""

from __future__ import annotations

import lxml.html
import pytest
from sqlalchemy import select

from campaigns.executors import execute_run
from campaigns.runs import start_run
from content.models import Block, BlockVersion
from delivery.models import Delivery
from segments.models import Consent, Contact, Event, Interest
from segments.preferences import STATED_INTEREST_SCORE, Preferences, save_preferences
from tests.campaigns.conftest import add_campaign, worker_config
from tests.web.tracking_fixtures import app_for
from web import db


def page_of(answer):
    assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
    return lxml.html.fromstring(answer.get_data(as_text=True))


def submit(client, page, changes: dict, button: str = "save", **kwargs):
    """Post the preference form as a browser would: its own values (with the CSRF token) plus ``changes``."""
    form = page.get_element_by_id("preferences")
    fields = {}
    for name, value in form.form_values():
        fields.setdefault(name, []).append(value)
    for name, value in changes.items():
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value if isinstance(value, list) else [value]
    fields[button] = [page.get_element_by_id(button).get("value")]
    return client.post(form.get("action"), data=fields, **kwargs)


def contact(session, email) -> Contact:
    session.commit()  # ends the read transaction: see what the app committed
    return session.scalar(select(Contact).where(Contact.email == email))


@pytest.mark.parametrize(
    "locale, lang, heading",
    [
        ("es-MX", "es", "Darse de baja"),
        ("fr-CA", "fr", "Se désabonner"),
        ("de-AT", "de", "Abmelden"),
        ("ja", "en", "Unsubscribe"),
    ],
)
def test_the_page_speaks_the_contacts_language_through_the_cldr_chain(client, sent, session, locale, lang, heading):
    person = contact(session, "bob@example.com")
    person.locale = locale
    session.commit()
    page = page_of(client.get(sent["bob@example.com"].unsubscribe))
    assert page.get("lang") == lang
    assert page.xpath("string(//h1)") == heading
    names = dict(zip(page.xpath("//ul[@id='locale']//input/@value"), page.xpath("//ul[@id='locale']//label/text()")))
    assert names == {"en": "English", "es": "Español"}  # the packs' locales, each named in itself (Babel)


def test_the_form_shows_the_contacts_current_answers(client, sent):
    page = page_of(client.get(sent["ana@example.com"].unsubscribe))
    assert page.xpath("//ul[@id='locale']//input[@checked]/@value") == ["es"]  # es-MX reads es
    assert page.xpath("//ul[@id='interests']//input/@value") == ["news", "pasta", "pizza"]  # the packs' tags
    assert page.xpath("//ul[@id='frequency']//input[@checked]/@value") == ["none"]
    assert page.xpath("//input[@id='marketing']/@checked") and not page.xpath("//input[@id='profiling']/@checked")


def test_saving_stores_each_choice_with_its_source_and_an_event(client, sent, session):
    page = page_of(client.get(sent["bob@example.com"].unsubscribe))
    answer = submit(
        client,
        page,
        {"locale": "es", "interests": ["pizza"], "frequency": "weekly", "profiling": "y", "marketing": None},
        environ_base={"REMOTE_ADDR": "198.51.100.4"},
    )
    assert answer.status_code == 303
    saved = page_of(client.get(answer.headers["Location"]))
    assert saved.get("lang") == "es" and saved.get_element_by_id("notice") is not None
    bob = contact(session, "bob@example.com")
    assert (bob.locale, bob.frequency_cap) == ("es", {"max": 1, "days": 7})
    consents = {c.purpose: c for c in session.scalars(select(Consent).where(Consent.contact_id == bob.id))}
    assert (consents["marketing"].granted, consents["profiling"].granted) == (False, True)
    for purpose in ("marketing", "profiling"):
        assert consents[purpose].source == "preference_page"
        assert consents[purpose].ip == "198.51.100.4" and consents[purpose].text_version
    scores = dict(session.execute(select(Interest.tag, Interest.score).where(Interest.contact_id == bob.id)).all())
    assert scores["pizza"] == STATED_INTEREST_SCORE
    event = session.scalar(select(Event).where(Event.contact_id == bob.id, Event.type == "preferences"))
    assert (event.channel, event.source) == ("email", "preference_page")
    assert event.properties["frequency"] == "weekly" and event.properties["interests_added"] == ["pizza"]


def test_without_the_csrf_token_nothing_changes(client, sent, session):
    page = page_of(client.get(sent["bob@example.com"].unsubscribe))
    assert submit(client, page, {"csrf_token": None, "frequency": "monthly"}).status_code == 400
    assert contact(session, "bob@example.com").frequency_cap is None


def test_a_choice_the_page_did_not_offer_is_refused(client, sent, session):
    page = page_of(client.get(sent["bob@example.com"].unsubscribe))
    answer = submit(client, page, {"frequency": "hourly", "interests": ["pizza", "<script>"], "locale": "xx"})
    assert answer.status_code == 400
    assert page_of(client.get(sent["bob@example.com"].unsubscribe)) is not None
    bob = contact(session, "bob@example.com")
    assert (bob.frequency_cap, bob.locale) == (None, "en")
    assert session.scalar(select(Interest).where(Interest.contact_id == bob.id, Interest.tag == "pizza")) is None


def test_the_unsubscribe_button_of_the_form_unsubscribes_with_the_page_as_source(client, sent, session):
    page = page_of(client.get(sent["bob@example.com"].unsubscribe))
    answer = submit(client, page, {}, button="unsubscribe")
    assert page_of(answer).get_element_by_id("unsubscribed") is not None
    assert contact(session, "bob@example.com").status == "unsubscribed"
    again = page_of(client.get(sent["bob@example.com"].unsubscribe))
    assert again.xpath("//form[@id='one-click']") == [] and again.xpath("//input[@id='marketing']") == []


def test_the_client_ip_is_the_proxys_forwarded_one_only_when_proxy_hops_says_so(
    engine, tmp_path, monkeypatch, sent, session
):
    for hops, expected in ((0, "10.0.0.1"), (1, "203.0.113.7")):
        app = app_for(engine, tmp_path, monkeypatch, PATRON_PROXY_HOPS=hops)
        browser = app.test_client()
        page = page_of(browser.get(sent["bob@example.com"].unsubscribe))
        choice = None if page.xpath("//input[@id='tracking']/@checked") else "y"  # a change, so a consent is written
        submit(
            browser,
            page,
            {"tracking": choice},
            headers={"X-Forwarded-For": "203.0.113.7"},
            environ_base={"REMOTE_ADDR": "10.0.0.1"},
        )
        db.dispose(app)
        session.commit()  # ends the read transaction: see what the app committed
        bob = contact(session, "bob@example.com")
        assert session.get(Consent, (bob.id, "tracking")).ip == expected


def test_the_next_run_uses_the_stated_language_and_interest(client, sent, session, engine, tmp_path):
    page = page_of(client.get(sent["bob@example.com"].unsubscribe))
    submit(client, page, {"locale": "es", "interests": ["pizza"]})  # bob had pasta 4, unticked (score < stated/2)
    session.commit()  # a fresh snapshot before writing (SQLite)
    campaign = add_campaign(session, name="Next week")
    run = start_run(session, campaign.id)
    session.commit()
    execute_run(worker_config(engine, tmp_path, f"outbox://{tmp_path / 'outbox2'}"), run.id)
    session.commit()  # ends the read transaction: see what the app committed
    delivery = session.scalar(select(Delivery).where(Delivery.run_id == run.id, Delivery.email == "bob@example.com"))
    assert delivery.locale == "es"
    keys = session.execute(
        select(Block.key, Block.locale)
        .join(BlockVersion, BlockVersion.block_id == Block.id)
        .where(BlockVersion.id.in_(delivery.blocks))
    ).all()
    assert {locale for _key, locale in keys} == {"es"}
    assert any(key.startswith("pizza") for key, _locale in keys)


def test_a_stated_interest_never_lowers_a_higher_learned_score(session, sent):
    bob = contact(session, "bob@example.com")
    session.add(Interest(contact_id=bob.id, tag="pizza", score=50.0))
    session.commit()
    changes = save_preferences(
        session,
        bob,
        Preferences(interests=frozenset({"pizza", "pasta"}), frequency="none", consents={}),
        offered_tags=["pizza", "pasta"],
        source="preference_page",
        ip=None,
        text_version="v",
        half_life_days=30.0,
    )
    assert changes == {"interests_added": ["pasta"]}  # pizza was already ticked (50 ≥ stated/2)
    assert session.get(Interest, (bob.id, "pizza")).score == 50.0
    with pytest.raises(ValueError, match="frequency"):
        save_preferences(
            session,
            bob,
            Preferences(frequency="daily"),
            offered_tags=[],
            source="x",
            ip=None,
            text_version="v",
            half_life_days=30.0,
        )
