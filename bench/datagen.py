"""Deterministic, realistic audience data: customers, point-of-sale purchases, call-centre calls.

The same seed and reference date always give the same bytes. Everything streams:
contacts are generated one at a time and events in blocks of a few thousand
contacts, so memory stays flat however many rows are asked for.

    python3 bench/datagen.py --contacts 100000 --out bench/out [--events-per-contact 3] [--seed 42]

writes ``customers.csv`` (the ``patron contacts import`` format),
``pos_events.csv`` (``patron events import --channel pos``; joins contacts by
loyalty card only) and ``call_centre_events.jsonl`` (``patron events import
--channel call_centre``; joins by phone or email). docs/imports.md describes the
formats. From Python (``import datagen`` with bench/ on ``sys.path``) the same
data comes as generators: :func:`people`, :func:`contact_rows`,
:func:`pos_events` and :func:`call_centre_events`.

Event times lie in the 180 days (calls: 90 days) before a fixed reference date,
not before "now", so that output never depends on the clock. Within a file,
events are sorted by time within each block of contacts, like a day's exports
concatenated.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import random
import sys
import time
import unicodedata
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

DEFAULT_SEED = 42
REFERENCE = datetime(2026, 11, 20, tzinfo=timezone.utc)
DEFAULT_EVENTS_PER_CONTACT = 3.0
DEFAULT_CALLS_PER_CONTACT = 0.5
PURCHASE_DAYS = 180
CALL_DAYS = 90
# Every contact's phone number ends in a number unique to that contact (see _subscriber).
MAX_CONTACTS = 8_000_000
BLOCK = 5_000  # contacts whose events are generated, sorted and written together

INTEREST_TAGS = ("pizza", "pasta", "vegan", "wine", "desserts", "coffee", "family", "delivery")
TAG_WEIGHTS = {
    "pizza": 22,
    "pasta": 16,
    "coffee": 14,
    "desserts": 12,
    "wine": 10,
    "delivery": 10,
    "family": 9,
    "vegan": 7,
}
TIERS = (("bronze", 62), ("silver", 27), ("gold", 11))
# Gold members shop about twice as often as average, bronze a little less.
TIER_FREQUENCY = {"bronze": 0.8, "silver": 1.15, "gold": 1.9}
VIP_SHARE = {"bronze": 0.005, "silver": 0.04, "gold": 0.35}
PHONE_SHARE, CARD_SHARE, CONSENT_SHARE = 0.60, 0.70, 0.80
LAPSING_SHARE = 0.22  # cardholders who stopped coming: nothing bought in the last 65 days
LAPSED_AFTER_DAYS = 65
ORPHAN_PURCHASE_SHARE = 0.02  # purchases on loyalty cards that no contact holds
UNKNOWN_CALLER_SHARE = 0.03  # calls from numbers that no contact has
CALL_REASONS = (("order", 35), ("delivery", 25), ("complaint", 25), ("allergy question", 15))
CALL_MINUTES = {"order": (2, 8), "delivery": (2, 10), "complaint": (4, 25), "allergy question": (3, 12)}
AGENTS = (
    "Aisha K.",
    "Ben T.",
    "Carmen R.",
    "Dominique L.",
    "Elena V.",
    "Fatima B.",
    "Greta H.",
    "Hiroshi N.",
    "Inés P.",
    "João M.",
    "Kwame O.",
    "Lukas W.",
)
# Price range in cents of one purchase, by what was bought.
PRICES = {
    "pizza": (800, 2800),
    "pasta": (900, 2400),
    "vegan": (800, 2200),
    "wine": (1200, 6000),
    "desserts": (400, 1200),
    "coffee": (200, 700),
    "family": (2500, 7000),
    "delivery": (1200, 4500),
}
# Local opening hours, weighted: (first second of the window, its length in seconds, weight).
SHOP_HOURS = (
    (8 * 3600, 2 * 3600, 5),
    (int(11.5 * 3600), 3 * 3600, 45),
    (15 * 3600, 2 * 3600, 10),
    (int(18.5 * 3600), int(3.5 * 3600), 40),
)
CALL_HOURS = ((9 * 3600, 11 * 3600, 1),)

# Only reserved example domains (RFC 2606) and their subdomains: never a real mailbox.
COMMON_DOMAINS = (("example.com", 40), ("example.org", 20), ("example.net", 20))
# Fictional London numbers (Ofcom's drama range): no contact is given one.
UNKNOWN_CALLER_PREFIX = "+44207946"

CUSTOMER_COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "locale",
    "timezone",
    "phone",
    "id:pos",
    "attr:city",
    "attr:tier",
    "attr:birth_year",
    "attr:vip",
    "attr:signup_date",
    *(f"interest:{tag}" for tag in INTEREST_TAGS),
    "consent:marketing",
    "consent:tracking",
    "consent:profiling",
)
POS_COLUMNS = ("id", "type", "occurred_at", "id:pos", "prop:store", "prop:amount", "prop:category")

# Standard-time UTC offsets in hours; summer time is ignored, which only shifts local hours by one.
UTC_OFFSET = {
    "America/New_York": -5,
    "America/Detroit": -5,
    "America/Chicago": -6,
    "America/Denver": -7,
    "America/Phoenix": -7,
    "America/Los_Angeles": -8,
    "America/Anchorage": -9,
    "Pacific/Honolulu": -10,
    "Europe/London": 0,
    "Europe/Madrid": 1,
    "Atlantic/Canary": 0,
    "Europe/Paris": 1,
    "Europe/Berlin": 1,
    "America/Mexico_City": -6,
    "America/Monterrey": -6,
    "America/Tijuana": -8,
    "America/Merida": -6,
    "America/Cancun": -5,
    "America/Hermosillo": -7,
    "America/Chihuahua": -6,
    "America/Sao_Paulo": -3,
    "America/Bahia": -3,
    "America/Recife": -3,
    "America/Fortaleza": -3,
    "America/Manaus": -4,
}


class Locale(NamedTuple):
    weight: int
    country_code: str
    mobile_prefixes: tuple[str, ...]  # national prefixes; empty where the city's area code is used
    cities: tuple[tuple[str, str, int, tuple[str, ...]], ...]  # name, time zone, weight, area prefixes
    first_names: str
    last_names: str
    double_surname_share: float
    store_names: tuple[str, str]
    local_domain: str
    interest_boost: dict[str, float]


def _mx(area: str) -> tuple[str, ...]:
    return (area + "1", area + "2", area + "3") if len(area) == 2 else (area,)


def _br(ddd: str) -> tuple[str, ...]:
    return tuple(f"{ddd}9{d}" for d in "6789")


LOCALES: dict[str, Locale] = {
    "en": Locale(
        30,
        "+1",
        (),
        (
            ("New York", "America/New_York", 20, ("212", "646", "917")),
            ("Los Angeles", "America/Los_Angeles", 14, ("213", "310", "323")),
            ("Chicago", "America/Chicago", 12, ("312", "773")),
            ("Houston", "America/Chicago", 9, ("713", "832")),
            ("Phoenix", "America/Phoenix", 6, ("602", "480")),
            ("Philadelphia", "America/New_York", 6, ("215", "267")),
            ("Seattle", "America/Los_Angeles", 6, ("206",)),
            ("Denver", "America/Denver", 6, ("303", "720")),
            ("Boston", "America/New_York", 6, ("617", "857")),
            ("Atlanta", "America/New_York", 6, ("404", "678")),
            ("Miami", "America/New_York", 5, ("305", "786")),
            ("Detroit", "America/Detroit", 2, ("313",)),
            ("Anchorage", "America/Anchorage", 1, ("907",)),
            ("Honolulu", "Pacific/Honolulu", 1, ("808",)),
        ),
        "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan "
        "Joseph Jessica Thomas Sarah Christopher Karen Daniel Emily Matthew Ashley Anthony Megan Andrew Hannah "
        "Joshua Olivia Tyler Madison Brandon Chloe Kevin Grace Jordan Taylor Marcus Keisha",
        "Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Thomas Moore Jackson Martin Lee "
        "Thompson White Harris Clark Lewis Robinson Walker Young Allen King Wright Scott Hill Green Adams Baker "
        "Nelson Carter Mitchell Roberts Turner Phillips Campbell Parker Evans O'Brien Nguyen Kim Patel Washington",
        0.0,
        ("Downtown", "Uptown"),
        "inbox.example.com",
        {"coffee": 1.2, "delivery": 1.5},
    ),
    "en-GB": Locale(
        15,
        "+44",
        tuple(f"7{d}" for d in (*range(40, 60), 73, 77, 78, 79, *range(80, 100))),
        (
            ("London", "Europe/London", 35, ()),
            ("Manchester", "Europe/London", 12, ()),
            ("Birmingham", "Europe/London", 12, ()),
            ("Leeds", "Europe/London", 8, ()),
            ("Glasgow", "Europe/London", 8, ()),
            ("Liverpool", "Europe/London", 6, ()),
            ("Bristol", "Europe/London", 6, ()),
            ("Edinburgh", "Europe/London", 6, ()),
            ("Cardiff", "Europe/London", 4, ()),
            ("Belfast", "Europe/London", 3, ()),
        ),
        "Oliver Amelia George Isla Harry Ava Jack Mia Charlie Sophie Thomas Emily Oscar Poppy William Ella James "
        "Freya Alfie Lily Henry Grace Archie Evie Leo Florence Joshua Charlotte Alexander Ruby Rhys Niamh Callum "
        "Eilidh Priya Mohammed",
        "Smith Jones Williams Taylor Davies Brown Evans Wilson Thomas Johnson Roberts Robinson Thompson Wright "
        "Walker White Edwards Hughes Green Hall Wood Harris Lewis Martin Jackson Clarke Turner Hill Scott Cooper "
        "Morris Ward Moore King Watson Baker Harrison Morgan Patel Khan MacDonald Campbell Stewart O'Neill",
        0.0,
        ("High Street", "Station"),
        "inbox.example.com",
        {"delivery": 1.4, "vegan": 1.4},
    ),
    "es": Locale(
        14,
        "+34",
        ("60", "61", "62", "63", "64", "65", "66", "67", "68", "69", "71", "72"),
        (
            ("Madrid", "Europe/Madrid", 30, ()),
            ("Barcelona", "Europe/Madrid", 25, ()),
            ("Valencia", "Europe/Madrid", 12, ()),
            ("Sevilla", "Europe/Madrid", 10, ()),
            ("Málaga", "Europe/Madrid", 7, ()),
            ("Zaragoza", "Europe/Madrid", 6, ()),
            ("Bilbao", "Europe/Madrid", 6, ()),
            ("Palma", "Europe/Madrid", 4, ()),
            ("Las Palmas de Gran Canaria", "Atlantic/Canary", 4, ()),
        ),
        "Antonio María Manuel Carmen José Ana Francisco Laura David Isabel Javier Lucía Daniel Marta Carlos "
        "Cristina Jesús Paula Alejandro Elena Miguel Sara Rafael Raquel Pablo Pilar Sergio Nuria Jorge Alba "
        "Álvaro Irene Adrián Rocío Iñaki Montserrat Jordi Begoña",
        "García Rodríguez González Fernández López Martínez Sánchez Pérez Gómez Martín Jiménez Ruiz Hernández "
        "Díaz Moreno Muñoz Álvarez Romero Alonso Gutiérrez Navarro Torres Domínguez Vázquez Ramos Gil Ramírez "
        "Serrano Blanco Molina Morales Suárez Ortega Delgado Castro Ortiz Rubio Marín Sanz Iglesias",
        0.7,
        ("Centro", "Norte"),
        "correo.example.com",
        {"family": 1.5, "wine": 1.3},
    ),
    "es-MX": Locale(
        12,
        "+52",
        (),
        (
            ("Ciudad de México", "America/Mexico_City", 35, _mx("55")),
            ("Guadalajara", "America/Mexico_City", 15, _mx("33")),
            ("Monterrey", "America/Monterrey", 15, _mx("81")),
            ("Puebla", "America/Mexico_City", 8, _mx("222")),
            ("Tijuana", "America/Tijuana", 7, _mx("664")),
            ("Mérida", "America/Merida", 5, _mx("999")),
            ("Cancún", "America/Cancun", 5, _mx("998")),
            ("Hermosillo", "America/Hermosillo", 4, _mx("662")),
            ("Chihuahua", "America/Chihuahua", 3, _mx("614")),
        ),
        "José Guadalupe Juan María Luis Fernanda Carlos Ximena Jorge Valeria Alejandro Daniela Miguel_Ángel "
        "Sofía Francisco Camila Ricardo Regina Eduardo Mariana Fernando Andrea Diego Itzel Jesús Gabriela "
        "Arturo Alejandra Emiliano Paola Santiago Renata Héctor Verónica Rodrigo Brenda",
        "Hernández García Martínez López González Pérez Rodríguez Sánchez Ramírez Cruz Flores Gómez Morales "
        "Vázquez Reyes Jiménez Torres Díaz Gutiérrez Ruiz Mendoza Aguilar Ortiz Moreno Castillo Romero Álvarez "
        "Méndez Chávez Rivera Juárez Ramos Domínguez Herrera Medina Castro Guzmán Velázquez Rojas Contreras",
        0.7,
        ("Centro", "Norte"),
        "correo.example.com",
        {"family": 1.6, "delivery": 1.3},
    ),
    "fr": Locale(
        10,
        "+33",
        tuple(f"{a}{b}" for a in "67" for b in "0123456789"),
        (
            ("Paris", "Europe/Paris", 35, ()),
            ("Lyon", "Europe/Paris", 12, ()),
            ("Marseille", "Europe/Paris", 12, ()),
            ("Toulouse", "Europe/Paris", 9, ()),
            ("Bordeaux", "Europe/Paris", 7, ()),
            ("Lille", "Europe/Paris", 7, ()),
            ("Nice", "Europe/Paris", 6, ()),
            ("Nantes", "Europe/Paris", 6, ()),
            ("Strasbourg", "Europe/Paris", 6, ()),
        ),
        "Jean Marie Pierre Nathalie Michel Isabelle Philippe Sylvie Nicolas Catherine François Sophie Julien "
        "Céline Thomas Camille Antoine Léa Maxime Chloé Hugo Manon Lucas Inès Louis Juliette Théo Émilie "
        "Gabriel Margaux Arthur Élodie Raphaël Hélène Jérôme Aurélie",
        "Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon Laurent Lefebvre Michel "
        "Garcia David Bertrand Roux Vincent Fournier Morel Girard André Lefèvre Mercier Dupont Lambert Bonnet "
        "François Legrand Garnier Faure Rousseau Blanc Guérin Muller Henry Roussel Perrin Morin Mathieu Clément",
        0.0,
        ("Centre", "Gare"),
        "courriel.example.net",
        {"wine": 2.0, "desserts": 1.3},
    ),
    "de": Locale(
        10,
        "+49",
        (
            "151",
            "152",
            "157",
            "160",
            "162",
            "163",
            "170",
            "171",
            "172",
            "173",
            "174",
            "175",
            "176",
            "177",
            "178",
            "179",
        ),
        (
            ("Berlin", "Europe/Berlin", 25, ()),
            ("Hamburg", "Europe/Berlin", 15, ()),
            ("München", "Europe/Berlin", 15, ()),
            ("Köln", "Europe/Berlin", 12, ()),
            ("Frankfurt am Main", "Europe/Berlin", 10, ()),
            ("Stuttgart", "Europe/Berlin", 8, ()),
            ("Düsseldorf", "Europe/Berlin", 7, ()),
            ("Leipzig", "Europe/Berlin", 5, ()),
            ("Dresden", "Europe/Berlin", 3, ()),
        ),
        "Thomas Sabine Michael Petra Andreas Monika Stefan Susanne Peter Claudia Klaus Andrea Jürgen Birgit "
        "Frank Katrin Markus Julia Christian Anna Tobias Laura Jan Lena Lukas Sophie Felix Hannah Maximilian "
        "Lea Jonas Marie Florian Katharina Sebastian Jörg Günter Ursula",
        "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Koch Bauer Richter "
        "Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann Lange Schmitt Werner "
        "Schmitz Krause Meier Lehmann Köhler Herrmann König Walter Huber Kaiser Fuchs Peters Scholz Möller Weiß "
        "Jung Hahn Vogel Friedrich Keller Günther Berger Winkler Roth Beck Lorenz Baumann Böhm Winter",
        0.0,
        ("Mitte", "Hauptbahnhof"),
        "post.example.org",
        {"coffee": 1.5, "vegan": 1.5},
    ),
    "pt-BR": Locale(
        9,
        "+55",
        (),
        (
            ("São Paulo", "America/Sao_Paulo", 35, _br("11")),
            ("Rio de Janeiro", "America/Sao_Paulo", 20, _br("21")),
            ("Belo Horizonte", "America/Sao_Paulo", 10, _br("31")),
            ("Brasília", "America/Sao_Paulo", 8, _br("61")),
            ("Curitiba", "America/Sao_Paulo", 7, _br("41")),
            ("Porto Alegre", "America/Sao_Paulo", 6, _br("51")),
            ("Salvador", "America/Bahia", 6, _br("71")),
            ("Recife", "America/Recife", 5, _br("81")),
            ("Fortaleza", "America/Fortaleza", 5, _br("85")),
            ("Manaus", "America/Manaus", 3, _br("92")),
        ),
        "João Maria José Ana Francisco Francisca Antônio Antônia Carlos Adriana Paulo Juliana Pedro Márcia "
        "Lucas Fernanda Luiz Patrícia Marcos Aline Luís Sandra Gabriel Camila Rafael Amanda Daniel Bruna "
        "Marcelo Jéssica Bruno Letícia Eduardo Júlia Felipe Beatriz Thiago Larissa Gustavo Mariana",
        "Silva da_Silva Santos dos_Santos Oliveira de_Oliveira Souza de_Souza Rodrigues Ferreira Alves Pereira "
        "Lima Gomes Costa Ribeiro Martins Carvalho Almeida Lopes Soares Fernandes Vieira Barbosa Rocha Dias "
        "Nascimento Andrade Moreira Nunes Marques Machado Mendes Freitas Cardoso Ramos Gonçalves Santana "
        "Teixeira Araújo Azevedo Cavalcanti Pinto Monteiro",
        0.3,
        ("Centro", "Shopping"),
        "caixa.example.net",
        {"pizza": 1.4, "desserts": 1.3},
    ),
}


class Person(NamedTuple):
    """One generated customer; ``days_since_signup`` and ``lapsing`` shape their events."""

    number: int
    email: str
    first_name: str
    last_name: str
    locale: str
    timezone: str
    phone: str | None
    card: str | None  # loyalty card, the ``id:pos`` identity
    city: str
    tier: str
    birth_year: int
    vip: bool
    signup_date: str
    interests: tuple[tuple[str, float], ...]
    consent: bool
    days_since_signup: int
    lapsing: bool
    stores: tuple[str, str]


def _weighted(pairs) -> list:
    """A list where each item appears ``weight`` times: index it with ``int(random() * len)``."""
    return [item for item, weight in pairs for _ in range(weight)]


def _slug(name: str) -> str:
    """The ASCII letters of a name, lower-cased, as people type them in email addresses."""
    folded = unicodedata.normalize("NFKD", name.replace("ß", "ss"))
    return "".join(c for c in folded.lower() if "a" <= c <= "z")


def _names(words: str) -> list[tuple[str, str]]:
    return [(w.replace("_", " "), _slug(w)) for w in words.split()]


def _subscriber(number: int) -> str:
    """Seven digits unique to contact ``number`` (a bijection below MAX_CONTACTS), never starting 0 or 1."""
    return str(2_000_000 + (number * 4_567_891) % MAX_CONTACTS)


def _card(number: int) -> str:
    return f"POS-{number:07d}"


def _geometric(rng_value: float, log_q: float) -> int:
    """A count with mean q/(1-q), from one uniform draw: many customers come rarely, a few often."""
    return int(math.log(1.0 - rng_value) / log_q)


def _log_q(mean: float) -> float:
    return math.log(mean / (1.0 + mean)) if mean > 0 else -math.inf


class _LocalePools(NamedTuple):
    code: str
    locale: Locale
    first: list[tuple[str, str]]
    last: list[tuple[str, str]]
    cities: list[tuple[str, str, tuple[str, ...], tuple[str, str]]]
    interest_sets: list[tuple[str, ...]]
    domains: list[str]


def _interest_sets(rng: random.Random, boost: dict[str, float], size: int = 2048) -> list[tuple[str, ...]]:
    """A pool of 1–4 distinct tags, drawn by weight: rows pick from it instead of sampling each time."""
    weights = {tag: TAG_WEIGHTS[tag] * boost.get(tag, 1.0) for tag in INTEREST_TAGS}
    sizes = _weighted(((1, 35), (2, 35), (3, 20), (4, 10)))
    pool = []
    for _ in range(size):
        left = dict(weights)
        chosen = []
        for _ in range(sizes[int(rng.random() * len(sizes))]):
            pick = rng.random() * sum(left.values())
            for tag in left:
                pick -= left[tag]
                if pick < 0:
                    break
            chosen.append(tag)
            del left[tag]
        pool.append(tuple(chosen))
    return pool


def _stores(city: str, loc: Locale) -> tuple[str, str]:
    return tuple(f"{city} {suffix}" for suffix in loc.store_names)


def _pools(rng: random.Random) -> dict[str, _LocalePools]:
    pools = {}
    for code, loc in LOCALES.items():
        cities = _weighted(
            ((name, tz, prefixes or loc.mobile_prefixes, _stores(name, loc)), w) for name, tz, w, prefixes in loc.cities
        )
        domains = _weighted((*COMMON_DOMAINS, (loc.local_domain, 20)))
        pools[code] = _LocalePools(
            code,
            loc,
            _names(loc.first_names),
            _names(loc.last_names),
            cities,
            _interest_sets(rng, loc.interest_boost),
            domains,
        )
    return pools


def _email_local(first: str, last: str, pick: float) -> str:
    # Names hold no digits, so the contact number that follows keeps every address unique.
    if pick < 0.35:
        return f"{first}.{last}"
    if pick < 0.55:
        return f"{first}{last}"
    if pick < 0.70:
        return f"{first[0]}{last}"
    if pick < 0.82:
        return f"{first}_{last}"
    if pick < 0.92:
        return f"{last}.{first}"
    return f"{first}.{last}."


def people(n: int, seed: int = DEFAULT_SEED, reference: datetime = REFERENCE) -> Iterator[Person]:
    """Yield ``n`` customers, numbered 1..n, the same ones for the same seed and reference date."""
    if not 0 <= n <= MAX_CONTACTS:
        raise ValueError(f"datagen makes between 0 and {MAX_CONTACTS:,} contacts (phone numbers must stay unique)")
    rng = random.Random(f"patron-datagen:{seed}:people")
    rand = rng.random
    pools = _pools(rng)
    locales = _weighted((pools[code], loc.weight) for code, loc in LOCALES.items())
    tiers = _weighted(TIERS)
    scores = [i / 10 for i in range(101)]
    ref_day = reference.date()
    signup_dates = [(ref_day - timedelta(days=d)).isoformat() for d in range(2401)]
    ref_year = ref_day.year
    for number in range(1, n + 1):
        pool = locales[int(rand() * len(locales))]
        loc = pool.locale
        first, first_slug = pool.first[int(rand() * len(pool.first))]
        last, last_slug = pool.last[int(rand() * len(pool.last))]
        if loc.double_surname_share and rand() < loc.double_surname_share:
            second = pool.last[int(rand() * len(pool.last))][0]
            if second != last:
                last = f"{last} {second}"
        local = _email_local(first_slug, last_slug, rand())
        email = f"{local}{number}@{pool.domains[int(rand() * len(pool.domains))]}"
        city, tz, prefixes, stores = pool.cities[int(rand() * len(pool.cities))]
        phone = None
        if rand() < PHONE_SHARE:
            phone = loc.country_code + prefixes[int(rand() * len(prefixes))] + _subscriber(number)
        card = _card(number) if rand() < CARD_SHARE else None
        tier = tiers[int(rand() * len(tiers))]
        # Adults up to about 75, most of them under 45.
        r = rand()
        birth_year = ref_year - 18 - int(rand() * 14 + 44 * r * r)
        days = int(2400 * rand() ** 1.8)  # more recent sign-ups than old ones: the list grows
        tags = pool.interest_sets[int(rand() * len(pool.interest_sets))]
        # Scores cluster around the middle: a triangular draw on 0-10.
        interests = tuple([(tag, scores[int((rand() + rand()) * 50.5)]) for tag in tags])
        yield Person(
            number,
            email,
            first,
            last,
            pool.code,
            tz,
            phone,
            card,
            city,
            tier,
            birth_year,
            rand() < VIP_SHARE[tier],
            signup_dates[days],
            interests,
            rand() < CONSENT_SHARE,
            days,
            days > LAPSED_AFTER_DAYS and rand() < LAPSING_SHARE,
            stores,
        )


_SCORE_TEXT = {i / 10: f"{i / 10:.1f}" for i in range(101)}
_TAG_CELL = {tag: CUSTOMER_COLUMNS.index(f"interest:{tag}") for tag in INTEREST_TAGS}


def _privacy_consents(email: str) -> tuple[str, str]:
    """consent:tracking (about 85% yes, 10% no, 5% unanswered) and consent:profiling (75/15/10).

    Drawn from a digest of the address, not the shared random stream, so adding them left every
    other column and the event files byte for byte as they were.
    """
    digest = hashlib.sha256(email.encode()).digest()

    def answer(byte: int, yes: float, no: float) -> str:
        share = byte / 256
        return "true" if share < yes else "false" if share < yes + no else ""

    return answer(digest[0], 0.85, 0.10), answer(digest[1], 0.75, 0.15)


def _customer_cells(p: Person) -> list[str]:
    cells = [
        p.email,
        p.first_name,
        p.last_name,
        p.locale,
        p.timezone,
        p.phone or "",
        p.card or "",
        p.city,
        p.tier,
        str(p.birth_year),
        "true" if p.vip else "false",
        p.signup_date,
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "true" if p.consent else "false",
        *_privacy_consents(p.email),
    ]
    for tag, score in p.interests:
        cells[_TAG_CELL[tag]] = _SCORE_TEXT[score]
    return cells


def contact_rows(n: int, seed: int = DEFAULT_SEED, reference: datetime = REFERENCE) -> Iterator[dict[str, str]]:
    """Yield ``n`` rows of customers.csv as dicts keyed by column; an empty cell is ``""``."""
    for p in people(n, seed, reference):
        yield dict(zip(CUSTOMER_COLUMNS, _customer_cells(p), strict=True))


class _Clock:
    """Turns (days before the reference, local second of the day, time zone) into ISO-8601 UTC text, fast."""

    def __init__(self, reference: datetime, days: int):
        reference = reference.astimezone(timezone.utc)
        self.reference = int(reference.timestamp())
        midnight = datetime.combine(reference.date(), datetime.min.time(), timezone.utc)
        self.midnight = int(midnight.timestamp())
        self.base = self.midnight - (days + 2) * 86400
        self.days = [(midnight.date() - timedelta(days=d)).isoformat() for d in range(days + 2, -2, -1)]
        self.hms = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400)]

    def at(self, days_ago: int, local_second: int, tz: str) -> int:
        ts = self.midnight - days_ago * 86400 + local_second - UTC_OFFSET[tz] * 3600
        while ts >= self.reference:  # an evening in the Americas can fall after it: a day earlier, then
            ts -= 86400
        return ts

    def iso(self, ts: int) -> str:
        day, second = divmod(ts - self.base, 86400)
        return f"{self.days[day]}T{self.hms[second]}Z"


def _hours(rng: random.Random, windows) -> list[int]:
    """A pool of local seconds of the day, drawn by the weight of each opening window."""
    weighted = _weighted(((start, span), w) for start, span, w in windows)
    picks = [weighted[int(rng.random() * len(weighted))] for _ in range(4096)]
    return [start + int(rng.random() * span) for start, span in picks]


def _blocks(n: int, seed: int, reference: datetime) -> Iterator[list[Person]]:
    block = []
    for p in people(n, seed, reference):
        block.append(p)
        if len(block) == BLOCK:
            yield block
            block = []
    if block:
        yield block


def _reference(reference: datetime) -> datetime:
    if reference.tzinfo is None:
        raise ValueError("the reference date must be timezone-aware")
    return reference


def pos_events(
    contacts: int,
    events_per_contact: float = DEFAULT_EVENTS_PER_CONTACT,
    seed: int = DEFAULT_SEED,
    reference: datetime = REFERENCE,
) -> Iterator[list[str]]:
    """Yield pos_events.csv rows (lists in POS_COLUMNS order): about ``events_per_contact`` × ``contacts``."""
    reference = _reference(reference)
    rng = random.Random(f"patron-datagen:{seed}:pos")
    rand = rng.random
    clock = _Clock(reference, PURCHASE_DAYS)
    hours = _hours(rng, SHOP_HOURS)
    all_tags = _weighted(TAG_WEIGHTS.items())
    every_store = [store for loc in LOCALES.values() for city, *_ in loc.cities for store in _stores(city, loc)]
    # Cardholders carry all purchases, so each buys more than the per-contact average.
    log_q = {tier: _log_q(events_per_contact / CARD_SHARE * f) for tier, f in TIER_FREQUENCY.items()}
    orphan_cards = max(1, contacts // 100)
    orphan_odds = ORPHAN_PURCHASE_SHARE / (1 - ORPHAN_PURCHASE_SHARE)
    receipt = 0
    n_tags, n_stores, n_hours = len(all_tags), len(every_store), len(hours)
    for block in _blocks(contacts, seed, reference):
        rows = []
        for p in block:
            if p.card is None:
                continue
            card, interests, (home, second) = p.card, p.interests, p.stores
            # Never before they signed up; for those who lapsed, nothing in the last LAPSED_AFTER_DAYS.
            first_day = LAPSED_AFTER_DAYS if p.lapsing else 0
            span = min(PURCHASE_DAYS, max(p.days_since_signup, 1)) - first_day
            for _ in range(_geometric(rand(), log_q[p.tier])):
                # Mostly what they said they like; sometimes anything on the menu.
                if rand() < 0.7:
                    tag = interests[int(rand() * len(interests))][0]
                else:
                    tag = all_tags[int(rand() * n_tags)]
                # Mostly their usual store, now and then one on the way or while travelling.
                r = rand()
                store = home if r < 0.70 else second if r < 0.97 else every_store[int(rand() * n_stores)]
                ts = clock.at(first_day + int(rand() * span), hours[int(rand() * n_hours)], p.timezone)
                rows.append((ts, card, store, tag))
                if rand() < orphan_odds:
                    orphan = _card(contacts + 1 + int(rand() * orphan_cards))
                    ts = clock.at(int(rand() * PURCHASE_DAYS), hours[int(rand() * n_hours)], "Europe/London")
                    rows.append((ts, orphan, every_store[int(rand() * n_stores)], all_tags[int(rand() * n_tags)]))
        rows.sort()
        iso = clock.iso
        for ts, card, store, tag in rows:
            receipt += 1
            low, high = PRICES[tag]
            cents = low + int(rand() * (high - low))
            yield [f"R{receipt:010d}", "purchase", iso(ts), card, store, f"{cents // 100}.{cents % 100:02d}", tag]


def call_centre_events(
    contacts: int,
    calls_per_contact: float = DEFAULT_CALLS_PER_CONTACT,
    seed: int = DEFAULT_SEED,
    reference: datetime = REFERENCE,
) -> Iterator[dict]:
    """Yield call-centre events as JSON-ready dicts: about ``calls_per_contact`` × ``contacts`` calls."""
    reference = _reference(reference)
    rng = random.Random(f"patron-datagen:{seed}:calls")
    rand = rng.random
    clock = _Clock(reference, CALL_DAYS)
    hours = _hours(rng, CALL_HOURS)
    reasons = _weighted(CALL_REASONS)
    # Customers who stopped coming often left after a complaint.
    unhappy = _weighted((("complaint", 45), ("order", 20), ("delivery", 20), ("allergy question", 15)))
    log_q = _log_q(calls_per_contact)
    unknown_odds = UNKNOWN_CALLER_SHARE / (1 - UNKNOWN_CALLER_SHARE)
    ticket = 0
    for block in _blocks(contacts, seed, reference):
        calls = []
        for p in block:
            span = min(CALL_DAYS, max(p.days_since_signup, 1))
            for _ in range(_geometric(rand(), log_q)):
                who = ("phone", p.phone) if p.phone and rand() < 0.85 else ("email", p.email)
                pool = unhappy if p.lapsing else reasons
                ts = clock.at(int(rand() * span), hours[int(rand() * len(hours))], p.timezone)
                calls.append((ts, who, pool[int(rand() * len(pool))]))
                if rand() < unknown_odds:
                    ts = clock.at(int(rand() * CALL_DAYS), hours[int(rand() * len(hours))], "Europe/London")
                    who = ("phone", f"{UNKNOWN_CALLER_PREFIX}{int(rand() * 1000):04d}")
                    calls.append((ts, who, reasons[int(rand() * len(reasons))]))
        calls.sort()
        for ts, (key, value), reason in calls:
            ticket += 1
            lo, hi = CALL_MINUTES[reason]
            yield {
                "id": f"CC{ticket:08d}",
                "type": "call",
                "occurred_at": clock.iso(ts),
                key: value,
                "properties": {
                    "reason": reason,
                    "agent": AGENTS[int(rand() * len(AGENTS))],
                    "minutes": lo + int(rand() * (hi - lo + 1)),
                },
            }


def _csv_writer(fh):
    return csv.writer(fh, lineterminator="\n")


def write_customers(path, n: int, seed: int = DEFAULT_SEED, reference: datetime = REFERENCE) -> int:
    """Write customers.csv with ``n`` contacts; returns the number of rows."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = _csv_writer(fh)
        writer.writerow(CUSTOMER_COLUMNS)
        writer.writerows(_customer_cells(p) for p in people(n, seed, reference))
    return n


