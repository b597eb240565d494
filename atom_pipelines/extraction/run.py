"""Extract the entities of stored messages and record every attempt: the work behind ``email_entities``."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from atom_pipelines.extraction import quality
from atom_pipelines.extraction.cache import ExtractionCache
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.extraction.outcomes import Attempt, MessageExtraction, Outcome, TokenUsage
from atom_pipelines.extraction.providers import MessageText
from atom_pipelines.partitions import MailboxWindow, mailbox_day_key, split_mailbox_day_key
from atom_pipelines.store import schema
from atom_pipelines.store.resource import MailStore


@dataclass
class ModelQuiet:
    """One model in one partition: messages with enough text it answered, and of those, how many quietly."""

    with_text: int = 0
    quiet: int = 0
    #: The model's own recent baseline (quality.py), read before this partition was written.
    baseline_with_text: int = 0
    baseline_quiet: int = 0


@dataclass
class PartitionExtraction:
    messages: int = 0
    entities: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # message id -> every attempt's reason
    without_outcome: list[str] = field(default_factory=list)  # message ids with no outcome row stored
    with_text: int = 0  # messages an LLM answered that have enough text to read (quality.QUIET_MIN_WORDS)
    none_found_with_text: int = 0  # of those, answered with no entity from the text
    #: provider label -> the configuration the provider rejected here: key variable, code, messages.
    rejected: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: "model_fallback" / "heuristic_fallback" -> messages (quality.py: only the second is degraded).
    fallbacks: Counter = field(default_factory=Counter)
    #: Why degraded messages fell: "openai:gpt-4o-mini transport" -> messages.
    degraded_reasons: Counter = field(default_factory=Counter)
    answered_entities: int = 0  # entities LLM answers listed, before grounding
    ungrounded_entities: int = 0  # of those, dropped because the message does not support them
    quiet_by_model: dict[str, ModelQuiet] = field(default_factory=dict)

    @property
    def degraded(self) -> int:
        return self.fallbacks["heuristic_fallback"]


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
    #: Models recognised as reasoning models by their answers during the run.
    reasoning_learned: tuple[str, ...] = ()
    #: The chain's first usable provider is an LLM (else nothing is ever degraded).
    first_is_llm: bool = False

    @property
    def answered_entities(self) -> int:
        return sum(p.answered_entities for p in self.partitions.values())

    @property
    def message_count(self) -> int:
        return sum(p.messages for p in self.partitions.values())


def extract_entities(
    extractor: EntityExtractor, store: MailStore, windows: Sequence[MailboxWindow]
) -> ExtractionReport:
    """Replace the entities and outcomes of these windows by extracting their stored messages again."""
    message_rows = store.rows(schema.messages, windows)
    cache = ExtractionCache(get=store.cache_get, put=store.cache_put)
    session = extractor.session(cache)
    results = extractor.extract_all([MessageText.from_stored(row) for row in message_rows], session=session)

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
    report = _report(windows, message_rows, results, entity_rows, session.first_is_llm)
    report.relation_rows = len(relation_rows)
    report.reasoning_learned = tuple(sorted(session.reasoning_learned))
    now = dt.datetime.now(dt.timezone.utc)
    quiet_rows = _quiet_rows(report, now)
    # The baseline is read before this write and never includes these partitions: a re-run is judged
    # against the same past, not against its own first try.
    baselines = store.quiet_baselines(sorted({r["model"] for r in quiet_rows}), quality.baseline_since(now), windows)
    for partition in report.partitions.values():
        for model, quiet in partition.quiet_by_model.items():
            quiet.baseline_with_text, quiet.baseline_quiet = baselines.get(model, (0, 0))
    store.replace_partitions(
        windows,
        {
            schema.extraction_outcomes: outcome_rows,
            schema.model_quiet_counts: quiet_rows,
            schema.entities: entity_rows,
            schema.entity_relations: relation_rows,
        },
    )
    _verify_outcomes_stored(report, message_rows, store, windows)
    return report


def _quiet_rows(report: ExtractionReport, now: dt.datetime) -> list[dict[str, Any]]:
    rows = []
    for key, partition in report.partitions.items():
        mailbox, day = split_mailbox_day_key(key)
        for model, quiet in sorted(partition.quiet_by_model.items()):
            rows.append(
                {
                    "mailbox": mailbox,
                    "day": dt.date.fromisoformat(day),
                    "model": model,
                    "with_text": quiet.with_text,
                    "quiet": quiet.quiet,
                    "recorded_at": now,
                }
            )
    return rows


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
    first_is_llm: bool,
) -> ExtractionReport:
    report = ExtractionReport(entity_rows=len(entity_rows), first_is_llm=first_is_llm)
    for window in windows:
        for day in window.days:
            report.partitions[mailbox_day_key(window.mailbox, day)] = PartitionExtraction()
    for row, result in zip(message_rows, results, strict=True):
        partition = report.partitions[mailbox_day_key(row["mailbox"], row["day"])]
        partition.messages += 1
        for attempt in result.attempts:
            report.usage += attempt.usage
            report.cost_usd += attempt.cost_usd
            report.cache_hits += attempt.cache_hit
            report.llm_calls += attempt.request_sent
            report.dropped_entities += attempt.dropped_entities
            report.dropped_relations += attempt.dropped_relations
            partition.answered_entities += attempt.answered_entities
            partition.ungrounded_entities += attempt.dropped_entities
        if (rejected := result.rejected) is not None:
            _note_rejection(partition, row["mailbox"], rejected)
        accepted = result.accepted
        if accepted is None:
            partition.failed[row["message_id"]] = result.failure_reasons or "no provider was tried"
            report.outcomes[result.attempts[-1].outcome.value if result.attempts else "untried"] += 1
            continue
        report.outcomes[accepted.outcome.value] += 1
        label = "heuristic" if accepted.provider == "heuristic" else f"{accepted.provider}:{accepted.model}"
        report.messages_by_provider[label] += 1
        if (fallback := result.fallback(first_is_llm)) is not None:
            partition.fallbacks[fallback] += 1
            if fallback == "heuristic_fallback":
                for failed in result.attempts[:-1]:
                    partition.degraded_reasons[f"{failed.provider}:{failed.model} {failed.outcome.value}"] += 1
        if accepted.provider != "heuristic" and quality.has_enough_text(row["extraction_text"]):
            quiet = accepted.outcome is Outcome.NONE_FOUND or not accepted.text_mentions
            partition.with_text += 1
            partition.none_found_with_text += quiet
            counts = partition.quiet_by_model.setdefault(label, ModelQuiet())
            counts.with_text += 1
            counts.quiet += quiet
    for entity in entity_rows:
        report.partitions[mailbox_day_key(entity["mailbox"], entity["day"])].entities += 1
        report.entities_by_type[entity["entity_type"]] += 1
    return report


def _note_rejection(partition: PartitionExtraction, mailbox: str, attempt: Attempt) -> None:
    label = f"{attempt.provider}:{attempt.model}"
    entry = partition.rejected.setdefault(
        label,
        {
            "mailbox": mailbox,
            "key_variable": f"${attempt.key_env}" if attempt.key_env else "",
            "code": attempt.error_code or "rejected",
            "http_status": attempt.http_status,
            "reason": attempt.reason.removesuffix(" (rejected earlier in this run; not asked again)"),
            "messages": 0,
        },
    )
    entry["messages"] += 1


def _verify_outcomes_stored(
    report: ExtractionReport, message_rows: list[dict[str, Any]], store: MailStore, windows: Sequence[MailboxWindow]
) -> None:
    """Verify from what was stored, not from what we meant to store: every message has an outcome row."""
    with_outcome = defaultdict(set)
    for outcome in store.rows(schema.extraction_outcomes, windows):
        with_outcome[mailbox_day_key(outcome["mailbox"], outcome["day"])].add(outcome["message_id"])
    for row in message_rows:
        key = mailbox_day_key(row["mailbox"], row["day"])
        if row["message_id"] not in with_outcome[key]:
            report.partitions[key].without_outcome.append(row["message_id"])
