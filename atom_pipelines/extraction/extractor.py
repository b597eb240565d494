"""The extractor resource: an ordered chain of providers, tried per message until one succeeds.

Defense in depth, as the production post-mortem asked for it (docs/reference/production_lessons.md):
1. routing: a reasoning model (o-series, or any model named in ``ATOM_LLM_REASONING_MODELS``) never gets
   an extraction request; it is left out of the chain with a warning (and shown in the key status);
2. handler: every failed outcome (empty, None, truncated, refused, unparsable, invalid, ungrounded,
   transport, a provider that raised) falls through to the next provider (session.py), except a rejected
   configuration (a revoked key, an unknown model, a base URL that is no OpenAI server), which stops the
   chain and fails the partition: a fallback would hide it;
3. engine: answers are repaired where repair is safe, grounded in the message, cached only when good, and
   a message that no provider could extract fails the partition's blocking check, naming every attempt.

Keys are never config values: the resource holds the *names* of environment variables
(``OPENAI_API_KEY``, or per mailbox/domain via ``ATOM_LLM_KEYS``) and reads them when it calls.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import openai
from dagster import ConfigurableResource
from pydantic import Field

from atom_pipelines.extraction.cache import ExtractionCache
from atom_pipelines.extraction.openai_provider import OpenAIProvider
from atom_pipelines.extraction.outcomes import MessageExtraction
from atom_pipelines.extraction.providers import ExtractionProvider, MessageText
from atom_pipelines.extraction.ratelimit import RequestPacer
from atom_pipelines.extraction.session import ExtractionSession
from atom_pipelines.provider_chain import (
    DEFAULT_CHAIN_WITHOUT_KEY,
    DEFAULT_KEY_ENV,
    ChainConfigError,
    ProviderSpec,
    is_reasoning_model,
    parse_chain,
    parse_key_map,
)

log = logging.getLogger(__name__)


class EntityExtractor(ConfigurableResource):
    """Extracts entities from messages through the provider chain."""

    # Plain defaults: resources.py builds the code location's extractor from the settings (config.py), which
    # read the ATOM_LLM_* variables; nothing here reads the environment except the keys, at call time.
    chain: str = Field(default=DEFAULT_CHAIN_WITHOUT_KEY, description="Providers tried in order (ATOM_LLM_CHAIN).")
    openai_base_url: str | None = Field(
        default=None, description="Any OpenAI-compatible server (OPENAI_BASE_URL); None is OpenAI itself."
    )
    key_env: str = Field(default=DEFAULT_KEY_ENV, description="Environment variable of the default API key.")
    tenant_keys: str = Field(
        default="",
        description="'mailbox-or-domain=ENV_VAR,...': which key variable extracts whose mail (ATOM_LLM_KEYS).",
    )
    reasoning_models: str = Field(
        default="",
        description="More model names never used for extraction (comma-separated), beside the o-series "
        "(ATOM_LLM_REASONING_MODELS).",
    )
    max_concurrency: int = Field(
        default=4, ge=1, description="Messages extracted at once within a run (ATOM_LLM_CONCURRENCY)."
    )
    requests_per_minute: float | None = Field(
        default=None,
        gt=0,
        description="Client-side pacing per key (ATOM_LLM_RPM); the provider's rate-limit headers are honoured too.",
    )
    max_retries: int = Field(default=3, description="The openai client's retries (honouring Retry-After).")
    timeout_seconds: float = Field(default=60.0)
    max_output_tokens: int = Field(default=2_000)
    budget_tokens_per_partition: int | None = Field(
        default=None,
        description="Stop before a mailbox-day spends more tokens than this (ATOM_LLM_BUDGET_TOKENS_PER_PARTITION).",
    )
    budget_tokens_per_run: int | None = Field(
        default=None,
        description="Stop before a run spends more tokens than this (ATOM_LLM_BUDGET_TOKENS_PER_RUN).",
    )

    # -- the chain ------------------------------------------------------------------------------------

    def specs(self) -> list[ProviderSpec]:
        """The chain as written, parsed (reasoning models included)."""
        return parse_chain(self.chain)

    def is_reasoning_model(self, model: str) -> bool:
        return is_reasoning_model(model, self.reasoning_models)

    def extraction_specs(self) -> tuple[list[ProviderSpec], list[ProviderSpec]]:
        """(the providers extraction uses, the reasoning models left out of it)."""
        used, skipped = [], []
        for spec in self.specs():
            (skipped if spec.kind == "openai" and self.is_reasoning_model(spec.model) else used).append(spec)
        for spec in skipped:
            log.warning(
                "%s is a reasoning model: it is skipped for extraction and receives no request "
                "(reasoning models may answer with no content; production bug #9)",
                spec.label,
            )
        if not used:
            raise ChainConfigError(f"ATOM_LLM_CHAIN {self.chain!r} has no provider usable for extraction")
        return used, skipped

    def key_env_for(self, mailbox: str) -> str:
        """The environment variable holding the key for this mailbox's mail: mailbox, then domain, then default."""
        mapping = parse_key_map(self.tenant_keys)
        mailbox = mailbox.lower()
        return mapping.get(mailbox) or mapping.get(mailbox.rpartition("@")[2]) or self.key_env

    def build_provider(self, spec: ProviderSpec, key_env: str, pacer: RequestPacer) -> ExtractionProvider | None:
        """The provider for one chain entry and key, or None when its key is not set."""
        if spec.kind != "openai":
            raise ChainConfigError(f"no provider of kind {spec.kind!r}")
        client = self.client_for(key_env)
        if client is None:
            return None
        return OpenAIProvider(client, spec.model, pacer, max_output_tokens=self.max_output_tokens)

    def client_for(self, key_env: str) -> openai.OpenAI | None:
        """A client with the key of this variable, or None when it is not set."""
        key = os.environ.get(key_env)
        if not key:
            return None
        return openai.OpenAI(
            api_key=key, base_url=self.openai_base_url, max_retries=self.max_retries, timeout=self.timeout_seconds
        )

    # -- extraction -----------------------------------------------------------------------------------

    def session(self, cache: ExtractionCache | None = None) -> ExtractionSession:
        """What one run's extraction shares across its messages (and what it learned, for its report)."""
        return ExtractionSession(self, cache)

    def extract_all(
        self,
        messages: Sequence[MessageText],
        cache: ExtractionCache | None = None,
        session: ExtractionSession | None = None,
    ) -> list[MessageExtraction]:
        """One :class:`MessageExtraction` per message, in the order given."""
        session = session or ExtractionSession(self, cache)
        if self.max_concurrency == 1 or len(messages) < 2:
            return [session.extract(m) for m in messages]
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(session.extract, messages))
