"""The offline heuristic provider: the embedded default, and the last provider behind any LLM.

It finds what a deterministic pass can be sure of: people and their addresses from the headers,
organizations from non-free-mail address domains, and in the cleaned text e-mail addresses, money, dates,
phone numbers (libphonenumber), URLs (urlextract), names in greetings and sign-offs, and the people and
organizations the text names (``body_names``: rules, a first-name list, no model). A person's name that
matches a participant's display name resolves to that participant's address key; an organization the body
spells like a participant's domain ("Enron", enron.com) is that domain's organization.
Its rows always say ``provider=heuristic``: a fallback to it is never passed off as an LLM's answer.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import time
from collections.abc import Iterator

import phonenumbers
from dateutil import parser as date_parser
from urlextract import URLExtract

from atom_pipelines.extraction import body_names, keys
from atom_pipelines.extraction.mentions import (
    EMAIL_IN_TEXT,
    EVIDENCE_CHARS,
    dedupe_mentions,
    header_mentions,
    participants,
    resolve_name,
)
from atom_pipelines.extraction.outcomes import Attempt, EntityMention, EntityType, Outcome, Role
from atom_pipelines.extraction.providers import ExtractionProvider, MessageText, Participant
from atom_pipelines.provider_chain import HEURISTIC_MODEL

_MONEY = re.compile(
    r"(?:US\$|\$|USD\s?|EUR\s?|€|£|GBP\s?)\s?\d[\d,]*(?:\.\d+)?"
    r"(?:\s?(?:million|billion|thousand|mm|bn|k|m)\b)?",
    re.IGNORECASE,
)
_MONTHS = r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
_DATE = re.compile(
    rf"\b(?:{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf"|\d{{1,2}}\s+{_MONTHS},?\s+\d{{4}}"
    r"|\d{1,2}/\d{1,2}/(?:\d{4}|\d{2})"
    r"|\d{4}-\d{2}-\d{2})\b"
)
_NAME = r"[A-Z][a-z]+(?:[ -][A-Z][a-z]+){0,2}"
_GREETING = re.compile(rf"^(?:(?:Hi|Hello|Dear|Hey|Good morning|Good afternoon)\s+)?(?P<name>{_NAME})\s*[,:!]?\s*$")
_GREETING_WORD = re.compile(rf"^(?:Hi|Hello|Dear|Hey)\s+(?:Mr\.?|Ms\.?|Mrs\.?|Dr\.?)?\s*(?P<name>{_NAME})\b")
_SIGN_OFF = re.compile(
    r"^(?:thanks|thank you|regards|best regards|kind regards|best|cheers|sincerely|many thanks|rgds)\b[\s,.!-]*$",
    re.IGNORECASE,
)
_SIGNATURE_NAME = re.compile(rf"^-?\s*(?P<name>{_NAME})\s*$")
#: Words that look like names at the start of a line but are not.
_NOT_NAMES = frozenset(
    "All Team Everyone Folks Guys Thanks Thank Regards Best Cheers Sincerely Please Attached Note Yes No Ok Okay "
    "Hello Hi Dear Hey Fyi Fw Re Update Meeting Today Tomorrow Monday Tuesday Wednesday Thursday Friday "
    "Saturday Sunday The This That These Those Subject From Sent To Cc".split()
)
_MONEY_SCALE = {"k": "thousand", "m": "million", "mm": "million", "bn": "billion"}


@functools.cache
def _url_extractor() -> URLExtract:
    return URLExtract()


class HeuristicProvider(ExtractionProvider):
    name = "heuristic"
    model = HEURISTIC_MODEL

    def extract(self, message: MessageText) -> Attempt:
        started = time.perf_counter()
        mentions = tuple(dedupe_mentions(self._mentions(message)))
        outcome = Outcome.ENTITIES if mentions else Outcome.NONE_FOUND
        reason = f"{len(mentions)} entities" if mentions else "no participant or pattern found"
        return Attempt(
            provider=self.name,
            model=self.model,
            outcome=outcome,
            reason=reason,
            mentions=mentions,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    def _mentions(self, message: MessageText) -> Iterator[EntityMention]:
        yield from header_mentions(message)
        if message.subject:
            yield from _text_mentions(message.subject, Role.SUBJECT)
        yield from _text_mentions(message.body, Role.TEXT)
        people = participants(message)
        named = list(_named_people(message, people))
        yield from named
        yield from _body_name_mentions(message, people, {(m.name, m.evidence) for m in named})


def _evidence(text: str, start: int, end: int) -> str:
    """The line of text[start:end], or the part of a long line around it: always quoting the match."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = line_end if line_end != -1 else len(text)
    if line_end - line_start > EVIDENCE_CHARS:
        margin = max(0, (EVIDENCE_CHARS - (end - start)) // 2)
        line_start = max(line_start, start - margin)
        line_end = min(line_end, line_start + max(EVIDENCE_CHARS, end - start))
    return text[line_start:line_end].strip()[:EVIDENCE_CHARS]


def _body_name_mentions(
    message: MessageText, people: list[Participant], greeted: set[tuple[str, str]]
) -> Iterator[EntityMention]:
    """People and organizations the body names (role ``text``), grounded: the evidence quotes the name.

    A name already read as the greeting or sign-off of its line is left to that mention (one role, not two).
    """
    domains = _organization_domains(message, people)
    # Two domains can share a label (enron.com, enron.net): the first in sorted order names it, so the key
    # does not depend on set order, that is on PYTHONHASHSEED (one process and another would disagree).
    labels: dict[str, str] = {}
    for domain in sorted(domains):
        labels.setdefault(domain.split(".")[0], domain)
    for found in body_names.find_names(message.body, people=_participant_names(people), organization_labels=labels):
        evidence = _evidence(message.body, found.start, found.end)
        if found.entity_type is EntityType.PERSON:
            if (found.name, evidence) in greeted:
                continue
            yield resolve_name(found.name, evidence, Role.TEXT, people)
            continue
        domain = labels.get(re.sub(r"[^a-z0-9]", "", found.name.casefold()))
        key = keys.organization_key(domain) if domain else keys.value_key("organization", _org_name(found.name))
        yield EntityMention(key, found.name, EntityType.ORGANIZATION, (Role.TEXT,), evidence)


def _org_name(name: str) -> str:
    # As grounding keys an LLM's organizations: whitespace collapsed, casefolded.
    return re.sub(r"\s+", " ", name).strip().casefold()


def _organization_domains(message: MessageText, people: list[Participant]) -> set[str]:
    """The organization domains of the participants and of the addresses the body writes.

    Not of the URLs it writes: those name products and footers ("Sent from my BlackBerry", a mailer's links)
    more often than organizations of the message.
    """
    addresses = [person.address for person in people] + EMAIL_IN_TEXT.findall(message.body)
    domains = {keys.organization_domain(address.lower()) for address in addresses}
    return {domain for domain in domains if domain}


def _participant_names(people: list[Participant]) -> set[str]:
    """The words of participants' display names that their address also spells: "vince" of
    "Kaminski, Vince J" <vince.kaminski@enron.com> (not "J", nor a list's name like "All Employees")."""
    names = set()
    for person in people:
        local = person.address.split("@")[0].casefold()
        for word in re.findall(r"[A-Za-z]{2,}", person.name):
            if word.casefold() in local:
                names.add(word.casefold())
    return names


def _text_mentions(text: str, role: Role) -> Iterator[EntityMention]:
    for match in EMAIL_IN_TEXT.finditer(text):
        address = keys.normalize_address(match.group())
        if address:
            yield EntityMention(
                keys.person_key(address), address, EntityType.PERSON, (role,), _evidence(text, *match.span())
            )
    for match in _MONEY.finditer(text):
        amount = _normalize_money(match.group())
        yield EntityMention(
            keys.value_key("money", amount),
            match.group().strip(),
            EntityType.MONEY,
            (role,),
            _evidence(text, *match.span()),
        )
    for match in _DATE.finditer(text):
        day = _parse_date(match.group())
        if day is not None:
            yield EntityMention(
                keys.value_key("date", day.isoformat()),
                match.group(),
                EntityType.DATE,
                (role,),
                _evidence(text, *match.span()),
            )
    for match in phonenumbers.PhoneNumberMatcher(text, "US", leniency=phonenumbers.Leniency.VALID):
        e164 = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        yield EntityMention(
            keys.value_key("phone", e164),
            match.raw_string,
            EntityType.PHONE,
            (role,),
            _evidence(text, match.start, match.end),
        )
    for url, (start, end) in _url_candidates(text):
        # Bare "word.tld" hits ("foo.bar") are mostly noise in mail; keep URLs a reader would click.
        if not re.match(r"(?i)(?:https?://|www\.)", url):
            continue
        normalized = url.rstrip(".,;:)>").lower()
        yield EntityMention(
            keys.value_key("url", normalized), url, EntityType.URL, (role,), _evidence(text, start, end)
        )


_URL_START = re.compile(r"(?i)(?:https?://|www\.)")


def _url_candidates(text: str) -> list[tuple[str, tuple[int, int]]]:
    """urlextract's hits, run only on the whitespace-delimited tokens that start like a kept URL.

    Only URLs with a scheme or www. are kept; urlextract's TLD scan over whole texts was most of this
    provider's time on the corpus (x3 faster, identical mentions on all 2,853 messages).
    """
    found: dict[tuple[int, int], str] = {}
    for match in _URL_START.finditer(text):
        start = match.start()
        while start > 0 and not text[start - 1].isspace():
            start -= 1
        end = match.end()
        while end < len(text) and not text[end].isspace():
            end += 1
        for url, (a, b) in _url_extractor().find_urls(text[start:end], get_indices=True):
            found.setdefault((start + a, start + b), url)
    return [(url, span) for span, url in sorted(found.items())]


def _named_people(message: MessageText, participants: list[Participant]) -> Iterator[EntityMention]:
    """Names in the greeting (first lines) and the sign-off (after 'Thanks,' or in the signature)."""
    lines = [line.strip() for line in message.body.splitlines() if line.strip()]
    known = _participant_names(participants)
    for line in lines[:2]:
        match = _GREETING_WORD.match(line) or _GREETING.match(line)
        if match and match.start("name") == 0 and not _known_name(match.group("name"), known):
            # A bare opening line ("Crude:", "Agenda") is a greeting only when it is someone's first name.
            continue
        if match and _plausible_name(match.group("name")):
            yield resolve_name(match.group("name"), line, Role.GREETING, participants)
            break
    tail = [line.strip() for line in message.signature.splitlines() if line.strip()] or lines[-4:]
    for index, line in enumerate(tail):
        if _SIGN_OFF.match(line) and index + 1 < len(tail):
            candidate = _SIGNATURE_NAME.match(tail[index + 1])
            if candidate and _plausible_name(candidate.group("name")):
                yield resolve_name(candidate.group("name"), tail[index + 1], Role.SIGNATURE, participants)
                return


def _known_name(name: str, participant_names: set[str]) -> bool:
    first = name.split()[0]
    return first in body_names.first_names() or first.casefold() in participant_names


def _plausible_name(name: str) -> bool:
    return name.split()[0] not in _NOT_NAMES


def _normalize_money(raw: str) -> str:
    text = raw.strip().lower().replace(",", "").replace(" ", "")
    currency = "usd"
    for symbol, code in (
        ("us$", "usd"),
        ("usd", "usd"),
        ("$", "usd"),
        ("eur", "eur"),
        ("€", "eur"),
        ("gbp", "gbp"),
        ("£", "gbp"),
    ):
        if text.startswith(symbol):
            currency, text = code, text[len(symbol) :]
            break
    match = re.match(r"(\d+(?:\.\d+)?)([a-z]*)", text)
    if match is None:
        return f"{currency}:{text}"
    number, scale = match.groups()
    scale = _MONEY_SCALE.get(scale, scale)
    return f"{currency}:{number}{(' ' + scale) if scale else ''}"


def _parse_date(raw: str) -> dt.date | None:
    try:
        parsed = date_parser.parse(raw, fuzzy=False, default=dt.datetime(2000, 1, 1))
    except (ValueError, OverflowError):
        return None
    return parsed.date() if 1900 <= parsed.year <= 2100 else None
