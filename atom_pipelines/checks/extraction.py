"""The checks of ``email_entities`` and ``llm_key_status``.

ERROR and blocking (the partition's links are not built): extraction failed or found nothing, the provider
rejected the configuration, or too many messages fell to the heuristic because the models failed. A failed,
empty or degraded extraction is exactly the silence this project exists to make loud
(docs/reference/production_lessons.md). WARN: answers the message does not support, and a model whose
"nothing here" share jumped (quality.py defines degraded and quiet).
"""

from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from atom_pipelines import config
from atom_pipelines.checks.results import StepChecks, blocking_check
from atom_pipelines.extraction import quality
from atom_pipelines.extraction.key_status import KeyStatus
from atom_pipelines.extraction.run import ExtractionReport

#: Below this many messages with text a partition's none_found share says nothing.
MIN_MESSAGES_FOR_SHARE = 5

#: Below this many entities listed by models, a partition's ungrounded share says nothing.
MIN_ENTITIES_FOR_SHARE = 10

EMAIL_ENTITIES_CHECKS = [
    blocking_check(
        "extraction_succeeded",
        "email_entities",
        "Every message has an extraction outcome, none failed, and a partition with messages has entities.",
    ),
    blocking_check(
        "llm_configuration_accepted",
        "email_entities",
        "The provider accepted the key, the model and the base URL (no 401/403/404, a key variable that is set).",
    ),
    blocking_check(
        "degraded_share_within_limit",
        "email_entities",
        "At most ATOM_MAX_DEGRADED_SHARE of the messages were answered by the heuristic because the models failed.",
    ),
    AssetCheckSpec(
        "none_found_share_sane",
        asset="email_entities",
        description="Not too many messages with text were answered with no entity from the text.",
    ),
    AssetCheckSpec(
        "model_not_gone_quiet",
        asset="email_entities",
        description="No model's 'nothing in the text' share jumped far above its own recent baseline.",
    ),
    AssetCheckSpec(
        "ungrounded_share_sane",
        asset="email_entities",
        description="At most ATOM_MAX_UNGROUNDED_SHARE of the entities models listed are unsupported by the message.",
    ),
]

LLM_KEY_STATUS_CHECKS = [
    AssetCheckSpec(
        "llm_keys_accepted",
        asset="llm_key_status",
        description="Every registered mailbox whose chain uses an LLM has a key the provider accepts.",
    )
]


def extraction_failures(report: ExtractionReport) -> dict[str, dict[str, Any]]:
    """Partition key -> what failed: messages no provider could extract, messages without an outcome row,
    or messages and not one entity."""
    failures: dict[str, dict[str, Any]] = {}
    for key, partition in report.partitions.items():
        problems: dict[str, Any] = {}
        if partition.failed:
            problems["failed_messages"] = partition.failed
        if partition.without_outcome:
            problems["messages_without_outcome"] = partition.without_outcome
        if partition.messages and not partition.entities:
            problems["no_entities"] = f"{partition.messages} messages, 0 entities"
        if problems:
            failures[key] = problems
    return failures


def quiet_partitions(report: ExtractionReport, max_share: float) -> dict[str, str]:
    """Partition key -> how many messages with text a model answered with no text entity, where that share
    is above ``max_share`` (``ATOM_MAX_NONE_FOUND_SHARE``) on at least ``MIN_MESSAGES_FOR_SHARE`` messages."""
    return {
        key: f"{partition.none_found_with_text} of {partition.with_text} messages with text were answered with "
        "no entity from the text"
        for key, partition in report.partitions.items()
        if partition.with_text >= MIN_MESSAGES_FOR_SHARE
        and partition.none_found_with_text / partition.with_text > max_share
    }


def rejected_partitions(report: ExtractionReport) -> dict[str, dict[str, str]]:
    """Partition key -> provider -> what it rejected, in words an alert can quote: the mailbox, the key
    variable (its name, never the key), the provider's code and how many messages it stopped."""
    return {
        key: {
            label: f"{entry['mailbox']}: {entry['key_variable'] or 'no key variable'} rejected with "
            f"{entry['code']}"
            + (f" (HTTP {entry['http_status']})" if entry["http_status"] else "")
            + f", {entry['messages']} message(s) not extracted: {entry['reason']}"
            for label, entry in partition.rejected.items()
        }
        for key, partition in report.partitions.items()
        if partition.rejected
    }


