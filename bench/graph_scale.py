"""Benchmark: the entity graph at 1,000,000 links across about 100,000 entities, full and incremental.

What it runs. A synthetic but mail-shaped store, deterministic (numpy, fixed seed), in a throwaway PostgreSQL
database ``atom_bench_<random>`` on 127.0.0.1:5432 (dropped afterwards unless ``--keep-db``):
* 200 mailboxes over the 365 days of 2001; about 400 organization domains (``organization:<domain>``) of
  Zipf-distributed size plus three free-mail domains (no ``works_at``); people ``person:first.last@<domain>``
  (display names "First Last", sometimes "Last, First", sometimes just the address); each mailbox belongs to
  one of its organization's most active people;
* per message: the mailbox's owner as sender (35%) or as a recipient, 1-4 To/Cc recipients, mostly from one
  organization (the owner's, 75%; 85% of the other participants come from it: the community structure real
  mail has), people picked by Zipf activity, mailboxes and organizations Zipf too; text entities: the first
  recipient greeted by first name, the sender's sign-off, a body name that is no participant
  (``person-name:<first>`` or ``person-name:<first last>``, for identity resolution to merge or refuse),
  money and date values, another organization in the subject or body;
* links made from each message's entity rows by the pipeline's own ``links_for_message`` (``sent_to``,
  ``cc_to``, ``works_at``, ``co_mention`` smaller key first), so every link end is an entity row of the same
  message and every message has a ``messages`` row (short plausible values, a sha256 ``content_hash``);
* 20% of the e-mails also sit in a second mailbox (a recipient's copy: same ``internet_message_id``, another
  Graph ``message_id``, the same entity rows and links), which the build must count once.
Messages are generated until the link rows reach ``--links`` (default 1,000,000; the people scale with it, so
distinct entities stay about a tenth of the links). They are written per mailbox through the store's bulk
path, ``MailStore.replace_partitions`` (COPY on PostgreSQL), over all 365 days of the mailbox.

Then three builds of ``build_entity_graph``, each in a fresh child process (this script with
``--child-build``), so that each peak RSS is that build's own:
1. full: the first build of the store (mode "full", reason "first build");
2. incremental: after one new mailbox-day (a mid-activity mailbox, 2002-01-01, about the average links of a
   mailbox-day, mostly people already in the graph plus two new ones) is written through the same
   ``replace_partitions``; it must run as "incremental" (the script exits 1 after printing if not);
3. forced full: the same data with ``GraphOptions(force_full=True)``, the baseline the incremental build is
   compared with (same data, same run: docs/architecture.md trusts such ratios more than absolute figures).
The exports and the picture go to a temporary directory, removed afterwards.

How to read the output.
* ``data``: what the database holds, counted there: messages rows, copies (rows minus distinct
  internet_message_ids), entity rows, distinct entity keys, link rows (by kind), and two consistency counts that
  must be 0 (link ends without an entity row of their message, entity rows without a message row). The load
  time (generation, then COPY) is printed but is not part of any measured figure.
* per build: wall = seconds of the ``build_entity_graph`` call alone (the child has imported everything and
  checked the store's schema before the clock starts); peak RSS = the child's
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` read right after the build, in GB of 10^9 bytes (the RSS before
  the build, imports included, is printed beside it); the report's seconds per stage, nodes, edges,
  copies_removed, mode and reason; the exports' file sizes.
* targets (full build): under 60 s and under 4 GB; the verdicts say "meets" or "MISSES", a measurement, not a
  failure. ``incremental / forced full`` is the wall-time ratio of the incremental build to the full one on the
  same data.
* the table at the end: full / incremental / forced full with wall s, peak GB, nodes, edges, mode.

    python bench/graph_scale.py [--links 1000000] [--keep-db] [--generate-only]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # atom_pipelines_tests is not installed: its database helper comes from the checkout
from atom_pipelines.entity_graph.links import links_for_message  # noqa: E402
from atom_pipelines.extraction import keys  # noqa: E402
from atom_pipelines.partitions import MailboxWindow  # noqa: E402
from atom_pipelines.provider_chain import HEURISTIC_MODEL  # noqa: E402
from atom_pipelines.store import schema  # noqa: E402
from atom_pipelines.store.resource import MailStore  # noqa: E402
from atom_pipelines_tests.conftest import ADMIN_URL, fresh_postgres_database  # noqa: E402

SEED = 20011001
MAILBOXES = 200
FIRST_DAY = dt.date(2001, 1, 1)
DAYS = 365
NEW_DAY = FIRST_DAY + dt.timedelta(days=DAYS)  # the incremental case's mailbox-day, after the last
ORGANIZATIONS = 400
#: People in the population per link asked for. With the activity skew below about half of them are ever
#: drawn; with the values and body names the distinct entity keys come to about a tenth of the links.
PEOPLE_PER_LINK = 0.16
FREE_MAIL = ("hotmail.com", "aol.com", "yahoo.com")
FREE_MAIL_SHARE = 0.04  # of the people
OWN_ORGANIZATION = 0.75  # a message's organization is its mailbox owner's
SAME_ORGANIZATION = 0.85  # each other participant comes from the message's organization
OWNER_SENDS = 0.35
RECIPIENTS = (1, 2, 3, 4)
RECIPIENT_SHARES = (0.5, 0.28, 0.14, 0.08)
CC_SHARE = 0.35  # of the recipients after the first
COPY_SHARE = 0.2
GREETING, SIGN_OFF, BODY_NAME, FULL_BODY_NAME = 0.5, 0.3, 0.3, 0.4
MONEY, DATE, OTHER_ORGANIZATION, IN_SUBJECT = 0.2, 0.25, 0.15, 0.3
LAST_FIRST, ADDRESS_ONLY = 0.12, 0.04  # how a display name is written
NEW_PEOPLE = 2  # people the incremental day brings that the graph has never seen
TARGET_SECONDS, TARGET_GB = 60.0, 4.0
CHUNK = 4096  # messages sampled at once
CANDIDATES = 8  # participants sampled per message (duplicates and the owner are skipped)
PROVIDER = "heuristic"

FIRST_NAMES = (
    "James John Robert Michael William David Richard Joseph Thomas Charles Christopher Daniel Matthew Anthony "
    "Mark Donald Steven Paul Andrew Joshua Kenneth Kevin Brian George Edward Ronald Timothy Jason Jeffrey Ryan "
    "Jacob Gary Nicholas Eric Jonathan Stephen Larry Justin Scott Brandon Frank Benjamin Gregory Samuel Raymond "
    "Patrick Alexander Jack Dennis Jerry Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah "
    "Karen Nancy Lisa Betty Margaret Sandra Ashley Kimberly Emily Donna Michelle Dorothy Carol Amanda Melissa "
    "Deborah Stephanie Rebecca Sharon Laura Cynthia Kathleen Amy Shirley Angela Helen Anna Brenda Pamela Nicole "
    "Emma Samantha Katherine Christine Debra Rachel Catherine Carolyn Janet Ruth Maria Heather Diane Virginia "
    "Julie Joyce Victoria Kelly Christina Lauren Joan Evelyn Olivia Judith Megan Cheryl Martha Andrea Frances "
    "Hannah Jacqueline Ann Gloria Jean Kathryn Alice Teresa Sara Janice Doris Madison Julia Grace Judy Abigail"
).split()
_SURNAME_STARTS = (
    "Bar Cal Dun El Fen Gar Hal Ker Lan Mar Nor Os Pel Ral Sen Tor Ul Var Wes Yar Bren Cor Dal Fair Grim Hart "
    "Kin Lind Mor Pem"
).split()
_SURNAME_ENDS = "ley son ton man berg ford wood ridge well stead ham ick er ard ing ey by lin ner ski".split()
SURNAMES = [start + end for start in _SURNAME_STARTS for end in _SURNAME_ENDS]
_ORG_WORDS = (
    "Apex Beacon Cedar Delta Ember Falcon Granite Harbor Iron Juniper Keystone Lumen Meridian Nimbus Orchid "
    "Pioneer Quarry Ridge Summit Tidal Union Vantage Willow Zenith Aspen Boulder Cobalt Dune Evergreen Frontier"
).split()
_ORG_KINDS = "Energy Capital Gas Power Partners Trading Resources Holdings Pipeline Utilities Systems Bank Law".split()
_TLDS = ("com",) * 8 + ("net", "org", "co.uk", "de", "com.au", "ca")
TOPICS = (
    "Gas nominations",
    "Q3 forecast",
    "Contract review",
    "Meeting tomorrow",
    "Deal ticket",
    "Credit exposure",
    "Pipeline capacity",
    "Invoice",
    "Draft agreement",
    "Trading limits",
    "Schedule change",
    "Follow-up",
)
#: People of the incremental day that no one in the population is: the surnames are not built from the syllables.
NEW_NAMES = (("Avery", "Quinlan"), ("Rowan", "Tessaro"), ("Marisol", "Okafor"), ("Dmitri", "Vasquez"))


# -- the population -------------------------------------------------------------------------------------------


@dataclass
class Population:
    """Organizations, their people (sorted by organization, most active first) and the mailbox owners."""

    domains: list[str]
    org_labels: list[str]
    org_free: np.ndarray  # bool per organization: a free-mail domain (no organization entity)
    org_weight: np.ndarray  # probability an organization is the one picked from outside
    org_start: np.ndarray  # the people of organization j are [org_start[j], org_start[j + 1])
    pick_bounds: np.ndarray  # j + cumulative activity share within j, per person: one searchsorted picks all
    person_org: list[int]
    address: list[str]
    first: list[str]
    display: list[str]
    owners: list[int]  # person index of each mailbox's owner
    mailbox_weight: np.ndarray
    day_weight: np.ndarray
    mailboxes_by_org: dict[int, list[int]] = field(default_factory=dict)

    def pick(self, orgs: np.ndarray, shares: np.ndarray) -> np.ndarray:
        """A person of each given organization, by activity: ``shares`` uniform in [0, 1)."""
        found = np.searchsorted(self.pick_bounds, orgs + shares, side="right")
        return np.clip(found, self.org_start[orgs], self.org_start[orgs + 1] - 1)

    def add_person(self, org: int, first: str, last: str) -> int:
        domain = self.domains[org]
        self.person_org.append(org)
        self.address.append(f"{first.lower()}.{last.lower()}@{domain}")
        self.first.append(first)
        self.display.append(f"{first} {last}")
        return len(self.address) - 1


def organization_domains(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """ORGANIZATIONS distinct domains that the pipeline's key rules read as organizations, with labels."""
    domains: list[str] = []
    labels: list[str] = []
    seen: set[str] = set()
    while len(domains) < ORGANIZATIONS:
        word = _ORG_WORDS[rng.integers(len(_ORG_WORDS))]
        kind = _ORG_KINDS[rng.integers(len(_ORG_KINDS))]
        surname = SURNAMES[rng.integers(len(SURNAMES))] if rng.random() < 0.5 else ""
        label = f"{surname} {word} {kind}".strip()
        domain = f"{label.replace(' ', '').lower()}.{_TLDS[rng.integers(len(_TLDS))]}"
        if domain in seen or keys.organization_domain(f"x@{domain}") != domain:
            continue
        seen.add(domain)
        domains.append(domain)
        labels.append(label)
    return domains, labels


