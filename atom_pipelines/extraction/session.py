"""One ``extract_all`` call: each message through the chain, one named attempt per provider tried.

The session holds what is shared across the messages of a call (a run's step): one client and one pacer
per key variable, the token budget, the cache, and what the run learned about the providers. A provider
that raises (a bug) is recorded as an ``error`` attempt and the chain falls through; nothing a provider
does is lost without a row.

What the run learns, it keeps for the rest of the run:
- a provider that rejected the configuration (outcome ``rejected``: a revoked key, an unknown model) is
  not asked again for that key: every later message gets the same ``rejected`` attempt without a request,
  and the chain stops there (no fallback hides a dead key);
- a model that answered with reasoning tokens and no content is a reasoning model whatever its name
  (production bug #9): it is logged once, counted, and skipped for the rest of the run.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from atom_pipelines.extraction.budget import BudgetExceeded, TokenBudget
from atom_pipelines.extraction.cache import ExtractionCache, cache_key, prompt_hash
from atom_pipelines.extraction.heuristic import HeuristicProvider
from atom_pipelines.extraction.openai_provider import REASONING_ANSWER, grounded_attempt
from atom_pipelines.extraction.outcomes import Attempt, MessageExtraction, Outcome, TokenUsage
from atom_pipelines.extraction.prompt import PROMPT_VERSION, prompt_for
from atom_pipelines.extraction.providers import ExtractionProvider, MessageText
from atom_pipelines.extraction.ratelimit import RequestPacer
from atom_pipelines.extraction.schema import ExtractionAnswer, schema_hash
from atom_pipelines.extraction.tokens import prompt_tokens
from atom_pipelines.partitions import mailbox_day_key
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
        #: (chain entry, key variable) -> the attempt that was rejected; the same answer for every message.
        self._rejected: dict[tuple[ProviderSpec, str], Attempt] = {}
        #: Models recognised as reasoning models by their answers during this run.
        self.reasoning_learned: set[str] = set()

    @property
    def first_is_llm(self) -> bool:
        """The chain's first usable provider is an LLM: a heuristic answer is then a fallback, not the plan."""
        return self.specs[0].kind != "heuristic"

    def _provider(self, spec: ProviderSpec, key_env: str) -> ExtractionProvider | None:
        with self._lock:
            if (spec, key_env) not in self._providers:
                pacer = self._pacers.setdefault(key_env, RequestPacer(self.extractor.requests_per_minute))
                self._providers[(spec, key_env)] = self.extractor.build_provider(spec, key_env, pacer)
            return self._providers[(spec, key_env)]

    def extract(self, message: MessageText) -> MessageExtraction:
        result = MessageExtraction(mailbox=message.mailbox, message_id=message.message_id)
        message_prompt_hash = prompt_hash(message) if any(s.kind != "heuristic" for s in self.specs) else ""
        for number, spec in enumerate(self.specs, start=1):
            attempt = self._attempt(spec, message, message_prompt_hash, first=number == 1)
            result.attempts.append(attempt)
            log_attempt(message, attempt, number, len(self.specs))
            if attempt.outcome.succeeded or attempt.outcome.stops_chain:
                break
        if not result.succeeded:
            log_give_up(message, result)
        return result

    def _attempt(self, spec: ProviderSpec, message: MessageText, message_prompt_hash: str, first: bool) -> Attempt:
        if spec.kind == "heuristic":
            return run_provider(self.heuristic, message)
        if spec.model in self.reasoning_learned:
            return Attempt(
                spec.kind,
                spec.model,
                Outcome.SKIPPED,
                "a reasoning model (it answered with reasoning tokens and no content earlier in this run)",
            )
        key_env = self.extractor.key_env_for(message.mailbox)
        if (earlier := self._rejected.get((spec, key_env))) is not None:
            return replace(
                earlier,
                reason=f"{earlier.reason} (rejected earlier in this run; not asked again)",
                latency_ms=0.0,
                raw_preview="",
            )
        provider = self._provider(spec, key_env)
        if provider is None:
            reason = f"no API key: ${key_env} is not set for mailbox {message.mailbox} (see ATOM_LLM_KEYS)"
            if first:
                # The chain was meant to start with a model: a missing key is a configuration error, not a skip.
                return Attempt(
                    spec.kind, spec.model, Outcome.REJECTED, reason, error_code="key_not_set", key_env=key_env
                )
            return Attempt(spec.kind, spec.model, Outcome.SKIPPED, reason)
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
        partition = mailbox_day_key(message.mailbox, message.day) if message.day else message.mailbox
        self.budget.reserve(partition, estimate)
        attempt = replace(run_provider(provider, message), key_env=key_env)
        self.budget.settle(partition, estimate, attempt.usage.total)
        self._learn(spec, key_env, attempt)
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

    def _learn(self, spec: ProviderSpec, key_env: str, attempt: Attempt) -> None:
        with self._lock:
            if attempt.outcome is Outcome.REJECTED:
                self._rejected.setdefault((spec, key_env), attempt)
            elif attempt.reason.startswith(REASONING_ANSWER) and spec.model not in self.reasoning_learned:
                self.reasoning_learned.add(spec.model)
                log.warning(
                    "%s answered with %d reasoning tokens and no content: it is a reasoning model and gets no "
                    "more requests in this run (name it in ATOM_LLM_REASONING_MODELS to skip it from the start)",
                    spec.label,
                    attempt.usage.reasoning,
                )


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


def log_attempt(message: MessageText, attempt: Attempt, number: int, chain_length: int) -> None:
    """One line per attempt, the same fields in the same order, for an operator's grep:

    ``extraction attempt 2/3 mailbox=... message=... provider=openai model=gpt-4o outcome=entities
    latency_ms=812 tokens=640+88 cache=miss preview="{...}"`` and, when it failed, `` reason="..."`` and
    what happens next (``falling through`` or ``chain stops``). The preview is the first 240 characters of
    what came back with addresses and key-like strings masked (answers.preview).

    A successful attempt logs at DEBUG, a failed one at WARNING. Dagster turns every record of the managed
    ``atom_pipelines`` loggers at or above dagster.yaml's ``python_log_level`` (INFO) into an event-log row:
    at INFO, a success per message was 2,860 of the corpus's 3,058 events through the daemon (one database
    write each, in the extraction step), and the same fields are already stored per attempt in
    ``extraction_outcomes``. Failures, the lines an operator greps for, stay events."""
    level = logging.DEBUG if attempt.outcome.succeeded else logging.WARNING
    usage: TokenUsage = attempt.usage
    if attempt.outcome.succeeded:
        tail = ""
    else:
        then = "chain stops" if attempt.outcome.stops_chain or number == chain_length else "falling through"
        tail = f' reason="{attempt.reason}"; {then}'
    log.log(
        level,
        "extraction attempt %d/%d mailbox=%s message=%s provider=%s model=%s outcome=%s latency_ms=%.0f "
        'tokens=%d+%d%s cache=%s preview="%s"%s',
        number,
        chain_length,
        message.mailbox,
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
        tail,
    )


def log_give_up(message: MessageText, result: MessageExtraction) -> None:
    """The final line of a message no provider could extract: how many attempts, and each one's outcome."""
    log.error(
        "extraction gave up mailbox=%s message=%s after %d attempt(s): %s",
        message.mailbox,
        message.message_id,
        len(result.attempts),
        result.failure_reasons or "no provider was tried",
    )
