"""What LLM extraction returns, as one pydantic model: it produces the JSON schema sent to the provider
(structured outputs, strict) and validates what comes back. One model, so the two can never disagree."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: The fixed set of entity types an LLM may return (the heuristic provider adds phone and url).
LLMEntityType = Literal[
    "person", "organization", "project", "product", "location", "event", "document", "money", "date"
]


class ExtractedEntity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The entity as written in the message.")
    type: LLMEntityType
    email: str | None = Field(description="The person's e-mail address when the message shows it, else null.")
    evidence: str = Field(description="A short verbatim quote from the message that mentions the entity.")


class ExtractedRelation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Name of an entity in `entities`.")
    target: str = Field(description="Name of an entity in `entities`.")
    relation: str = Field(description="A short snake_case verb phrase, e.g. works_for, manages, negotiates_with.")
    evidence: str = Field(description="A short verbatim quote from the message that states the relation.")


class ExtractionAnswer(BaseModel):
    """The whole answer for one message. Empty lists mean the model found nothing, explicitly."""

    model_config = ConfigDict(extra="forbid")

    entities: list[ExtractedEntity]
    relations: list[ExtractedRelation]


def response_json_schema() -> dict:
    """The strict JSON schema for ``response_format`` (every property required, no extra properties)."""
    return ExtractionAnswer.model_json_schema()


def schema_hash() -> str:
    """Part of the cache key: a schema change invalidates cached answers on purpose."""
    return hashlib.sha256(json.dumps(response_json_schema(), sort_keys=True).encode()).hexdigest()[:16]
