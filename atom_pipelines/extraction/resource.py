"""The extractor resource: an ordered chain of providers, tried per message until one succeeds.

Defense in depth, as the production post-mortem asked for it (production_lessons.md):
1. routing: a reasoning model (o-series, or any model named in ``ATOM_LLM_REASONING_MODELS``) never gets
   an extraction request; it is left out of the chain with a warning (and shown in the key status);
2. handler: every failed outcome (empty, None, truncated, refused, unparsable, invalid, transport, a
   provider that raised) falls through to the next provider;
3. engine: answers are repaired where repair is safe, grounded in the message, cached only when good, and
   a message that no provider could extract fails the partition's blocking check, naming every attempt.

Keys are never config values: the resource holds the *names* of environment variables
(``OPENAI_API_KEY``, or per mailbox/domain via ``ATOM_LLM_KEYS``) and reads them when it calls.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import openai
from dagster import ConfigurableResource
from pydantic import Field

from atom_pipelines.extraction.heuristic import HeuristicProvider
from atom_pipelines.extraction.openai_provider import OpenAIProvider, grounded_attempt, prompt_for
from atom_pipelines.extraction.outcomes import Attempt, MessageExtraction, Outcome, TokenUsage
from atom_pipelines.extraction.prompt import PROMPT_VERSION
from atom_pipelines.extraction.providers import ExtractionProvider, MessageText
from atom_pipelines.extraction.ratelimit import RequestPacer
from atom_pipelines.extraction.schema import ExtractionAnswer, schema_hash

log = logging.getLogger(__name__)

DEFAULT_CHAIN_WITH_KEY = "openai:gpt-4o-mini,openai:gpt-4o,heuristic"
DEFAULT_CHAIN_WITHOUT_KEY = "heuristic"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"

#: o1, o3, o4-mini...: reasoning models spend their tokens thinking and may return no content (bug #9).
_REASONING_MODEL = re.compile(r"^o\d")


def default_chain() -> str:
    if os.environ.get("ATOM_LLM_CHAIN"):
        return os.environ["ATOM_LLM_CHAIN"]
    return DEFAULT_CHAIN_WITH_KEY if os.environ.get(DEFAULT_KEY_ENV) else DEFAULT_CHAIN_WITHOUT_KEY


class ChainConfigError(ValueError):
    """``ATOM_LLM_CHAIN`` names a provider this build does not have, or nothing usable."""


class BudgetExceeded(RuntimeError):
    """Extraction stopped before a token budget would be exceeded."""


@dataclass(frozen=True)
class ProviderSpec:
    kind: str  # "openai" | "heuristic"
    model: str

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.model}" if self.kind != "heuristic" else "heuristic"


class ExtractionCache:
    """Where good answers are kept between runs (the store implements ``cache_get``/``cache_put``)."""

    def __init__(self, get: Callable[[Sequence[str]], dict], put: Callable[[dict], None]) -> None:
        self.get = get
        self.put = put


def content_hash(message: MessageText) -> str:
    """What the model is asked, hashed: two mailboxes holding a copy of the same mail share it."""
    return hashlib.sha256(prompt_for(message).encode()).hexdigest()


def cache_key(message_hash: str, spec: ProviderSpec) -> str:
    parts = [message_hash, PROMPT_VERSION, schema_hash(), spec.kind, spec.model]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class EntityExtractor(ConfigurableResource):
    """Extracts entities from messages through the provider chain."""

    chain: str = Field(default_factory=default_chain, description="Providers tried in order (ATOM_LLM_CHAIN).")
    openai_base_url: str | None = Field(
        default_factory=lambda: os.environ.get("OPENAI_BASE_URL") or None,
        description="Any OpenAI-compatible server (OPENAI_BASE_URL); None is OpenAI itself.",
    )
    key_env: str = Field(default=DEFAULT_KEY_ENV, description="Environment variable of the default API key.")
    tenant_keys: str = Field(
        default_factory=lambda: os.environ.get("ATOM_LLM_KEYS", ""),
        description="'mailbox-or-domain=ENV_VAR,...': which key variable extracts whose mail (ATOM_LLM_KEYS).",
    )
    reasoning_models: str = Field(
        default_factory=lambda: os.environ.get("ATOM_LLM_REASONING_MODELS", ""),
        description="More model names never used for extraction (comma-separated), beside the o-series.",
    )
    max_concurrency: int = Field(
        default_factory=lambda: int(os.environ.get("ATOM_LLM_CONCURRENCY") or 4), ge=1,
        description="Messages extracted at once within a run (ATOM_LLM_CONCURRENCY).",
    )
    requests_per_minute: float | None = Field(
        default_factory=lambda: float(os.environ["ATOM_LLM_RPM"]) if os.environ.get("ATOM_LLM_RPM") else None,
        description="Client-side pacing per key (ATOM_LLM_RPM); the provider's rate-limit headers are honoured too.",
    )
    max_retries: int = Field(default=3, description="The openai client's retries (honouring Retry-After).")
    timeout_seconds: float = Field(default=60.0)
    max_output_tokens: int = Field(default=2_000)
    budget_tokens_per_partition: int | None = Field(
        default_factory=lambda: _optional_int("ATOM_LLM_BUDGET_TOKENS_PER_PARTITION"),
        description="Stop before a mailbox-day spends more tokens than this (ATOM_LLM_BUDGET_TOKENS_PER_PARTITION).",
    )
    budget_tokens_per_run: int | None = Field(
        default_factory=lambda: _optional_int("ATOM_LLM_BUDGET_TOKENS_PER_RUN"),
        description="Stop before a run spends more tokens than this (ATOM_LLM_BUDGET_TOKENS_PER_RUN).",
    )

    # -- the chain ------------------------------------------------------------------------------------

    def specs(self) -> list[ProviderSpec]:
        """The chain as written, parsed (reasoning models included)."""
        specs = []
        for entry in (part.strip() for part in self.chain.split(",") if part.strip()):
            kind, _, model = entry.partition(":")
            if kind == "heuristic" and not model:
                specs.append(ProviderSpec("heuristic", HeuristicProvider.model))
            elif kind == "openai" and model:
                specs.append(ProviderSpec("openai", model))
            else:
                raise ChainConfigError(
                    f"ATOM_LLM_CHAIN entry {entry!r} is not a provider (use 'openai:<model>' or 'heuristic')"
                )
        if not specs:
            raise ChainConfigError("ATOM_LLM_CHAIN is empty: at least one provider is needed")
        return specs

    def is_reasoning_model(self, model: str) -> bool:
        extra = {name.strip() for name in self.reasoning_models.split(",") if name.strip()}
        return bool(_REASONING_MODEL.match(model)) or model in extra

    def extraction_specs(self) -> tuple[list[ProviderSpec], list[ProviderSpec]]:
        """(the providers extraction uses, the reasoning models left out of it)."""
        used, skipped = [], []
        for spec in self.specs():
            (skipped if spec.kind == "openai" and self.is_reasoning_model(spec.model) else used).append(spec)
        for spec in skipped:
            log.warning(
                "%s is a reasoning model: it is skipped for extraction and receives no request "
                "(reasoning models may answer with no content; production bug #9)", spec.label,
            )
        if not used:
            raise ChainConfigError(f"ATOM_LLM_CHAIN {self.chain!r} has no provider usable for extraction")
        return used, skipped

    def key_env_for(self, mailbox: str) -> str:
        """The environment variable holding the key for this mailbox's mail: mailbox, then domain, then default."""
        mapping = {}
        for entry in (e.strip() for e in self.tenant_keys.split(",") if e.strip()):
            who, _, env = entry.partition("=")
            if not env:
                raise ChainConfigError(f"ATOM_LLM_KEYS entry {entry!r} is not 'mailbox-or-domain=ENV_VAR'")
            mapping[who.strip().lower()] = env.strip()
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

    def extract_all(
        self, messages: Sequence[MessageText], cache: ExtractionCache | None = None
    ) -> list[MessageExtraction]:
        """One :class:`MessageExtraction` per message, in the order given."""
        session = _Session(self, cache)
        if self.max_concurrency == 1 or len(messages) < 2:
            return [session.extract(m) for m in messages]
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(session.extract, messages))


