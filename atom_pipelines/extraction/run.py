"""Extract the entities of stored messages and record every attempt: the work behind ``email_entities``."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from atom_pipelines.extraction.cache import ExtractionCache
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.extraction.outcomes import MessageExtraction, Outcome, TokenUsage
from atom_pipelines.extraction.providers import MessageText
from atom_pipelines.partitions import MailboxWindow, partition_key
from atom_pipelines.store import schema
from atom_pipelines.store.resource import MailStore


@dataclass
class PartitionExtraction:
    messages: int = 0
    entities: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # message id -> every attempt's reason
    without_outcome: list[str] = field(default_factory=list)  # message ids with no outcome row stored
    with_text: int = 0  # messages with text to read
    none_found_with_text: int = 0  # of those, answered "nothing here"


@dataclass
class ExtractionReport:
    partitions: dict[str, PartitionExtraction] = field(default_factory=dict)
    entities_by_type: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)  # final outcome per message
    messages_by_provider: Counter = field(default_factory=Counter)  # provider/model whose answer was accepted
    entity_rows: int = 0
    relation_rows: int = 0
    usage: TokenUsage = TokenUsage()
    cost_usd: float = 0.0
    llm_calls: int = 0  # requests actually sent (cache hits and skips excluded)
    cache_hits: int = 0
    dropped_entities: int = 0
    dropped_relations: int = 0

    @property
    def message_count(self) -> int:
        return sum(p.messages for p in self.partitions.values())


def extract_entities(
    extractor: EntityExtractor, store: MailStore, windows: Sequence[MailboxWindow]
) -> ExtractionReport:
    """Replace the entities and outcomes of these windows by extracting their stored messages again."""
    message_rows = store.rows(schema.messages, windows)
    cache = ExtractionCache(get=store.cache_get, put=store.cache_put)
    results = extractor.extract_all([MessageText.from_stored(row) for row in message_rows], cache=cache)

    entity_rows: list[dict[str, Any]] = []
    relation_rows: list[dict[str, Any]] = []
    outcome_rows: list[dict[str, Any]] = []
    for row, result in zip(message_rows, results, strict=True):
        outcome_rows.extend(_outcome_rows(row, result))
        accepted = result.accepted
        if accepted is None:
            continue
        for relation in accepted.relations:
            relation_rows.append(
                {
                    "mailbox": row["mailbox"],
                    "message_id": row["message_id"],
                    "source_key": relation.source_key,
                    "target_key": relation.target_key,
                    "relation": relation.relation,
                    "day": row["day"],
                    "evidence": relation.evidence,
                    "provider": accepted.provider,
                    "model": accepted.model,
                }
            )
        for mention in accepted.mentions:
            entity_rows.append(
                {
                    "mailbox": row["mailbox"],
                    "message_id": row["message_id"],
                    "entity_key": mention.entity_key,
                    "day": row["day"],
                    "name": mention.name,
                    "entity_type": mention.entity_type.value,
                    "roles": ",".join(role.value for role in mention.roles),
                    "evidence": mention.evidence,
                    "provider": accepted.provider,
                    "model": accepted.model,
                }
            )
    store.replace_partitions(
        windows,
        {
            schema.extraction_outcomes: outcome_rows,
            schema.entities: entity_rows,
            schema.entity_relations: relation_rows,
        },
    )
    report = _report(windows, message_rows, results, entity_rows, store)
    report.relation_rows = len(relation_rows)
    return report


def _outcome_rows(message: dict[str, Any], result: MessageExtraction) -> list[dict[str, Any]]:
    return [
        {
            "mailbox": message["mailbox"],
            "message_id": message["message_id"],
            "attempt": number,
            "day": message["day"],
            "provider": attempt.provider,
            "model": attempt.model,
            "outcome": attempt.outcome.value,
            "reason": attempt.reason,
            "entity_count": len(attempt.mentions),
            "latency_ms": attempt.latency_ms,
            "prompt_tokens": attempt.usage.prompt,
            "completion_tokens": attempt.usage.completion,
            "reasoning_tokens": attempt.usage.reasoning,
            "cached_tokens": attempt.usage.cached,
            "cost_usd": attempt.cost_usd,
            "cache_hit": attempt.cache_hit,
            "dropped_entities": attempt.dropped_entities,
            "dropped_relations": attempt.dropped_relations,
            "raw_preview": attempt.raw_preview,
        }
        for number, attempt in enumerate(result.attempts, start=1)
    ]


def _report(
    windows: Sequence[MailboxWindow],
    message_rows: list[dict[str, Any]],
    results: list[MessageExtraction],
    entity_rows: list[dict[str, Any]],
    store: MailStore,
) -> ExtractionReport:
    report = ExtractionReport(entity_rows=len(entity_rows))
    for window in windows:
        for day in window.days:
            report.partitions[partition_key(window.mailbox, day)] = PartitionExtraction()
    for row, result in zip(message_rows, results, strict=True):
        partition = report.partitions[partition_key(row["mailbox"], row["day"])]
        partition.messages += 1
        for attempt in result.attempts:
            report.usage += attempt.usage
            report.cost_usd += attempt.cost_usd
            report.cache_hits += attempt.cache_hit
            report.llm_calls += (
                attempt.provider == "openai" and not attempt.cache_hit and attempt.outcome is not Outcome.SKIPPED
            )
            report.dropped_entities += attempt.dropped_entities
            report.dropped_relations += attempt.dropped_relations
        accepted = result.accepted
        if accepted is None:
            partition.failed[row["message_id"]] = result.failure_reasons or "no provider was tried"
            report.outcomes[result.attempts[-1].outcome.value if result.attempts else "untried"] += 1
        else:
            report.outcomes[accepted.outcome.value] += 1
            if row["extraction_text"].strip():
                partition.with_text += 1
                partition.none_found_with_text += accepted.outcome is Outcome.NONE_FOUND
            label = "heuristic" if accepted.provider == "heuristic" else f"{accepted.provider}:{accepted.model}"
            report.messages_by_provider[label] += 1
    for entity in entity_rows:
        report.partitions[partition_key(entity["mailbox"], entity["day"])].entities += 1
        report.entities_by_type[entity["entity_type"]] += 1

    # Verify from what was stored, not from what we meant to store: every message has an outcome row.
    with_outcome = defaultdict(set)
    for outcome in store.rows(schema.extraction_outcomes, windows):
        with_outcome[partition_key(outcome["mailbox"], outcome["day"])].add(outcome["message_id"])
    for row in message_rows:
        key = partition_key(row["mailbox"], row["day"])
        if row["message_id"] not in with_outcome[key]:
            report.partitions[key].without_outcome.append(row["message_id"])
    return report
