"""Identity resolution: which contact each imported row is about, in a few queries per batch.

Rows name people by identities: an email, a phone, a loyalty card. Rows in a
batch that share any identity are one person; a person found by any identity
is updated, one found by none is created. Nothing is merged silently: a row
whose identities point at two different contacts is rejected with the reason.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, case, false, func, insert, null, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite

from segments import privacy  # the module, not its names: privacy imports segments.imports itself
from segments.imports.bulk import Bulk
from segments.models import Consent, Contact, Identity, Interest
from segments.suppressions import status_for, suppressed_reasons

EMAIL = "email"
PROFILE_FIELDS = ("first_name", "last_name", "locale", "timezone")

contacts = Contact.__table__
identities = Identity.__table__
interests = Interest.__table__
consents = Consent.__table__


@dataclass(slots=True)
class Claim:
    """What one row says about a person: who they are, and what to record."""

    line: int
    keys: list[tuple[str, str]]
    profile: dict[str, str] = field(default_factory=dict)
    attributes: dict = field(default_factory=dict)
    interests: dict[str, float] = field(default_factory=dict)
    consents: dict[str, bool] = field(default_factory=dict)


@dataclass(slots=True)
class Resolution:
    """Per claim: its contact id (None if rejected), whether this claim created it, whether the import
    changed anything of its contact; and per column (``locale``, ``interest:<tag>``, ``consent:<purpose>``)
    how many values were not applied because the person's own choice outranks them."""

    contact_ids: list[int | None]
    created: list[bool]
    rejected: dict[int, str]
    changed: list[bool] = field(default_factory=list)
    kept: Counter[str] = field(default_factory=Counter)


def describe(key: tuple[str, str]) -> str:
    channel, value = key
    return f"{channel} {value}" if channel in (EMAIL, "phone") else f"id:{channel} {value}"


