"""Mention helpers every provider shares: the header participants as entities, a body name resolved to the
participant it names, and one mention per entity key and message.

They sit below the providers and grounding (which all use them) so that no provider imports another.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

from atom_pipelines.extraction import keys
from atom_pipelines.extraction.outcomes import EntityMention, EntityType, Role
from atom_pipelines.extraction.providers import MessageText, Participant

#: Characters of a mention's evidence line kept (the heuristic and grounding alike).
EVIDENCE_CHARS = 200
#: An e-mail address written in text (the heuristic finds them; answer previews mask them).
EMAIL_IN_TEXT = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


def header_mentions(message: MessageText) -> tuple[EntityMention, ...]:
    """The people of From/To/Cc and the organizations of their address domains, deduplicated.

    These are facts of the message's headers, so every provider's answer includes them (an LLM provider's
    rows carry them too, under that provider's name, since it was given the same headers).
    """
    return tuple(dedupe_mentions(_header_mentions(message)))


def participants(message: MessageText) -> list[Participant]:
    people = [message.sender] if message.sender else []
    return [p for p in (*people, *message.to, *message.cc) if keys.normalize_address(p.address)]


def _header_mentions(message: MessageText) -> Iterator[EntityMention]:
    header_roles = [(Role.SENDER, (message.sender,) if message.sender else ())]
    header_roles += [(Role.TO, message.to), (Role.CC, message.cc)]
    for role, people in header_roles:
        for person in people:
            mention = _participant_mention(person, role)
            if mention is None:
                continue
            yield mention
            domain = keys.organization_domain(person.address.lower())
            if domain:
                yield EntityMention(
                    keys.organization_key(domain), domain, EntityType.ORGANIZATION, (Role.DOMAIN,), person.address
                )


def _participant_mention(person: Participant, role: Role) -> EntityMention | None:
    address = keys.normalize_address(person.address)
    if address is None:
        return None
    name = person.name.strip() or address
    return EntityMention(keys.person_key(address), name, EntityType.PERSON, (role,), f"{name} <{address}>")


def resolve_name(name: str, evidence: str, role: Role, participants: list[Participant]) -> EntityMention:
    """A name that matches exactly one participant's display name (first name or full) is that participant."""
    wanted = name.casefold().split()
    matches = {
        keys.normalize_address(p.address)
        for p in participants
        if p.name and _name_matches(wanted, p.name.casefold().replace(",", " ").split())
    } - {None}
    if len(matches) == 1:
        address = matches.pop()
        return EntityMention(keys.person_key(address), name, EntityType.PERSON, (role,), evidence[:EVIDENCE_CHARS])
    return EntityMention(keys.person_name_key(name), name, EntityType.PERSON, (role,), evidence[:EVIDENCE_CHARS])


def _name_matches(wanted: list[str], display: list[str]) -> bool:
    return bool(display) and set(wanted) <= set(display)


def dedupe_mentions(mentions: Iterator[EntityMention]) -> Iterator[EntityMention]:
    """One mention per entity key and message: the first found (header roles come first), all roles merged."""
    by_key: dict[str, EntityMention] = {}
    for mention in mentions:
        first = by_key.get(mention.entity_key)
        if first is None:
            by_key[mention.entity_key] = mention
        elif not set(mention.roles) <= set(first.roles):
            roles = first.roles + tuple(r for r in mention.roles if r not in first.roles)
            by_key[mention.entity_key] = dataclasses.replace(first, roles=roles)
    yield from by_key.values()
