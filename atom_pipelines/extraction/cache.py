"""The extraction cache's keys: what the model was asked, and with which prompt, schema, provider and model.

Only good answers are ever put (the session decides), so a re-materialized partition costs no LLM call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from atom_pipelines.extraction.prompt import PROMPT_VERSION, prompt_for
from atom_pipelines.extraction.providers import MessageText
from atom_pipelines.extraction.schema import schema_hash
from atom_pipelines.provider_chain import ProviderSpec


class ExtractionCache:
    """Where good answers are kept between runs (the store implements ``cache_get``/``cache_put``)."""

    def __init__(self, get: Callable[[Sequence[str]], dict], put: Callable[[dict], None]) -> None:
        self.get = get
        self.put = put


def prompt_hash(message: MessageText) -> str:
    """What the model is asked, hashed: two mailboxes holding a copy of the same mail share it."""
    return hashlib.sha256(prompt_for(message).encode()).hexdigest()


def cache_key(prompt_hash: str, spec: ProviderSpec) -> str:
    parts = [prompt_hash, PROMPT_VERSION, schema_hash(), spec.kind, spec.model]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
