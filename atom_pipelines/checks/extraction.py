"""The checks of ``email_entities`` (extraction failed or found nothing) and ``llm_key_status`` (keys the
provider accepts). Both are ERROR: a failed or empty extraction is exactly the silence this project exists
to make loud (docs/reference/production_lessons.md)."""

from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from atom_pipelines import config
from atom_pipelines.checks.results import blocking_check, partition_check_result
from atom_pipelines.extraction.key_status import KeyStatus
from atom_pipelines.extraction.run import ExtractionReport

#: Below this many messages with text a partition's none_found share says nothing.
MIN_MESSAGES_FOR_SHARE = 5

EMAIL_ENTITIES_CHECKS = [
    blocking_check(
        "extraction_succeeded",
        "email_entities",
        "Every message has an extraction outcome, none failed, and a partition with messages has entities.",
    ),
    AssetCheckSpec(
        "none_found_share_sane",
        asset="email_entities",
        description="Not too many messages with text were answered 'nothing here' (a model gone quiet).",
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
    """Partition key -> how many messages with text were answered none_found, where that share is above
    ``max_share`` (``ATOM_MAX_NONE_FOUND_SHARE``) on at least ``MIN_MESSAGES_FOR_SHARE`` messages."""
    return {
        key: f"{partition.none_found_with_text} of {partition.with_text} messages with text answered none_found"
        for key, partition in report.partitions.items()
        if partition.with_text >= MIN_MESSAGES_FOR_SHARE
        and partition.none_found_with_text / partition.with_text > max_share
    }


def email_entities_check_results(report: ExtractionReport, failures: dict[str, Any]) -> list[AssetCheckResult]:
    max_share = config.load_settings().max_none_found_share
    return [
        partition_check_result("extraction_succeeded", failures, "failed or empty extraction"),
        partition_check_result(
            "none_found_share_sane",
            quiet_partitions(report, max_share),
            f"a none_found share above {max_share:.0%}",
            severity=AssetCheckSeverity.WARN,
        ),
    ]


def llm_keys_accepted_result(statuses: list[KeyStatus]) -> AssetCheckResult:
    unusable = {s.mailbox: s.reason for s in statuses if not s.usable}
    return AssetCheckResult(
        check_name="llm_keys_accepted",
        passed=not unusable,
        severity=AssetCheckSeverity.ERROR,
        description=f"{len(unusable)} mailbox(es) without a usable key" if unusable else "every key is usable",
        metadata={"unusable": MetadataValue.json(unusable)},
    )
