"""``email_entities`` (one row per entity mention, through the provider chain) and ``llm_key_status``."""

from dagster import (
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from atom_pipelines.assets.mail import outlook_messages
from atom_pipelines.assets.mailbox_days import failure_recorded, progress_metadata, record_step, step_windows
from atom_pipelines.assets.policy import GROUP, backfill_policy
from atom_pipelines.checks.extraction import (
    EMAIL_ENTITIES_CHECKS,
    LLM_KEY_STATUS_CHECKS,
    email_entities_check_results,
    extraction_failures,
    llm_keys_accepted_result,
)
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.extraction.key_status import key_status
from atom_pipelines.extraction.run import extract_entities
from atom_pipelines.partitions import MAILBOX_DIMENSION, mailbox_partitions
from atom_pipelines.store.resource import MailStore

ASSET = "email_entities"

_KEY_STATUS_SCHEMA = TableSchema(
    columns=[
        TableColumn("mailbox", "string"),
        TableColumn("key_variable", "string", description="The environment variable holding the key (never the key)."),
        TableColumn("llm_models", "string"),
        TableColumn("configured", "bool"),
        TableColumn("accepted", "bool"),
        TableColumn(
            "models_missing",
            "string",
            description="Chain models the provider answered 404 for with this key (extraction would fail).",
        ),
        TableColumn("usable", "bool", description="Accepted, with every chain model present: extraction can run."),
        TableColumn("reason", "string"),
    ]
)


@asset(
    partitions_def=mailbox_partitions,
    backfill_policy=backfill_policy,
    group_name=GROUP,
    kinds={"python", "sql"},
    deps=[outlook_messages],
    # Bounds concurrent extraction across runs, so a 365-day backfill cannot stampede the provider.
    pool="openai",
    check_specs=EMAIL_ENTITIES_CHECKS,
)
def email_entities(context: AssetExecutionContext, extractor: EntityExtractor, store: MailStore) -> MaterializeResult:
    """One row per entity mention, with the provider and model that produced it."""
    windows = step_windows(context, store, ASSET)
    with failure_recorded(context, store, ASSET, windows):
        report = extract_entities(extractor, store, windows)
    failures = extraction_failures(report)
    checks = email_entities_check_results(report, failures)
    entities_by_day = {key: partition.entities for key, partition in report.partitions.items()}
    record_step(context, store, ASSET, windows, rows=entities_by_day, failed=checks.failed_days)
    if failures:
        context.log.error(f"extraction failed in {len(failures)} partition(s): {sorted(failures)[:10]}")
    total = report.message_count
    partitions = list(report.partitions.values())
    return MaterializeResult(
        metadata={
            "dagster/row_count": report.entity_rows,
            "messages": total,
            "failed_messages": sum(len(p.failed) for p in report.partitions.values()),
            "relations": report.relation_rows,
            "llm_calls": report.llm_calls,
            "cache_hits": report.cache_hits,
            "prompt_tokens": report.usage.prompt,
            "completion_tokens": report.usage.completion,
            "reasoning_tokens": report.usage.reasoning,
            "cached_prompt_tokens": report.usage.cached,
            "estimated_cost_usd": round(report.cost_usd, 6),
            "ungrounded_entities_dropped": report.dropped_entities,
            "ungrounded_relations_dropped": report.dropped_relations,
            "ungrounded_share": round(report.dropped_entities / answered, 4)
            if (answered := report.answered_entities)
            else 0.0,
            "heuristic_fallbacks": sum(p.degraded for p in partitions),
            "model_fallbacks": sum(p.fallbacks["model_fallback"] for p in partitions),
            "degraded_share": round(sum(p.degraded for p in partitions) / total, 4) if total else 0.0,
            "rejected_messages": sum(e["messages"] for p in partitions for e in p.rejected.values()),
            "reasoning_models_recognised": MetadataValue.json(list(report.reasoning_learned)),
            **{f"entities_{kind}": n for kind, n in sorted(report.entities_by_type.items())},
            **{f"outcome_{name}": n for name, n in sorted(report.outcomes.items())},
            "share_by_provider": MetadataValue.json(
                {p: round(n / total, 4) for p, n in report.messages_by_provider.items()} if total else {}
            ),
            **progress_metadata(store, ASSET, context.partition_keys),
        },
        check_results=checks.results,
    )


@asset(group_name="llm", kinds={"openai"}, check_specs=LLM_KEY_STATUS_CHECKS)
def llm_key_status(context: AssetExecutionContext, extractor: EntityExtractor) -> MaterializeResult:
    """Per mailbox: which key variable extracts its mail, whether it is set, whether the provider accepts it,
    and whether every model of the chain exists for it."""
    mailboxes = context.instance.get_dynamic_partitions(MAILBOX_DIMENSION)
    statuses = key_status(extractor, mailboxes)
    for status in statuses:
        log = context.log.info if status.usable else context.log.warning
        log(f"key status {status.mailbox}: ${status.key_env}: {status.reason}")
    records = [
        TableRecord(
            {
                "mailbox": s.mailbox,
                "key_variable": s.key_env,
                "llm_models": ", ".join(s.llm_models) or "-",
                "configured": s.configured,
                "accepted": bool(s.accepted),
                "models_missing": ", ".join(s.models_missing) or "-",
                "usable": s.usable,
                "reason": s.reason,
            }
        )
        for s in statuses
    ]
    return MaterializeResult(
        metadata={
            "mailboxes": len(statuses),
            "usable": sum(1 for s in statuses if s.usable),
            "status": MetadataValue.table(records, schema=_KEY_STATUS_SCHEMA),
        },
        check_results=[llm_keys_accepted_result(statuses)],
    )