def degraded_partitions(report: ExtractionReport, max_share: float) -> dict[str, dict[str, Any]]:
    """Partition key -> the fallbacks and their reasons, where the heuristic answered more than ``max_share``
    (``ATOM_MAX_DEGRADED_SHARE``) of the messages because the models failed."""
    degraded = {}
    for key, partition in report.partitions.items():
        if partition.messages and partition.degraded / partition.messages > max_share:
            degraded[key] = {
                "messages": partition.messages,
                "heuristic_fallback": partition.degraded,
                "model_fallback": partition.fallbacks["model_fallback"],
                "degraded_share": round(partition.degraded / partition.messages, 4),
                # Words rather than a nested mapping: the alert quotes it as it stands.
                "reasons": "; ".join(f"{why} x{n}" for why, n in partition.degraded_reasons.most_common()),
            }
    return degraded


def ungrounded_partitions(report: ExtractionReport, max_share: float) -> dict[str, str]:
    """Partition key -> how many listed entities grounding dropped, where that share is above ``max_share``."""
    return {
        key: f"{partition.ungrounded_entities} of {partition.answered_entities} entities the models listed are "
        "not in the message"
        for key, partition in report.partitions.items()
        if partition.answered_entities >= MIN_ENTITIES_FOR_SHARE
        and partition.ungrounded_entities / partition.answered_entities > max_share
    }


def gone_quiet_partitions(report: ExtractionReport) -> dict[str, dict[str, str]]:
    """Partition key -> model -> its quiet share here against its own recent baseline, where it jumped."""
    found: dict[str, dict[str, str]] = {}
    for key, partition in report.partitions.items():
        for model, q in partition.quiet_by_model.items():
            if quality.gone_quiet(q.with_text, q.quiet, q.baseline_with_text, q.baseline_quiet):
                found.setdefault(key, {})[model] = (
                    f"{q.quiet} of {q.with_text} messages with text answered with no text entity "
                    f"({q.quiet / q.with_text:.0%}); its last {quality.QUIET_BASELINE_DAYS} days: "
                    f"{q.baseline_quiet} of {q.baseline_with_text} ({q.baseline_quiet / q.baseline_with_text:.0%})"
                )
    return found


def email_entities_check_results(report: ExtractionReport, failures: dict[str, Any]) -> StepChecks:
    settings = config.load_settings()
    max_share = settings.max_none_found_share
    return (
        StepChecks()
        .add("extraction_succeeded", failures, "failed or empty extraction")
        .add(
            "llm_configuration_accepted",
            rejected_partitions(report),
            "a key, model or base URL the provider rejected",
        )
        .add(
            "degraded_share_within_limit",
            degraded_partitions(report, settings.max_degraded_share),
            f"more than {settings.max_degraded_share:.0%} of its messages answered by the heuristic after the "
            "models failed",
        )
        .add(
            "none_found_share_sane",
            quiet_partitions(report, max_share),
            f"a share above {max_share:.0%} of messages with text answered with no text entity",
            severity=AssetCheckSeverity.WARN,
        )
        .add(
            "model_not_gone_quiet",
            gone_quiet_partitions(report),
            "a model answering 'nothing' far more often than its own recent baseline",
            severity=AssetCheckSeverity.WARN,
        )
        .add(
            "ungrounded_share_sane",
            ungrounded_partitions(report, settings.max_ungrounded_share),
            f"more than {settings.max_ungrounded_share:.0%} of the listed entities ungrounded",
            severity=AssetCheckSeverity.WARN,
        )
    )


def llm_keys_accepted_result(statuses: list[KeyStatus]) -> AssetCheckResult:
    """ERROR when a mailbox's key is not set, is rejected, or lacks a chain model (404 model_not_found is a
    configuration error: extraction would fail). ``failures`` (mailbox -> why: the lines analyst_alerts
    quotes, under the key it reads first; metadata comes back sorted by name, so it must not guess),
    ``unusable`` (the same, the name the UI has shown) and ``models_missing`` (mailbox -> the models)."""
    unusable = {s.mailbox: s.reason for s in statuses if not s.usable}
    missing = {s.mailbox: list(s.models_missing) for s in statuses if s.models_missing}
    description = "every key is usable"
    if unusable:
        description = f"{len(unusable)} mailbox(es) without a usable key"
        if missing:
            description += f" ({len(missing)} lacking a chain model)"
    return AssetCheckResult(
        check_name="llm_keys_accepted",
        passed=not unusable,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "failures": MetadataValue.json(unusable),
            "failed_partitions": len(unusable),
            "unusable": MetadataValue.json(unusable),
            "models_missing": MetadataValue.json(missing),
        },
    )
