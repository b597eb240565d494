"""The offline-NER gold set and its scorer: what the bench (``bench/offline_ner.py``) and the regression test
(``test_offline_ner.py``) both read, so the figure the bench prints is the figure the test holds.

The gold set (``gold/offline_ner_gold.jsonl``, rules in ``gold/README.md``) lists, per sampled corpus message,
the people and organizations named in the text extraction reads (``CleanedBody.extraction_text``). The scorer
compares names after normalization, one-to-one per message and type, micro-averaged.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from atom_pipelines.extraction.outcomes import EntityType, Role
from atom_pipelines.extraction.providers import MessageText, Participant
from atom_pipelines.mail.cleaning import clean_body
from atom_pipelines.mail.models import GraphMessage
from atom_pipelines_tests.conftest import open_corpus

GOLD_FILE = Path(__file__).resolve().parent / "gold" / "offline_ner_gold.jsonl"
#: The sample's seed and size, and the frame it is drawn from (see gold/README.md).
SAMPLE_SEED = 10
SAMPLE_SIZE = 80
MAX_TEXT_CHARS = 4_000
#: The labels of the gold file, and the entity types they stand for.
LABELS = {"PER": EntityType.PERSON, "ORG": EntityType.ORGANIZATION}
#: Where a name written in the body is found by a provider: the body's roles (not the headers', nor the subject's).
BODY_ROLES = frozenset({Role.TEXT, Role.GREETING, Role.SIGNATURE})

#: Words dropped from the front of a name: titles, and the article ("The Princeton Review" is "Princeton Review").
_LEADING = frozenset("the mr mrs ms miss dr prof sir dame mister madam".split())
_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


def message_text(record: dict) -> MessageText:
    """A corpus record as extraction is given it: the header participants and the cleaned body."""
    message = GraphMessage.model_validate(record)
    parts = clean_body(message.body)
    sender = message.sender.email_address if message.sender else None

    def people(recipients: list) -> tuple[Participant, ...]:
        return tuple(Participant(r.email_address.name or "", r.email_address.address or "") for r in recipients)

    return MessageText(
        mailbox=record["mailbox"],
        message_id=message.id,
        subject=message.subject or "",
        sender=Participant(sender.name or "", sender.address or "") if sender else None,
        to=people(message.to_recipients),
        cc=people(message.cc_recipients),
        new_text=parts.new_text,
        signature=parts.signature,
        body=parts.extraction_text,
    )


def corpus_messages() -> list[MessageText]:
    """Every corpus message, in file order."""
    with open_corpus() as handle:
        return [message_text(json.loads(line)) for line in handle]


def sample_frame(messages: Iterable[MessageText]) -> list[MessageText]:
    """What the sample is drawn from: messages with text of at most MAX_TEXT_CHARS, one per distinct text."""
    seen: set[str] = set()
    frame = []
    for message in messages:
        text = message.body
        if text.strip() and len(text) <= MAX_TEXT_CHARS and text not in seen:
            seen.add(text)
            frame.append(message)
    return frame


def draw_sample(messages: Iterable[MessageText]) -> list[MessageText]:
    """The gold set's messages in draw order: a seeded sample of the frame (first half dev, second held-out)."""
    return random.Random(SAMPLE_SEED).sample(sample_frame(messages), SAMPLE_SIZE)


@dataclass(frozen=True)
class GoldMessage:
    message_id: str
    split: str  # "dev" or "heldout"
    names: tuple[tuple[str, EntityType], ...]


def load_gold(path: Path = GOLD_FILE) -> list[GoldMessage]:
    gold = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            names = tuple((entity["name"], LABELS[entity["type"]]) for entity in row["entities"])
            gold.append(GoldMessage(row["message_id"], row["split"], names))
    return gold


def normalize_name(name: str) -> str:
    """The form names are compared in: casefolded, without leading titles or "the", possessive 's, punctuation
    or extra spaces.

    "Mr. Jeff Skilling's" and "jeff skilling" are one name; "Enron Corp." and "Enron Corp" too.
    """
    text = unicodedata.normalize("NFKC", name).casefold().replace("\u2019", "'")
    text = re.sub(r"'s\b", "", text)
    text = re.sub(r"[^\w\s&]", " ", text)
    words = text.split()
    while words and words[0] in _LEADING:
        words = words[1:]
    return " ".join(words)


@dataclass(frozen=True)
class Counts:
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
        )

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        wanted = self.true_positives + self.false_negatives
        return self.true_positives / wanted if wanted else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def match_message(gold: Iterable[str], found: Iterable[str]) -> tuple[Counts, list[str], list[str]]:
    """One message and type: each gold name matches at most one found name with the same normalized form.

    Repeats count: two gold "Jeff" and one found "Jeff" are one hit and one miss. Returns the counts and the
    unmatched found names (false positives) and gold names (misses), as written.
    """
    left: dict[str, list[str]] = {}
    for name in gold:
        left.setdefault(normalize_name(name), []).append(name)
    spare: list[str] = []
    true_positives = 0
    for name in found:
        unmatched = left.get(normalize_name(name))
        if unmatched:
            unmatched.pop()
            true_positives += 1
        else:
            spare.append(name)
    missed = [name for names in left.values() for name in names]
    return Counts(true_positives, len(spare), len(missed)), spare, missed


@dataclass(frozen=True)
class Score:
    by_type: dict[EntityType, Counts]
    errors: list[tuple[str, EntityType, list[str], list[str]]]  # (message id, type, false positives, misses)

    @property
    def overall(self) -> Counts:
        total = Counts()
        for counts in self.by_type.values():
            total = total + counts
        return total


def score(gold: Iterable[GoldMessage], found: Callable[[str], list[tuple[str, EntityType]]]) -> Score:
    """Micro-averaged counts per type over the gold messages; ``found(message_id)`` is the system's names.

    The found names are deduplicated per message and type by normalized form first: the gold lists each
    entity once per message, and a system that names "Jeff" three times has still named one person.
    """
    by_type = {entity_type: Counts() for entity_type in LABELS.values()}
    errors = []
    for message in gold:
        system = found(message.message_id)
        for entity_type in LABELS.values():
            wanted = [name for name, kind in message.names if kind is entity_type]
            distinct: dict[str, str] = {}
            for name, kind in system:
                if kind is entity_type:
                    distinct.setdefault(normalize_name(name), name)
            counts, spare, missed = match_message(wanted, distinct.values())
            by_type[entity_type] = by_type[entity_type] + counts
            if spare or missed:
                errors.append((message.message_id, entity_type, spare, missed))
    return Score(by_type, errors)


def scored_names(mentions: Iterable, *, email: re.Pattern[str] = _EMAIL) -> list[tuple[str, EntityType]]:
    """The people and organizations a provider found in the body, as written: mentions with a body role, of
    the two scored types, that are names (an address found in the text is not a name: gold/README.md)."""
    names = []
    for mention in mentions:
        if mention.entity_type not in (EntityType.PERSON, EntityType.ORGANIZATION):
            continue
        if not BODY_ROLES & set(mention.roles) or email.fullmatch(mention.name.strip()):
            continue
        names.append((mention.name, mention.entity_type))
    return names