def write_pos_events(
    path,
    contacts: int,
    events_per_contact: float = DEFAULT_EVENTS_PER_CONTACT,
    seed: int = DEFAULT_SEED,
    reference: datetime = REFERENCE,
) -> int:
    """Write pos_events.csv for the first ``contacts`` customers; returns the number of events."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = _csv_writer(fh)
        writer.writerow(POS_COLUMNS)
        for row in pos_events(contacts, events_per_contact, seed, reference):
            writer.writerow(row)
            count += 1
    return count


def write_call_centre_events(
    path,
    contacts: int,
    calls_per_contact: float = DEFAULT_CALLS_PER_CONTACT,
    seed: int = DEFAULT_SEED,
    reference: datetime = REFERENCE,
) -> int:
    """Write call_centre_events.jsonl for the first ``contacts`` customers; returns the number of calls."""
    count = 0
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    with open(path, "w", encoding="utf-8", newline="") as fh:
        for event in call_centre_events(contacts, calls_per_contact, seed, reference):
            fh.write(dumps(event) + "\n")
            count += 1
    return count


def write_all(
    out_dir,
    contacts: int,
    events_per_contact: float = DEFAULT_EVENTS_PER_CONTACT,
    calls_per_contact: float = DEFAULT_CALLS_PER_CONTACT,
    seed: int = DEFAULT_SEED,
    reference: datetime = REFERENCE,
) -> dict[str, int]:
    """Write the three files into ``out_dir``; returns rows written per file name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "customers.csv": write_customers(out / "customers.csv", contacts, seed, reference),
        "pos_events.csv": write_pos_events(out / "pos_events.csv", contacts, events_per_contact, seed, reference),
        "call_centre_events.jsonl": write_call_centre_events(
            out / "call_centre_events.jsonl", contacts, calls_per_contact, seed, reference
        ),
    }


