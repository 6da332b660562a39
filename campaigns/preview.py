"""One recipient's email as a run would build it now, with the reasons for each block."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.models import Run
from campaigns.pipeline import Assembly, Rendered, load_profiles
from campaigns.runs import CampaignError, audience_rules, checked_content, get_campaign
from content.rendering import Inliner
from delivery.tracking import LinkSigner
from segments.compiler import segment_filter
from segments.db import utcnow
from segments.imports.values import BadValue
from segments.imports.values import email as canonical_email
from segments.models import Contact


@dataclass
class Preview:
    """What the contact would get, and whether they would get it."""

    email: str
    in_audience: bool
    skip: str | None
    rendered: Rendered


def preview(session: Session, campaign_id: int, email: str, *, signer: LinkSigner, half_life_days: float) -> Preview:
    """Render the campaign for the contact with ``email`` without sending or recording anything.

    CampaignError when the contact does not exist or the campaign's templates have problems (each named).
    """
    campaign = get_campaign(session, campaign_id)
    content = checked_content(session, campaign_id)
    try:
        address = canonical_email(email)  # any spelling of the address: an xn-- domain, upper case
    except BadValue as exc:
        raise CampaignError(f"--contact: {exc}") from None
    contact_id = session.scalar(select(Contact.id).where(Contact.email == address))
    if contact_id is None:
        raise CampaignError(f"there is no contact with the email address {email!r}")
    rules = audience_rules(session, campaign.definition)
    run = Run(id=0, campaign_id=campaign.id, rules=rules, content=content)
    now = utcnow()
    assembly = Assembly(session, run, signer=signer, inliner=Inliner(), half_life_days=half_life_days, now=now)
    where = segment_filter(rules, dialect_name=session.get_bind().dialect.name, now=now, half_life_days=half_life_days)
    in_audience = session.scalar(select(Contact.id).where(Contact.id == contact_id, where)) is not None
    profile = load_profiles(session, [contact_id], assembly, now)[contact_id]
    rendered = assembly.render(0, profile, assembly.choose(profile))
    return Preview(email=profile.contact["email"], in_audience=in_audience, skip=profile.skip, rendered=rendered)
