"""Grounding: an entity is kept only if the message supports it.

Its name or e-mail address must appear, as whole words, in the subject, the cleaned text or the header
participants (ignoring case and whitespace); relations keep only when both ends were kept. This is also the guard
against prompt injection in mail bodies: a model talked into listing 50 invented names puts none of them
in the graph, and repeats of one name collapse into one entity per message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from atom_pipelines.extraction import keys
from atom_pipelines.extraction.mentions import EVIDENCE_CHARS, resolve_name
from atom_pipelines.extraction.outcomes import EntityMention, EntityType, RelationMention, Role
from atom_pipelines.extraction.providers import MessageText
from atom_pipelines.extraction.schema import ExtractionAnswer

_SPACES = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _SPACES.sub(" ", text).strip().casefold()


def _mentions(text: str, phrase: str) -> bool:
    """Whole-word occurrence: "Mallory 4" is not supported by a text that only says "Mallory 49"."""
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


@dataclass(frozen=True)
class GroundedAnswer:
    mentions: tuple[EntityMention, ...]
    relations: tuple[RelationMention, ...]
    dropped_entities: int
    dropped_relations: int


def haystack(message: MessageText) -> str:
    """Everything the message says, normalized, as grounding searches it."""
    participants = [message.sender, *message.to, *message.cc]
    header = " ".join(f"{p.name} {p.address}" for p in participants if p)
    return _norm(f"{message.subject}\n{message.body}\n{header}")


def ground(answer: ExtractionAnswer, message: MessageText) -> GroundedAnswer:
    """Keep the entities the message supports, keyed canonically; keep relations between kept entities."""
    text = haystack(message)
    participants = [p for p in (message.sender, *message.to, *message.cc) if p]
    kept: dict[str, EntityMention] = {}
    key_by_name: dict[str, str] = {}
    dropped = 0
    for entity in answer.entities:
        name = entity.name.strip()
        email = keys.normalize_address(entity.email or "") if entity.email else None
        name_ok = bool(name) and _mentions(text, _norm(name))
        email_ok = email is not None and _mentions(text, email)
        if not (name_ok or email_ok):
            dropped += 1
            continue
        evidence = entity.evidence.strip()[:EVIDENCE_CHARS]
        if entity.type == "person":
            if email_ok:
                mention = EntityMention(
                    keys.person_key(email), name or email, EntityType.PERSON, (Role.TEXT,), evidence
                )
            else:
                mention = resolve_name(name, evidence, Role.TEXT, participants)
        else:
            mention = EntityMention(
                keys.value_key(entity.type, _norm(name)), name, EntityType(entity.type), (Role.TEXT,), evidence
            )
        kept.setdefault(mention.entity_key, mention)
        key_by_name.setdefault(_norm(name), mention.entity_key)
    relations: dict[tuple[str, str, str], RelationMention] = {}
    dropped_relations = 0
    for relation in answer.relations:
        source, target = key_by_name.get(_norm(relation.source)), key_by_name.get(_norm(relation.target))
        if source is None or target is None or source == target:
            dropped_relations += 1
            continue
        kind = re.sub(r"[^a-z0-9_]+", "_", relation.relation.casefold()).strip("_")[:40] or "related_to"
        relations.setdefault(
            (source, target, kind), RelationMention(source, target, kind, relation.evidence[:EVIDENCE_CHARS])
        )
    return GroundedAnswer(tuple(kept.values()), tuple(relations.values()), dropped, dropped_relations)