def build_population(rng: np.random.Generator, people: int) -> Population:
    domains, labels = organization_domains(rng)
    org_people = people * (1 - FREE_MAIL_SHARE)
    zipf = 1.0 / np.arange(1, ORGANIZATIONS + 1)
    sizes = np.maximum(3, np.round(org_people * zipf / zipf.sum())).astype(int).tolist()
    sizes += [max(3, round(people * FREE_MAIL_SHARE / len(FREE_MAIL)))] * len(FREE_MAIL)
    domains += list(FREE_MAIL)
    labels += [d.split(".")[0].capitalize() for d in FREE_MAIL]
    free = np.array([False] * ORGANIZATIONS + [True] * len(FREE_MAIL))

    combos = len(FIRST_NAMES) * len(SURNAMES)
    person_org: list[int] = []
    address: list[str] = []
    first: list[str] = []
    display: list[str] = []
    bounds: list[np.ndarray] = []
    starts = [0]
    for org, (domain, size) in enumerate(zip(domains, sizes, strict=True)):
        # A big organization runs out of first.last pairs: a middle initial (first.m.last) tells them apart.
        pool = combos if size <= combos // 2 else combos * 27
        for code in rng.choice(pool, size=size, replace=False).tolist():
            given, family = FIRST_NAMES[code % len(FIRST_NAMES)], SURNAMES[(code // len(FIRST_NAMES)) % len(SURNAMES)]
            middle = code // combos
            initial = chr(ord("a") + middle - 1) if middle else ""
            local = f"{given}.{initial}.{family}" if initial else f"{given}.{family}"
            person_org.append(org)
            address.append(f"{local.lower()}@{domain}")
            first.append(given)
            display.append(f"{given} {initial.upper()}. {family}" if initial else f"{given} {family}")
        activity = 1.0 / np.arange(1, size + 1) ** 0.8  # most active first within each organization
        share = np.cumsum(activity) / activity.sum()
        share[-1] = 1.0
        bounds.append(org + share)
        starts.append(starts[-1] + size)

    size_array = np.array(sizes, dtype=float)
    org_weight = size_array / size_array.sum()
    # Mailboxes belong to organizations by size (free mail excluded), each to the most active person not yet an owner.
    owned = rng.choice(ORGANIZATIONS, size=MAILBOXES, p=size_array[:ORGANIZATIONS] / size_array[:ORGANIZATIONS].sum())
    taken: Counter = Counter()
    owners: list[int] = []
    mailboxes_by_org: dict[int, list[int]] = defaultdict(list)
    for mailbox, org in enumerate(owned.tolist()):
        rank = min(taken[org], sizes[org] - 1)
        taken[org] += 1
        owners.append(starts[org] + rank)
        mailboxes_by_org[org].append(mailbox)
    mailbox_weight = 1.0 / np.arange(1, MAILBOXES + 1) ** 0.7
    day_weight = np.array([0.25 if (FIRST_DAY + dt.timedelta(days=d)).weekday() >= 5 else 1.0 for d in range(DAYS)])
    return Population(
        domains=domains,
        org_labels=labels,
        org_free=free,
        org_weight=org_weight,
        org_start=np.array(starts),
        pick_bounds=np.concatenate(bounds),
        person_org=person_org,
        address=address,
        first=first,
        display=display,
        owners=owners,
        mailbox_weight=mailbox_weight / mailbox_weight.sum(),
        day_weight=day_weight / day_weight.sum(),
        mailboxes_by_org=dict(mailboxes_by_org),
    )


# -- messages -------------------------------------------------------------------------------------------------


@dataclass
class Message:
    """One e-mail as extraction and linking would have stored it; ``held_by``: (mailbox, Graph id, folder)."""

    sequence: int
    day: dt.date
    received_at: dt.datetime
    internet_message_id: str
    conversation_id: str
    subject: str
    sender: tuple[str, str]  # (name, address)
    to: list[dict[str, str]]
    cc: list[dict[str, str]]
    body: str
    signature: str
    entities: list[tuple[str, str, str, str, str]]  # (entity_key, name, entity_type, roles, evidence)
    links: list[tuple[str, str, str]]
    held_by: list[tuple[str, str, str]]


@dataclass
class Draws:
    """Everything random about CHUNK messages, drawn at once."""

    mailbox: np.ndarray
    day: np.ndarray
    seconds: np.ndarray
    sends: np.ndarray
    recipients: np.ndarray
    owner_slot: np.ndarray
    cc: np.ndarray
    home: np.ndarray
    candidates: np.ndarray
    name_style: np.ndarray
    copy: np.ndarray
    copy_pick: np.ndarray
    greet: np.ndarray
    sign: np.ndarray
    body_name: np.ndarray
    body_name_full: np.ndarray
    body_person: np.ndarray
    money: np.ndarray
    amount: np.ndarray
    date: np.ndarray
    date_offset: np.ndarray
    other_org: np.ndarray
    other: np.ndarray
    in_subject: np.ndarray
    topic: np.ndarray


def draw(
    rng: np.random.Generator, pop: Population, size: int, mailbox: int | None, day: int | None, copies: float
) -> Draws:
    orgs = len(pop.domains)
    boxes = rng.choice(MAILBOXES, size=size, p=pop.mailbox_weight) if mailbox is None else np.full(size, mailbox)
    days = rng.choice(DAYS, size=size, p=pop.day_weight) if day is None else np.full(size, day)
    owner_org = np.array([pop.person_org[pop.owners[b]] for b in boxes.tolist()])
    outside = rng.choice(orgs, size=size, p=pop.org_weight)
    home = np.where(rng.random(size) < OWN_ORGANIZATION, owner_org, outside)
    candidate_orgs = np.where(
        rng.random((size, CANDIDATES)) < SAME_ORGANIZATION,
        home[:, None],
        rng.choice(orgs, size=(size, CANDIDATES), p=pop.org_weight),
    )
    recipients = rng.choice(RECIPIENTS, size=size, p=RECIPIENT_SHARES)
    return Draws(
        mailbox=boxes,
        day=days,
        seconds=rng.integers(6 * 3600, 21 * 3600, size=size),
        sends=rng.random(size) < OWNER_SENDS,
        recipients=recipients,
        owner_slot=(rng.random(size) * recipients).astype(int),
        cc=rng.random((size, 5)) < CC_SHARE,
        home=home,
        candidates=pop.pick(candidate_orgs, rng.random((size, CANDIDATES))),
        name_style=rng.random((size, CANDIDATES + 2)),
        copy=rng.random(size) < copies,
        copy_pick=rng.random(size),
        greet=rng.random(size) < GREETING,
        sign=rng.random(size) < SIGN_OFF,
        body_name=rng.random(size) < BODY_NAME,
        body_name_full=rng.random(size) < FULL_BODY_NAME,
        body_person=pop.pick(home, rng.random(size)),
        money=rng.random(size) < MONEY,
        amount=np.round(rng.lognormal(mean=10.0, sigma=1.6, size=size), -1).astype(int) + 10,
        date=rng.random(size) < DATE,
        date_offset=rng.integers(-10, 31, size=size),
        other_org=rng.random(size) < OTHER_ORGANIZATION,
        other=rng.choice(
            ORGANIZATIONS, size=size, p=pop.org_weight[:ORGANIZATIONS] / pop.org_weight[:ORGANIZATIONS].sum()
        ),
        in_subject=rng.random(size) < IN_SUBJECT,
        topic=rng.integers(len(TOPICS), size=size),
    )


def graph_id(mailbox: str, internet_message_id: str) -> str:
    """A Graph-like message id: each mailbox's copy of an e-mail has its own."""
    return "AAMkAGI2" + hashlib.sha1(f"{mailbox}|{internet_message_id}".encode()).hexdigest()


def compose(pop: Population, d: Draws, i: int, sequence: int, extra_to: Sequence[int] = ()) -> Message:
    """Message i of the draws: participants, copies, text entities, links (by the pipeline's rule)."""
    mailbox = int(d.mailbox[i])
    owner = pop.owners[mailbox]
    wanted = int(d.recipients[i])
    others: list[int] = []
    seen = {owner}
    for person in d.candidates[i].tolist():
        if person not in seen:
            seen.add(person)
            others.append(person)
            if len(others) == wanted:
                break
    if d.sends[i] or not others:
        sender, recipients = owner, others
    else:
        sender, recipients = others[0], others[1:]
        recipients.insert(min(int(d.owner_slot[i]), len(recipients)), owner)
    for person in extra_to:
        seen.add(person)
        recipients.append(person)
    holders = [mailbox]
    if d.copy[i]:
        # The recipient's copy: another mailbox of the message's organization where there is one.
        home = int(d.home[i])
        choices = [b for b in pop.mailboxes_by_org.get(home, []) if b != mailbox] or [
            b for b in range(MAILBOXES) if b != mailbox
        ]
        other_box = choices[int(d.copy_pick[i] * len(choices))]
        holders.append(other_box)
        other_owner = pop.owners[other_box]
        if other_owner not in seen:
            seen.add(other_owner)
            if len(recipients) < RECIPIENTS[-1]:
                recipients.append(other_owner)
            else:
                recipients[-1 if recipients[-1] != owner else -2] = other_owner

    entities: dict[str, list[Any]] = {}  # key -> [name, type, roles, evidence]

    def written_name(person: int, slot: int) -> str:
        style = d.name_style[i, min(slot, d.name_style.shape[1] - 1)]
        if style < ADDRESS_ONLY:
            return pop.address[person]
        if style < ADDRESS_ONLY + LAST_FIRST:
            given, _, family = pop.display[person].rpartition(" ")
            return f"{family}, {given}"
        return pop.display[person]

    def add(key: str, name: str, entity_type: str, role: str, evidence: str) -> None:
        if key in entities:
            if role not in entities[key][2]:
                entities[key][2].append(role)
        else:
            entities[key] = [name, entity_type, [role], evidence]

    sender_name = written_name(sender, 0)
    add(
        keys.person_key(pop.address[sender]),
        sender_name,
        "person",
        "sender",
        f"From: {sender_name} <{pop.address[sender]}>",
    )
    to: list[dict[str, str]] = []
    cc: list[dict[str, str]] = []
    for slot, person in enumerate(recipients, start=1):
        name = written_name(person, slot)
        role = "cc" if slot > 1 and d.cc[i, min(slot - 1, 4)] and person not in extra_to else "to"
        (cc if role == "cc" else to).append({"name": name, "address": pop.address[person]})
        add(
            keys.person_key(pop.address[person]),
            name,
            "person",
            role,
            f"{role.title()}: {name} <{pop.address[person]}>",
        )
    for person in [sender, *recipients]:
        org = pop.person_org[person]
        if not pop.org_free[org]:
            add(
                keys.organization_key(pop.domains[org]), pop.domains[org], "organization", "domain", pop.address[person]
            )

    lines: list[str] = []
    if d.greet[i] and recipients:
        greeted = recipients[0]
        lines.append(f"Hi {pop.first[greeted]},")
        add(keys.person_key(pop.address[greeted]), pop.display[greeted], "person", "greeting", lines[-1])
    topic = TOPICS[int(d.topic[i])]
    subject = topic
    sentence = [f"About the {topic.lower()}"]
    if d.other_org[i]:
        org = int(d.other[i])
        label = pop.org_labels[org]
        if d.in_subject[i]:
            subject = f"{topic} - {label}"
            add(keys.organization_key(pop.domains[org]), label, "organization", "subject", subject)
        else:
            sentence.append(f"with {label}")
            add(keys.organization_key(pop.domains[org]), label, "organization", "text", " ".join(sentence))
    if d.body_name[i]:
        person = int(d.body_person[i])
        if person in seen:  # a participant named in the body is tied to them, as the heuristic does
            sentence.append(f"as {pop.first[person]} said")
            add(keys.person_key(pop.address[person]), pop.display[person], "person", "text", " ".join(sentence))
        else:
            named = pop.display[person] if d.body_name_full[i] else pop.first[person]
            sentence.append(f"as {named} said")
            add(keys.person_name_key(named), named, "person", "text", " ".join(sentence))
    if d.money[i]:
        amount = int(d.amount[i])
        sentence.append(f"for ${amount:,}")
        add(keys.value_key("money", f"usd:{amount}"), f"${amount:,}", "money", "text", " ".join(sentence))
    day = FIRST_DAY + dt.timedelta(days=int(d.day[i]))
    if d.date[i]:
        when = day + dt.timedelta(days=int(d.date_offset[i]))
        sentence.append(f"by {when:%B} {when.day}")
        add(keys.value_key("date", when.isoformat()), f"{when:%B} {when.day}", "date", "text", " ".join(sentence))
    lines.append(" ".join(sentence) + ".")
    signature = ""
    if d.sign[i]:
        signature = f"Thanks,\n{pop.first[sender]}"
        add(keys.person_key(pop.address[sender]), pop.display[sender], "person", "signature", signature)

    rows = [(k, v[0], v[1], ",".join(v[2]), v[3][:200]) for k, v in entities.items()]
    links = links_for_message([{"entity_key": k, "roles": roles} for k, _, _, roles, _ in rows])
    token = hashlib.sha1(f"graph-scale:{SEED}:{sequence}".encode()).hexdigest()
    sender_domain = pop.address[sender].rsplit("@", 1)[1]
    internet_id = f"<{token[:16]}.{sequence}.JavaMail.atom@{sender_domain}>"
    held_by = []
    for box in holders:
        mailbox_address = pop.address[pop.owners[box]]
        folder = "sentitems" if pop.owners[box] == sender else "inbox"
        held_by.append((mailbox_address, graph_id(mailbox_address, internet_id), folder))
    return Message(
        sequence=sequence,
        day=day,
        received_at=dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
        + dt.timedelta(seconds=int(d.seconds[i])),
        internet_message_id=internet_id,
        conversation_id="AAQkAGI2" + token[16:40],
        subject=subject,
        sender=(sender_name, pop.address[sender]),
        to=to,
        cc=cc,
        body="\n\n".join(lines),
        signature=signature,
        entities=rows,
        links=links,
        held_by=held_by,
    )


def generate(rng: np.random.Generator, pop: Population, links: int) -> list[Message]:
    """Messages of the whole year until their link rows (every copy's) reach ``links``."""
    messages: list[Message] = []
    total = 0
    while total < links:
        draws = draw(rng, pop, CHUNK, mailbox=None, day=None, copies=COPY_SHARE)
        for i in range(CHUNK):
            message = compose(pop, draws, i, len(messages))
            messages.append(message)
            total += len(message.links) * len(message.held_by)
            if total >= links:
                break
    return messages


def new_day_messages(
    rng: np.random.Generator, pop: Population, mailbox: int, links: int, sequence: int
) -> tuple[list[Message], list[int]]:
    """One mailbox's messages of NEW_DAY, about ``links`` link rows, NEW_PEOPLE never seen before among them."""
    org = pop.person_org[pop.owners[mailbox]]
    newcomers = [pop.add_person(org, given, family) for given, family in NEW_NAMES[:NEW_PEOPLE]]
    draws = draw(rng, pop, CHUNK, mailbox=mailbox, day=DAYS, copies=0.0)
    messages: list[Message] = []
    total = 0
    for i in range(CHUNK):
        extra = newcomers[i : i + 1] if i < len(newcomers) else []
        message = compose(pop, draws, i, sequence + i, extra_to=extra)
        messages.append(message)
        total += len(message.links)
        if total >= links and i + 1 >= len(newcomers):
            break
    return messages, newcomers


# -- rows -----------------------------------------------------------------------------------------------------


def rows_of(messages: Sequence[Message], mailbox: str) -> dict[Any, list[dict[str, Any]]]:
    """The messages, entities and entity_links rows of one mailbox's copies of these messages."""
    message_rows: list[dict[str, Any]] = []
    entity_rows: list[dict[str, Any]] = []
    link_rows: list[dict[str, Any]] = []
    for message in messages:
        for holder, message_id, folder in message.held_by:
            if holder != mailbox:
                continue
            extraction_text = message.body + (f"\n\n{message.signature}" if message.signature else "")
            canonical = {
                "id": message_id,
                "subject": message.subject,
                "body": ["text", extraction_text],
                "from": list(message.sender),
                "to": [[r["name"], r["address"]] for r in message.to],
                "cc": [[r["name"], r["address"]] for r in message.cc],
            }
            message_rows.append(
                {
                    "mailbox": mailbox,
                    "message_id": message_id,
                    "day": message.day,
                    "received_at": message.received_at,
                    "internet_message_id": message.internet_message_id,
                    "conversation_id": message.conversation_id,
                    "subject": message.subject,
                    "sender_name": message.sender[0],
                    "sender_address": message.sender[1],
                    "to_recipients": message.to,
                    "cc_recipients": message.cc,
                    "body_content_type": "text",
                    "body_raw": extraction_text,
                    "new_text": message.body,
                    "signature_text": message.signature,
                    "quoted_text": "",
                    "text_basis": "new",
                    "extraction_text": extraction_text,
                    "content_hash": hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest(),
                    "change_key": "CQAAABYAAAD" + message_id[-12:],
                    "parent_folder_id": folder,
                    "origin": f"graph:/users/{mailbox}/messages",
                }
            )
            for entity_key, name, entity_type, roles, evidence in message.entities:
                entity_rows.append(
                    {
                        "mailbox": mailbox,
                        "message_id": message_id,
                        "entity_key": entity_key,
                        "day": message.day,
                        "name": name,
                        "entity_type": entity_type,
                        "roles": roles,
                        "evidence": evidence,
                        "provider": PROVIDER,
                        "model": HEURISTIC_MODEL,
                    }
                )
            for source, target, kind in message.links:
                link_rows.append(
                    {
                        "mailbox": mailbox,
                        "message_id": message_id,
                        "source_key": source,
                        "target_key": target,
                        "kind": kind,
                        "day": message.day,
                        "weight": 1.0,
                    }
                )
    return {schema.messages: message_rows, schema.entities: entity_rows, schema.entity_links: link_rows}


def by_mailbox(messages: Sequence[Message]) -> dict[str, list[Message]]:
    held: dict[str, list[Message]] = defaultdict(list)
    for message in messages:
        for mailbox, _, _ in message.held_by:
            held[mailbox].append(message)
    return dict(held)


def shape_in_memory(messages: Sequence[Message]) -> dict[str, Any]:
    copies = sum(len(m.held_by) - 1 for m in messages)
    kinds: Counter = Counter()
    for message in messages:
        for _, _, kind in message.links:
            kinds[kind] += len(message.held_by)
    return {
        "messages": sum(len(m.held_by) for m in messages),
        "copies": copies,
        "entity_rows": sum(len(m.entities) * len(m.held_by) for m in messages),
        "distinct_entities": len({e[0] for m in messages for e in m.entities}),
        "links": sum(kinds.values()),
        "links_by_kind": dict(kinds.most_common()),
    }


def shape_in_database(store: MailStore) -> dict[str, Any]:
    messages, entities, links = schema.messages, schema.entities, schema.entity_links
    dangling_source = ~sa.exists().where(
        (entities.c.mailbox == links.c.mailbox)
        & (entities.c.message_id == links.c.message_id)
        & (entities.c.entity_key == links.c.source_key)
    )
    dangling_target = ~sa.exists().where(
        (entities.c.mailbox == links.c.mailbox)
        & (entities.c.message_id == links.c.message_id)
        & (entities.c.entity_key == links.c.target_key)
    )
    without_message = ~sa.exists().where(
        (messages.c.mailbox == entities.c.mailbox) & (messages.c.message_id == entities.c.message_id)
    )
    with store.engine.connect() as conn:

        def count(query: sa.Select) -> int:
            return int(conn.execute(query).scalar_one())

        message_rows = count(sa.select(sa.func.count()).select_from(messages))
        emails = count(sa.select(sa.func.count(sa.distinct(messages.c.internet_message_id))))
        kinds = dict(
            conn.execute(
                sa.select(links.c.kind, sa.func.count()).group_by(links.c.kind).order_by(sa.func.count().desc())
            ).all()
        )
        return {
            "messages": message_rows,
            "copies": message_rows - emails,
            "entity_rows": count(sa.select(sa.func.count()).select_from(entities)),
            "distinct_entities": count(sa.select(sa.func.count(sa.distinct(entities.c.entity_key)))),
            "links": sum(kinds.values()),
            "links_by_kind": kinds,
            "dangling_link_ends": count(
                sa.select(sa.func.count()).select_from(links).where(dangling_source | dangling_target)
            ),
            "entities_without_message": count(sa.select(sa.func.count()).select_from(entities).where(without_message)),
            "mailbox_days_with_mail": count(
                sa.select(sa.func.count()).select_from(
                    sa.select(messages.c.mailbox, messages.c.day).distinct().subquery()
                )
            ),
        }


def print_shape(label: str, shape: dict[str, Any]) -> None:
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in shape["links_by_kind"].items())
    print(
        f"{label}: {shape['messages']:,} messages rows ({shape['copies']:,} of them a second mailbox's copy), "
        f"{shape['entity_rows']:,} entities rows, {shape['distinct_entities']:,} distinct entities, "
        f"{shape['links']:,} links ({kinds})",
        flush=True,
    )
    if "dangling_link_ends" in shape:
        print(
            f"  consistency: {shape['dangling_link_ends']} links with an end that is no entity row of their message, "
            f"{shape['entities_without_message']} entity rows without a messages row (both must be 0); "
            f"{shape['mailbox_days_with_mail']:,} of {MAILBOXES * DAYS:,} mailbox-days hold mail",
            flush=True,
        )


# -- the builds -----------------------------------------------------------------------------------------------


def child_build(database_url: str, export_dir: str, force_full: bool, result_file: str) -> int:
    """One build_entity_graph in this (fresh) process; its figures as JSON into result_file."""
    from atom_pipelines.entity_graph.analysis import GraphOptions, build_entity_graph

    store = MailStore(database_url=database_url)
    store.check_schema()  # engine and schema check: the asset's process has them before its build starts
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    report = build_entity_graph(store, GraphOptions(export_dir=Path(export_dir), force_full=force_full))
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with store.engine.connect() as conn:
        communities = int(conn.execute(sa.select(sa.func.count()).select_from(schema.graph_communities)).scalar_one())
        provenance = int(conn.execute(sa.select(sa.func.count()).select_from(schema.graph_edge_messages)).scalar_one())
    result = {
        "wall_s": wall,
        "peak_gb": peak * 1024 / 1e9,
        "rss_before_gb": rss_before * 1024 / 1e9,
        "seconds": report.seconds,
        "mode": report.mode,
        "reason": report.reason,
        "links": report.links,
        "nodes": report.nodes,
        "edges": report.edges,
        "changed_edges": report.changed_edges,
        "copies_removed": report.copies_removed,
        "resolution_repeats": report.resolution_repeats,
        "self_links_dropped": report.self_links_dropped,
        "people_before": report.people_before,
        "people_after": report.people_after,
        "name_mentions": report.name_mentions,
        "names_merged": report.names_merged,
        "components": report.components,
        "largest_component": report.largest_component,
        "communities": communities,
        "edge_messages": provenance,
        "files": {p.name: p.stat().st_size for p in sorted(Path(export_dir).iterdir()) if p.is_file()},
    }
    Path(result_file).write_text(json.dumps(result, default=str))
    return 0


def measure(label: str, database_url: str, export_dir: str, force_full: bool = False) -> dict[str, Any]:
    """Run one build in a fresh child process and print what it reports."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--child-build", database_url, "--export-dir", export_dir]
        command += ["--result-file", out.name] + (["--force-full"] if force_full else [])
        code = subprocess.run(command, check=False).returncode
        text = Path(out.name).read_text()
    if code or not text:
        raise SystemExit(f"the {label} build's child process exited {code}")
    result = json.loads(text)
    stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in result["seconds"].items())
    files = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in result["files"].items())
    print(
        f"[{label}] wall {result['wall_s']:.1f} s, peak RSS {result['peak_gb']:.2f} GB "
        f"({result['rss_before_gb']:.2f} GB before the build); mode {result['mode']} ({result['reason']})\n"
        f"  stages (s): {stages}\n"
        f"  {result['links']:,} links -> {result['nodes']:,} nodes, {result['edges']:,} edges "
        f"({result['changed_edges']:,} changed), {result['copies_removed']:,} copies removed, "
        f"{result['resolution_repeats']:,} resolution repeats, {result['self_links_dropped']:,} self links; "
        f"people {result['people_before']:,} -> {result['people_after']:,}, body names "
        f"{result['names_merged']:,} merged of {result['name_mentions']:,}; {result['components']:,} components "
        f"(largest {result['largest_component']:,}), {result['communities']:,} communities, "
        f"{result['edge_messages']:,} provenance rows\n"
        f"  files: {files}",
        flush=True,
    )
    return result


@contextmanager
def bench_database(keep: bool) -> Iterator[str]:
    if not keep:
        with fresh_postgres_database(prefix="atom_bench") as url:
            yield url
        return
    name = f"atom_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        print(f"kept the database: {url}")


def verdict(value: float, target: float) -> str:
    return "meets" if value < target else "MISSES"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--links", type=int, default=1_000_000, help="entity_links rows (default 1,000,000)")
    parser.add_argument("--keep-db", action="store_true", help="leave the database in place (its URL is printed)")
    parser.add_argument("--generate-only", action="store_true", help="generate and count, write nothing")
    parser.add_argument("--child-build", metavar="URL", help=argparse.SUPPRESS)  # child mode: one build
    parser.add_argument("--export-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--force-full", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_build:
        return child_build(args.child_build, args.export_dir, args.force_full, args.result_file)

    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(f"$ {command}")
    print(
        f"Python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cores; seed {SEED}; "
        f"{MAILBOXES} mailboxes x {DAYS} days from {FIRST_DAY}, {ORGANIZATIONS} organizations",
        flush=True,
    )
    rng = np.random.default_rng(SEED)
    started = time.perf_counter()
    pop = build_population(rng, round(args.links * PEOPLE_PER_LINK))
    messages = generate(rng, pop, args.links)
    generated = time.perf_counter() - started
    emails = len(messages)
    print(f"generated {emails:,} e-mails over {len(pop.address):,} people in {generated:.1f} s", flush=True)
    if args.generate_only:
        print_shape("data (in memory)", shape_in_memory(messages))
        return 0

    with bench_database(args.keep_db) as url:
        store = MailStore(database_url=url)
        with store.engine.connect() as conn:
            server = conn.execute(sa.text("show server_version")).scalar_one()
        all_days = tuple(FIRST_DAY + dt.timedelta(days=n) for n in range(DAYS))
        started = time.perf_counter()
        held = by_mailbox(messages)
        for mailbox, mailbox_messages in held.items():
            store.replace_partitions([MailboxWindow(mailbox, all_days)], rows_of(mailbox_messages, mailbox))
        loaded = time.perf_counter() - started
        print(
            f"loaded {len(held)} mailboxes through MailStore.replace_partitions (COPY) into PostgreSQL {server} "
            f"in {loaded:.1f} s (not measured)",
            flush=True,
        )
        shape = shape_in_database(store)
        print_shape("data", shape)

        with tempfile.TemporaryDirectory(prefix="atom_graph_scale_") as exports:
            full = measure("full", url, exports)

            link_counts = Counter({mailbox: 0 for mailbox in held})
            for message in messages:
                for mailbox, _, _ in message.held_by:
                    link_counts[mailbox] += len(message.links)
            ranked = sorted(link_counts, key=lambda m: (link_counts[m], m))
            chosen = ranked[len(ranked) // 2]
            mailbox_index = next(b for b in range(MAILBOXES) if pop.address[pop.owners[b]] == chosen)
            per_mailbox_day = shape["links"] / (MAILBOXES * DAYS)
            day_messages, newcomers = new_day_messages(rng, pop, mailbox_index, round(per_mailbox_day), emails)
            day_keys = {e[0] for m in day_messages for e in m.entities if e[0].startswith("person:")}
            known = {e[0] for m in messages for e in m.entities}
            started = time.perf_counter()
            store.replace_partitions([MailboxWindow(chosen, (NEW_DAY,))], rows_of(day_messages, chosen))
            print(
                f"added {chosen} {NEW_DAY}: {len(day_messages)} messages, "
                f"{sum(len(m.links) for m in day_messages)} links (the average mailbox-day has "
                f"{per_mailbox_day:.1f}), {len(day_keys)} people, {len(day_keys - known)} of them not in the graph yet "
                f"({len(newcomers)} made up for the day: {', '.join(pop.address[p] for p in newcomers)}), "
                f"in {time.perf_counter() - started:.2f} s",
                flush=True,
            )
            incremental = measure("incremental", url, exports)
            forced = measure("forced full", url, exports, force_full=True)

    ratio = incremental["wall_s"] / forced["wall_s"]
    print()
    print(
        f"full build: {full['wall_s']:.1f} s ({verdict(full['wall_s'], TARGET_SECONDS)} the < {TARGET_SECONDS:.0f} s "
        f"target), peak {full['peak_gb']:.2f} GB ({verdict(full['peak_gb'], TARGET_GB)} the < {TARGET_GB:.0f} GB target)"
    )
    print(
        f"incremental / forced full on the same data: {ratio:.2f} ({incremental['wall_s']:.1f} s / {forced['wall_s']:.1f} s)"
    )
    print()
    print(
        f"| build ({shape['links']:,} links, {shape['distinct_entities']:,} entities) | wall s | peak GB | nodes | edges | mode |"
    )
    print("|---|---|---|---|---|---|")
    for label, result in (("full", full), ("incremental", incremental), ("forced full", forced)):
        print(
            f"| {label} | {result['wall_s']:.1f} | {result['peak_gb']:.2f} | {result['nodes']:,} | "
            f"{result['edges']:,} | {result['mode']} |"
        )
    if incremental["mode"] != "incremental":
        print(
            f"FAILED: the build after one mailbox-day ran {incremental['mode']} ({incremental['reason']})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
