"""The extractor resource: an ordered chain of providers, tried per message until one succeeds.

``ATOM_LLM_CHAIN`` names the chain (``heuristic`` is the embedded default). A provider that raises is not
allowed to take the partition's other messages down with it, nor to vanish: the exception becomes an
``error`` attempt with its type and message, the next provider is tried, and a message that no provider
could extract is a failed message that the blocking check names.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from dagster import ConfigurableResource
from pydantic import Field

from atom_pipelines.extraction.heuristic import HeuristicProvider
from atom_pipelines.extraction.outcomes import Attempt, MessageExtraction, Outcome
from atom_pipelines.extraction.providers import ExtractionProvider, MessageText

log = logging.getLogger(__name__)

DEFAULT_CHAIN = "heuristic"


class ChainConfigError(ValueError):
    """``ATOM_LLM_CHAIN`` names a provider this build does not have."""


class EntityExtractor(ConfigurableResource):
    """Extracts entities from messages through the provider chain."""

    chain: str = Field(
        default_factory=lambda: os.environ.get("ATOM_LLM_CHAIN") or DEFAULT_CHAIN,
        description="Comma-separated providers, tried in order (ATOM_LLM_CHAIN).",
    )
    max_concurrency: int = Field(default=4, ge=1, description="Messages extracted at once within a run.")

    def providers(self) -> list[ExtractionProvider]:
        """The chain as provider objects, in order."""
        providers: list[ExtractionProvider] = []
        for entry in (part.strip() for part in self.chain.split(",")):
            if entry == "heuristic":
                providers.append(HeuristicProvider())
            else:
                raise ChainConfigError(
                    f"ATOM_LLM_CHAIN entry {entry!r} is not a provider this build knows (known: heuristic)"
                )
        if not providers:
            raise ChainConfigError("ATOM_LLM_CHAIN is empty: at least one provider is needed")
        return providers

    def extract_all(self, messages: Sequence[MessageText]) -> list[MessageExtraction]:
        """One :class:`MessageExtraction` per message, in the order given."""
        providers = self.providers()
        if self.max_concurrency == 1 or len(messages) < 2:
            return [extract_with_chain(providers, m) for m in messages]
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(lambda m: extract_with_chain(providers, m), messages))


def extract_with_chain(providers: Sequence[ExtractionProvider], message: MessageText) -> MessageExtraction:
    result = MessageExtraction(mailbox=message.mailbox, message_id=message.message_id)
    for provider in providers:
        attempt = _attempt(provider, message)
        result.attempts.append(attempt)
        log.debug(
            "extraction %s provider=%s model=%s outcome=%s latency_ms=%.1f entities=%d",
            message.message_id, attempt.provider, attempt.model, attempt.outcome.value,
            attempt.latency_ms, len(attempt.mentions),
        )
        if attempt.outcome.succeeded:
            break
        log.warning(
            "extraction of %s by %s/%s failed (%s: %s); trying the next provider",
            message.message_id, attempt.provider, attempt.model, attempt.outcome.value, attempt.reason,
        )
    return result


def _attempt(provider: ExtractionProvider, message: MessageText) -> Attempt:
    started = time.perf_counter()
    try:
        attempt = provider.extract(message)
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
