"""What one extraction attempt can end in, and the records the pipeline keeps of it.

Production bug #8 confused "the model returned nothing" with "the message mentions nothing". Here every
attempt ends in exactly one named outcome; only ``entities`` and ``none_found`` are successes, and a message
whose every attempt failed is a failed message that the blocking check names.

``rejected`` is the one failure the chain never falls through: the provider said our configuration is wrong
(a revoked key, a model that does not exist, a base URL that is no OpenAI-compatible server). Falling
through would turn a dead key into a quiet day of heuristic answers; instead the message fails and the
partition's ``llm_configuration_accepted`` check names the key variable and the provider's code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Outcome(str, enum.Enum):
    ENTITIES = "entities"  # a valid answer with entities
    NONE_FOUND = "none_found"  # a valid answer that explicitly found nothing
    NO_CONTENT = "no_content"  # None, empty or whitespace content
    TRUNCATED = "truncated"  # finish_reason == "length"
    REFUSED = "refused"  # a refusal or a content filter
    UNPARSABLE = "unparsable"  # not JSON, even after repair
    INVALID = "invalid"  # JSON that fails the schema
    TRANSPORT = "transport"  # errors after the client's own retries
    ERROR = "error"  # the provider raised: a bug in our code or theirs, recorded with its message
    SKIPPED = "skipped"  # the provider could not be used for this message (a reasoning model, no key for it)
    UNGROUNDED = "ungrounded"  # a valid answer whose every text entity the message does not support
    REJECTED = "rejected"  # the provider rejected the configuration (key, model, base URL): the chain stops

    @property
    def succeeded(self) -> bool:
        return self in (Outcome.ENTITIES, Outcome.NONE_FOUND)

    @property
    def stops_chain(self) -> bool:
        """No later provider may stand in: the configuration is wrong, and a fallback would hide it."""
        return self is Outcome.REJECTED


class EntityType(str, enum.Enum):
    PERSON = "person"
    ORGANIZATION = "organization"
    PROJECT = "project"
    PRODUCT = "product"
    LOCATION = "location"
    EVENT = "event"
    DOCUMENT = "document"
    MONEY = "money"
    DATE = "date"
    PHONE = "phone"
    URL = "url"


class Role(str, enum.Enum):
    """Where in a message an entity was found. Header roles make communication links; text roles co-mention."""

    SENDER = "sender"
    TO = "to"
    CC = "cc"
    DOMAIN = "domain"  # an organization read from a participant's address domain
    SUBJECT = "subject"
    GREETING = "greeting"
    TEXT = "text"
    SIGNATURE = "signature"


TEXT_ROLES = frozenset({Role.SUBJECT, Role.GREETING, Role.TEXT, Role.SIGNATURE})


@dataclass(frozen=True)
class EntityMention:
    """One entity as one message mentions it. ``roles``: every place in the message it was found, first
    found first (header roles before text roles)."""

    entity_key: str
    name: str
    entity_type: EntityType
    roles: tuple[Role, ...]
    evidence: str


@dataclass(frozen=True)
class RelationMention:
    """A relation an LLM read in one message, between two entity keys of the same message."""

    source_key: str
    target_key: str
    relation: str
    evidence: str


@dataclass(frozen=True)
class TokenUsage:
    prompt: int = 0
    completion: int = 0
    reasoning: int = 0
    cached: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt + other.prompt,
            self.completion + other.completion,
            self.reasoning + other.reasoning,
            self.cached + other.cached,
        )


@dataclass(frozen=True)
class Attempt:
    """One provider's try at one message."""

    provider: str
    model: str
    outcome: Outcome
    reason: str
    mentions: tuple[EntityMention, ...] = ()
    latency_ms: float = 0.0
    relations: tuple[RelationMention, ...] = ()
    usage: TokenUsage = TokenUsage()
    cost_usd: float = 0.0
    #: The start of the raw answer, e-mail addresses and key-like strings masked (for logs and rows).
    raw_preview: str = ""
    #: Served from the cache: no request was made.
    cache_hit: bool = False
    #: Entities and relations the model returned that the message does not support (see grounding.py).
    dropped_entities: int = 0
    dropped_relations: int = 0
    #: The validated answer as JSON, for the cache (LLM providers only; only successes are cached).
    answer_json: str | None = None
    #: How many entities the model's answer listed, before grounding (LLM providers only).
    answered_entities: int = 0
    #: The provider's own error code for a rejected configuration (``invalid_api_key``, ``model_not_found``,
    #: ``key_not_set``...), and the HTTP status when there was one.
    error_code: str = ""
    http_status: int | None = None
    #: The environment variable of the key the attempt used (its name, never the key), for LLM providers.
    key_env: str = ""
    #: A request went to the provider (cache hits, skips and answers remembered from earlier did not).
    request_sent: bool = False

    @property
    def text_mentions(self) -> tuple[EntityMention, ...]:
        """The entities read from the text (header participants excluded: they are found whatever the model
        says, so they must not mask a model that went quiet)."""
        return tuple(m for m in self.mentions if any(role in TEXT_ROLES for role in m.roles))


@dataclass
class MessageExtraction:
    """Every attempt for one message; the mentions are those of the first successful attempt."""

    mailbox: str
    message_id: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def accepted(self) -> Attempt | None:
        return next((a for a in self.attempts if a.outcome.succeeded), None)

    @property
    def rejected(self) -> Attempt | None:
        return next((a for a in self.attempts if a.outcome is Outcome.REJECTED), None)

    def fallback(self, first_is_llm: bool) -> str | None:
        """How the accepted answer was reached when an earlier provider failed: ``model_fallback`` (a later
        LLM model answered), ``heuristic_fallback`` (the offline heuristic did: a drop in quality), or None
        (the first provider answered, or the chain starts with the heuristic, where nothing is degraded)."""
        accepted = self.accepted
        if not first_is_llm or accepted is None or accepted is self.attempts[0]:
            return None
        return "heuristic_fallback" if accepted.provider == "heuristic" else "model_fallback"

    @property
    def succeeded(self) -> bool:
        return self.accepted is not None

    @property
    def failure_reasons(self) -> str:
        return "; ".join(f"{a.provider}/{a.model}: {a.outcome.value}: {a.reason}" for a in self.attempts)