def _groups(claims: list[Claim]) -> list[list[int]]:
    """Claims that share any identity, as lists of indexes in file order."""
    parent = list(range(len(claims)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple[str, str], int] = {}
    for index, claim in enumerate(claims):
        for key in claim.keys:
            other = owner.setdefault(key, index)
            if other != index:
                a, b = root(other), root(index)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = defaultdict(list)
    for index in range(len(claims)):
        members[root(index)].append(index)
    return list(members.values())


def _lookup(connection, claims: list[Claim]) -> dict[tuple[str, str], int]:
    """Identity → existing contact id, for every identity the claims name."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for claim in claims:
        for channel, value in claim.keys:
            wanted[channel].add(value)
    found: dict[tuple[str, str], int] = {}
    for channel, values in wanted.items():
        if channel == EMAIL:
            query = select(contacts.c.email, contacts.c.id).where(contacts.c.email.in_(values))
        else:
            query = select(identities.c.value, identities.c.contact_id).where(
                identities.c.channel == channel, identities.c.value.in_(values)
            )
        found.update(((channel, value), contact_id) for value, contact_id in connection.execute(query))
    return found


def resolve(connection, claims: list[Claim], *, now: datetime, source: str) -> Resolution:
    """Find or create the contact of every claim and record what the claims say."""
    known = _lookup(connection, claims)
    groups = _groups(claims)
    rejected: dict[int, str] = {}
    # contact id (existing) or None (new) for each group that stands
    standing: list[tuple[list[int], int | None, str | None]] = []
    for members in groups:
        keys = list(dict.fromkeys(key for i in members for key in claims[i].keys))
        owners: dict[int, tuple[str, str]] = {}
        for key in keys:
            if (owner := known.get(key)) is not None:
                owners.setdefault(owner, key)
        emails = [value for channel, value in keys if channel == EMAIL]
        problem = None
        if len(owners) > 1:
            problem = "identities belong to different contacts: " + ", ".join(
                f"{describe(key)} is contact {owner}" for owner, key in owners.items()
            )
        elif len(emails) > 1:
            problem = f"rows name one person with different emails: {', '.join(emails)}"
        if problem:
            rejected.update((i, problem) for i in members)
            continue
        owner, found_by = next(iter(owners.items()), (None, None))
        standing.append((members, owner, found_by, emails[0] if emails else None))

    existing = _existing(connection, [owner for _, owner, _, _ in standing if owner is not None])
    all_emails = [email for *_, email in standing if email]
    suppressed = suppressed_reasons(connection, all_emails) if all_emails else {}
    # An erased person's rows are rejected, not stored as a suppressed contact: erasure means we keep
    # nothing of them, and the rejects file (the importer's own input) and summary say why.
    erased = privacy.erased_emails(connection, all_emails)

    new_rows, accepted, updates = [], [], []
    changed: set[int] = set()  # existing contacts this batch changes
    kept: Counter[str] = Counter()
    for members, owner, found_by, email in standing:
        if email in erased:
            rejected.update((i, privacy.ERASED_REASON) for i in members)
            continue
        merged = _merge([claims[i] for i in members])
        status = status_for(suppressed[email]) if email in suppressed else None
        if owner is None:
            accepted.append((members, None, merged))
            profile = merged.profile
            new_rows.append(
                (
                    email,
                    profile.get("first_name"),
                    profile.get("last_name"),
                    profile.get("locale"),
                    profile.get("timezone"),
                    merged.attributes,
                    status or "active",
                )
            )
            continue
        current = existing[owner]
        if email and current.email and email != current.email:
            problem = f"{describe(found_by)} belongs to the contact with email {current.email}"
            rejected.update((i, problem) for i in members)
            continue
        update_row = _contact_update(owner, current, merged, email, status, kept)
        if update_row is not None:
            updates.append(update_row)
            changed.add(owner)
        accepted.append((members, owner, merged))

    contact_ids: list[int | None] = [None] * len(claims)
    created = [False] * len(claims)
    fresh = iter(_insert_contacts(connection, new_rows, now))
    identity_rows, interest_rows, consent_rows = [], [], []
    interest_claims, consent_claims = [], []  # about existing contacts: written only if they change something
    for members, owner, merged in accepted:
        is_new = owner is None
        contact_id = next(fresh) if is_new else owner
        for position, i in enumerate(members):
            contact_ids[i] = contact_id
            created[i] = is_new and position == 0
        for key in dict.fromkeys(key for i in members for key in claims[i].keys):
            if key[0] != EMAIL and key not in known:
                identity_rows.append((contact_id, key[0], key[1]))
                changed.add(contact_id)
        interests_of = interest_rows if is_new else interest_claims
        interests_of.extend((contact_id, tag, score, score) for tag, score in merged.interests.items())
        consents_of = consent_rows if is_new else consent_claims
        consents_of.extend((contact_id, purpose, granted) for purpose, granted in merged.consents.items())
    # A score is set only when the file's value differs from the one the last import gave (learned scores
    # survive an unchanged file), and never over a tag the person ticked or unticked themselves.
    interest_rows += _changes(
        connection,
        interests,
        "tag",
        interest_claims,
        changed,
        kept,
        same=lambda stored, score: stored.imported == score,
        chosen=lambda stored, _score: stored.chosen_at is not None,
        column="interest",
    )
    # An answer the contact already has keeps its proof; a purpose the person withdrew is never granted back.
    consent_rows += _changes(
        connection,
        consents,
        "purpose",
        consent_claims,
        changed,
        kept,
        same=lambda stored, granted: stored.granted == granted,
        chosen=lambda stored, granted: stored.own_choice and granted,
        column="consent",
    )
    _UPDATE_CONTACTS.execute(connection, updates, updated_at=now)
    add_identities, set_interests, set_consents = _UPSERTS[connection.dialect.name]
    add_identities.execute(connection, identity_rows, created_at=now)
    set_interests.execute(connection, interest_rows, updated_at=now)
    set_consents.execute(connection, consent_rows, source=source, recorded_at=now)
    return Resolution(contact_ids, created, rejected, [i in changed for i in contact_ids], kept)


def _contact_update(owner: int, current, merged: Claim, email: str | None, status: str | None, kept: Counter):
    """The _UPDATE_CONTACTS row for what ``merged`` changes of the existing contact ``current``, or None.

    A locale the person chose on the preference page is kept (counted in ``kept``); values equal to the
    stored ones are no change, so re-importing an unchanged file writes nothing.
    """
    profile = {name: value for name, value in merged.profile.items() if value != current._mapping[name]}
    if "locale" in profile and current.locale_chosen_at is not None:
        del profile["locale"]
        kept["locale"] += 1
    stored = current.attributes or {}
    attributes = None
    if any(name not in stored or not _same(stored[name], value) for name, value in merged.attributes.items()):
        attributes = {**stored, **merged.attributes}
    new_email = email if email and not current.email else None
    new_status = status if status and current.status == "active" else None
    if not (profile or attributes is not None or new_email or new_status):
        return None
    return (new_email, *(profile.get(name) for name in PROFILE_FIELDS), attributes, new_status, owner)


def _same(stored, value) -> bool:
    """Whether an attribute's stored JSON value is the file's value (``1``, ``1.0`` and ``true`` differ)."""
    return type(stored) is type(value) and stored == value


def _changes(
    connection, table, key: str, claims: list[tuple], changed: set[int], kept: Counter, *, same, chosen, column: str
) -> list:
    """The claims (contact_id, ``key``'s value, value, …) about existing contacts that the import writes.

    One query reads the batch's stored rows. A claim is left out when ``same(stored, value)`` (it would change
    nothing), and kept, counted in ``kept`` as ``<column>:<key's value>``, when ``chosen(stored, value)`` (the
    person's own choice outranks it). The rest are written, and their contacts marked ``changed``.
    """
    if not claims:
        return []
    query = select(table).where(
        table.c.contact_id.in_({row[0] for row in claims}), table.c[key].in_({row[1] for row in claims})
    )
    stored = {(row.contact_id, row._mapping[key]): row for row in connection.execute(query)}
    rows = []
    for row in claims:
        current = stored.get(row[:2])
        if current is not None and same(current, row[2]):
            continue
        if current is not None and chosen(current, row[2]):
            kept[f"{column}:{row[1]}"] += 1
            continue
        rows.append(row)
        changed.add(row[0])
    return rows


def _insert_contacts(connection, rows: list[tuple], now: datetime) -> list[int]:
    """Insert contacts (tuples in CONTACT_COLUMNS order) and return their ids in order."""
    with_email = [row for row in rows if row[0]]
    ids: dict[str, int] = {}
    if with_email:
        # One executemany, then the ids by email: SQLite cannot return ids of a
        # batched insert in order, and row-at-a-time RETURNING is 5x slower.
        _INSERT_CONTACTS.execute(connection, with_email, created_at=now, updated_at=now)
        query = select(contacts.c.email, contacts.c.id).where(contacts.c.email.in_([row[0] for row in with_email]))
        ids = dict(connection.execute(query).all())
    one = insert(contacts).returning(contacts.c.id)
    return [
        ids[row[0]]
        if row[0]
        else connection.execute(
            one, {**dict(zip(CONTACT_COLUMNS, row)), "created_at": now, "updated_at": now}
        ).scalar_one()
        for row in rows
    ]


def _existing(connection, ids: list[int]) -> dict:
    """Contact id → its row (email, status, attributes, profile fields, locale_chosen_at)."""
    if not ids:
        return {}
    query = select(
        contacts.c.id,
        contacts.c.email,
        contacts.c.status,
        contacts.c.attributes,
        *(contacts.c[name] for name in PROFILE_FIELDS),
        contacts.c.locale_chosen_at,
    ).where(contacts.c.id.in_(ids))
    return {row.id: row for row in connection.execute(query)}


def _merge(claims: list[Claim]) -> Claim:
    """One claim from several about the same person; later rows win."""
    if len(claims) == 1:
        return claims[0]
    merged = Claim(claims[0].line, [])
    for claim in claims:
        merged.profile.update(claim.profile)
        merged.attributes.update(claim.attributes)
        merged.interests.update(claim.interests)
        merged.consents.update(claim.consents)
    return merged


CONTACT_COLUMNS = ("email", *PROFILE_FIELDS, "attributes", "status")
_INSERT_CONTACTS = Bulk(insert(contacts), CONTACT_COLUMNS, shared=("created_at", "updated_at"))
# Empty cells leave what the contact has; COALESCE keeps it in one statement shape.
_UPDATE_CONTACTS = Bulk(
    update(contacts)
    .where(contacts.c.id == bindparam("contact_id"))
    .values(
        email=func.coalesce(contacts.c.email, bindparam("new_email")),
        **{
            name: func.coalesce(bindparam(f"new_{name}"), contacts.c[name])
            for name in PROFILE_FIELDS
            if name != "locale"
        },
        # A locale the person chose stays, also when they chose it after this batch read the contact.
        locale=case(
            (contacts.c.locale_chosen_at.is_(None), func.coalesce(bindparam("new_locale"), contacts.c.locale)),
            else_=contacts.c.locale,
        ),
        attributes=func.coalesce(bindparam("new_attributes", type_=contacts.c.attributes.type), contacts.c.attributes),
        status=func.coalesce(bindparam("new_status"), contacts.c.status),
    ),
    ["new_email", *(f"new_{name}" for name in PROFILE_FIELDS), "new_attributes", "new_status", "contact_id"],
    shared=("updated_at",),
)


def _upserts(dialect_insert) -> tuple[Bulk, Bulk, Bulk]:
    identity = dialect_insert(identities)
    interest = dialect_insert(interests)
    consent = dialect_insert(consents)
    return (
        Bulk(identity.on_conflict_do_nothing(), ("contact_id", "channel", "value"), shared=("created_at",)),
        Bulk(
            # The WHERE repeats the rule _changes applies, for a choice saved since it read.
            interest.on_conflict_do_update(
                index_elements=["contact_id", "tag"],
                set_={name: interest.excluded[name] for name in ("score", "imported", "updated_at")},
                where=interests.c.chosen_at.is_(None),
            ),
            ("contact_id", "tag", "score", "imported"),
            shared=("updated_at",),
        ),
        Bulk(
            # The proof is the import's now: no IP or wording version of an earlier answer stays with it.
            consent.on_conflict_do_update(
                index_elements=["contact_id", "purpose"],
                set_={
                    **{name: consent.excluded[name] for name in ("granted", "source", "recorded_at")},
                    "ip": null(),
                    "text_version": null(),
                    "own_choice": false(),
                },
                # Never over the person's own withdrawal, not even with the import's: that would clear own_choice,
                # and the next import could grant it back.
                where=or_(consents.c.own_choice == false(), consents.c.granted == true()),
            ),
            ("contact_id", "purpose", "granted"),
            shared=("source", "recorded_at"),
        ),
    )


_UPSERTS = {"sqlite": _upserts(sqlite.insert), "postgresql": _upserts(postgresql.insert)}