def _optional_int(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    if not value.isdigit():
        raise ValueError(f"{name}={value!r} must be a whole number of tokens")
    return int(value)


@dataclass
class _Budget:
    per_partition: int | None
    per_run: int | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    spent_run: int = 0
    spent_partition: dict = field(default_factory=lambda: defaultdict(int))
    calls: int = 0

    def reserve(self, partition: object, estimate: int) -> None:
        with self.lock:
            if self.per_run is not None and self.spent_run + estimate > self.per_run:
                raise BudgetExceeded(
                    f"token budget per run ({self.per_run:,}) would be exceeded: {self.spent_run:,} tokens "
                    f"spent or reserved on {self.calls} calls, next call needs up to {estimate:,}"
                )
            if self.per_partition is not None and self.spent_partition[partition] + estimate > self.per_partition:
                raise BudgetExceeded(
                    f"token budget per partition ({self.per_partition:,}) would be exceeded in {partition}: "
                    f"{self.spent_partition[partition]:,} tokens spent or reserved, next call needs up to {estimate:,}"
                )
            self.spent_run += estimate
            self.spent_partition[partition] += estimate
            self.calls += 1

    def settle(self, partition: object, estimate: int, actual: int) -> None:
        with self.lock:
            self.spent_run += actual - estimate
            self.spent_partition[partition] += actual - estimate


class _Session:
    """One extract_all call: clients and pacers per key variable, the budget, the cache."""

    def __init__(self, extractor: EntityExtractor, cache: ExtractionCache | None) -> None:
        self.extractor = extractor
        self.cache = cache
        self.specs, _ = extractor.extraction_specs()
        self.heuristic = HeuristicProvider()
        self.budget = _Budget(extractor.budget_tokens_per_partition, extractor.budget_tokens_per_run)
        self._providers: dict[tuple[ProviderSpec, str], ExtractionProvider | None] = {}
        self._pacers: dict[str, RequestPacer] = {}
        self._lock = threading.Lock()

    def _provider(self, spec: ProviderSpec, key_env: str) -> ExtractionProvider | None:
        with self._lock:
            if (spec, key_env) not in self._providers:
                pacer = self._pacers.setdefault(key_env, RequestPacer(self.extractor.requests_per_minute))
                self._providers[(spec, key_env)] = self.extractor.build_provider(spec, key_env, pacer)
            return self._providers[(spec, key_env)]

    def extract(self, message: MessageText) -> MessageExtraction:
        result = MessageExtraction(mailbox=message.mailbox, message_id=message.message_id)
        message_hash = content_hash(message) if any(s.kind != "heuristic" for s in self.specs) else ""
        for spec in self.specs:
            attempt = self._attempt(spec, message, message_hash)
            result.attempts.append(attempt)
            _log_attempt(message, attempt)
            if attempt.outcome.succeeded:
                break
        return result

    def _attempt(self, spec: ProviderSpec, message: MessageText, message_hash: str) -> Attempt:
        if spec.kind == "heuristic":
            return run_provider(self.heuristic, message)
        key_env = self.extractor.key_env_for(message.mailbox)
        provider = self._provider(spec, key_env)
        if provider is None:
            return Attempt(
                spec.kind, spec.model, Outcome.SKIPPED,
                f"no API key: ${key_env} is not set for mailbox {message.mailbox} (see ATOM_LLM_KEYS)",
            )
        key = cache_key(message_hash, spec)
        if self.cache is not None:
            cached = self.cache.get([key]).get(key)
            if cached is not None:
                answer = ExtractionAnswer.model_validate_json(cached["answer_json"])
                outcome = Outcome(cached["outcome"])
                base = {"provider": spec.kind, "model": spec.model, "cache_hit": True, "raw_preview": "<cache>"}
                return grounded_attempt(answer, message, outcome, f"cached {outcome.value}", base)
        # Conservative: ~3 characters a token for the message, the system prompt, and the whole output allowance.
        estimate = len(prompt_for(message)) // 3 + 400 + self.extractor.max_output_tokens
        self.budget.reserve((message.mailbox, message.day), estimate)
        attempt = run_provider(provider, message)
        self.budget.settle((message.mailbox, message.day), estimate, attempt.usage.total)
        if self.cache is not None and attempt.outcome.succeeded and attempt.answer_json is not None:
            self.cache.put(
                {
                    "cache_key": key,
                    "content_hash": message_hash,
                    "prompt_version": PROMPT_VERSION,
                    "schema_hash": schema_hash(),
                    "provider": spec.kind,
                    "model": spec.model,
                    "outcome": attempt.outcome.value,
                    "answer_json": attempt.answer_json,
                }
            )
        return attempt


def run_provider(provider: ExtractionProvider, message: MessageText) -> Attempt:
    """Call one provider; a provider that raises (a bug) becomes an ``error`` attempt, never a lost message."""
    started = time.perf_counter()
    try:
        attempt = provider.extract(message)
    except BudgetExceeded:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt that the blocking check reports
        log.exception("provider %s raised on message %s", provider.name, message.message_id)
        return Attempt(
            provider=provider.name,
            model=provider.model,
            outcome=Outcome.ERROR,
            reason=f"{type(exc).__name__}: {exc}",
            latency_ms=(time.perf_counter() - started) * 1000,
        )
    if not isinstance(attempt, Attempt):
        return Attempt(
            provider=provider.name,
            model=provider.model,
            outcome=Outcome.NO_CONTENT,
            reason=f"provider returned {type(attempt).__name__}, not an Attempt",
            latency_ms=(time.perf_counter() - started) * 1000,
        )
    return attempt


def _log_attempt(message: MessageText, attempt: Attempt) -> None:
    level = logging.INFO if attempt.outcome.succeeded else logging.WARNING
    usage: TokenUsage = attempt.usage
    log.log(
        level,
        "extraction message=%s provider=%s model=%s outcome=%s latency_ms=%.0f tokens=%d+%d%s cache=%s preview=%s%s",
        message.message_id, attempt.provider, attempt.model, attempt.outcome.value, attempt.latency_ms,
        usage.prompt, usage.completion, f" reasoning={usage.reasoning}" if usage.reasoning else "",
        "hit" if attempt.cache_hit else "miss", attempt.raw_preview or "-",
        "" if attempt.outcome.succeeded else f" reason={attempt.reason}; falling through",
    )