def parse_reference(text: str) -> datetime:
    """A date (``2026-11-20``) or an ISO-8601 time; without an offset it is UTC."""
    value = (
        datetime.fromisoformat(text.replace("Z", "+00:00"))
        if "T" in text
        else datetime.combine(date.fromisoformat(text), datetime.min.time())
    )
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, required=True, help="how many customers")
    parser.add_argument("--out", type=Path, required=True, help="directory for the three files")
    parser.add_argument(
        "--events-per-contact",
        type=float,
        default=DEFAULT_EVENTS_PER_CONTACT,
        help="point-of-sale purchases per customer, on average (default %(default)s)",
    )
    parser.add_argument(
        "--calls-per-contact",
        type=float,
        default=DEFAULT_CALLS_PER_CONTACT,
        help="call-centre calls per customer, on average (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="same seed, same files (default %(default)s)")
    parser.add_argument(
        "--reference",
        type=parse_reference,
        default=REFERENCE,
        help="events lie in the days before this date (default 2026-11-20)",
    )
    args = parser.parse_args(argv)
    if args.contacts < 0 or args.contacts > MAX_CONTACTS:
        parser.error(f"--contacts must be between 0 and {MAX_CONTACTS:,}")
    if args.events_per_contact < 0 or args.calls_per_contact < 0:
        parser.error("--events-per-contact and --calls-per-contact must not be negative")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = (
        ("customers.csv", write_customers, ()),
        ("pos_events.csv", write_pos_events, (args.events_per_contact,)),
        ("call_centre_events.jsonl", write_call_centre_events, (args.calls_per_contact,)),
    )
    for name, write, volume in jobs:
        started = time.perf_counter()
        rows = write(args.out / name, args.contacts, *volume, args.seed, args.reference)
        print(f"{args.out / name}: {rows:,} rows in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
