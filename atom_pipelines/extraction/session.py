"""One ``extract_all`` call: each message through the chain, one named attempt per provider tried.

The session holds what is shared across the messages of a call: one client and one pacer per key variable,
the token budget, and the cache. A provider that raises (a bug) is recorded as an ``error`` attempt and the
chain falls through; nothing a provider does is lost without a row.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from atom_pipelines.extraction.budget import BudgetExceeded, TokenBudget
from atom_pipelines.extraction.cache import ExtractionCache, cache_key, prompt_hash
from atom_pipelines.extraction.heuristic import HeuristicProvider
from atom_pipelines.extraction.openai_provider import grounded_attempt
from atom_pipelines.extraction.outcomes import Attempt, MessageExtraction, Outcome, TokenUsage
from atom_pipelines.extraction.prompt import PROMPT_VERSION, prompt_for
from atom_pipelines.extraction.providers import ExtractionProvider, MessageText
from atom_pipelines.extraction.ratelimit import RequestPacer
from atom_pipelines.extraction.schema import ExtractionAnswer, schema_hash
from atom_pipelines.extraction.tokens import prompt_tokens
from atom_pipelines.partitions import partition_key
from atom_pipelines.provider_chain import ProviderSpec

if TYPE_CHECKING:
    from atom_pipelines.extraction.extractor import EntityExtractor

log = logging.getLogger(__name__)


class ExtractionSession:
    """One extract_all call: clients and pacers per key variable, the budget, the cache."""

    def __init__(self, extractor: EntityExtractor, cache: ExtractionCache | None) -> None:
        self.extractor = extractor
        self.cache = cache
        self.specs, _ = extractor.extraction_specs()
        self.heuristic = HeuristicProvider()
        self.budget = TokenBudget(extractor.budget_tokens_per_partition, extractor.budget_tokens_per_run)
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
        message_prompt_hash = prompt_hash(message) if any(s.kind != "heuristic" for s in self.specs) else ""
        for spec in self.specs:
            attempt = self._attempt(spec, message, message_prompt_hash)
            result.attempts.append(attempt)
            log_attempt(message, attempt)
            if attempt.outcome.succeeded:
                break
        return result

    def _attempt(self, spec: ProviderSpec, message: MessageText, message_prompt_hash: str) -> Attempt:
        if spec.kind == "heuristic":
            return run_provider(self.heuristic, message)
        key_env = self.extractor.key_env_for(message.mailbox)
        provider = self._provider(spec, key_env)
        if provider is None:
            return Attempt(
                spec.kind,
                spec.model,
                Outcome.SKIPPED,
                f"no API key: ${key_env} is not set for mailbox {message.mailbox} (see ATOM_LLM_KEYS)",
            )
        key = cache_key(message_prompt_hash, spec)
        if self.cache is not None:
            cached = self.cache.get([key]).get(key)
            if cached is not None:
                answer = ExtractionAnswer.model_validate_json(cached["answer_json"])
                outcome = Outcome(cached["outcome"])
                call_fields = {"provider": spec.kind, "model": spec.model, "cache_hit": True, "raw_preview": "<cache>"}
                return grounded_attempt(answer, message, outcome, f"cached {outcome.value}", call_fields)
        # The request as tiktoken counts it (system prompt, the message, the chat framing) plus the whole output
        # allowance: what the call can spend at most, settled below at what the provider says it used.
        estimate = prompt_tokens(prompt_for(message)) + self.extractor.max_output_tokens
        # Named as Dagster names the partition, so a BudgetExceeded says which one to look at.
        partition = partition_key(message.mailbox, message.day) if message.day else message.mailbox
        self.budget.reserve(partition, estimate)
        attempt = run_provider(provider, message)
        self.budget.settle(partition, estimate, attempt.usage.total)
        if self.cache is not None and attempt.outcome.succeeded and attempt.answer_json is not None:
            self.cache.put(
                {
                    "cache_key": key,
                    "prompt_hash": message_prompt_hash,
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

    def failed(outcome: Outcome, reason: str) -> Attempt:
        latency_ms = (time.perf_counter() - started) * 1000
        return Attempt(provider.name, provider.model, outcome, reason, latency_ms=latency_ms)

    try:
        attempt = provider.extract(message)
    except BudgetExceeded:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt that the blocking check reports
        log.exception("provider %s raised on message %s", provider.name, message.message_id)
        return failed(Outcome.ERROR, f"{type(exc).__name__}: {exc}")
    if not isinstance(attempt, Attempt):
        return failed(Outcome.NO_CONTENT, f"provider returned {type(attempt).__name__}, not an Attempt")
    return attempt


def log_attempt(message: MessageText, attempt: Attempt) -> None:
    level = logging.INFO if attempt.outcome.succeeded else logging.WARNING
    usage: TokenUsage = attempt.usage
    log.log(
        level,
        "extraction message=%s provider=%s model=%s outcome=%s latency_ms=%.0f tokens=%d+%d%s cache=%s preview=%s%s",
        message.message_id,
        attempt.provider,
        attempt.model,
        attempt.outcome.value,
        attempt.latency_ms,
        usage.prompt,
        usage.completion,
        f" reasoning={usage.reasoning}" if usage.reasoning else "",
        "hit" if attempt.cache_hit else "miss",
        attempt.raw_preview or "-",
        "" if attempt.outcome.succeeded else f" reason={attempt.reason}; falling through",
    )
