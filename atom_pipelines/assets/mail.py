"""``outlook_messages``: the messages of each mailbox-day, cleaned, stored exactly as the source listed them."""

from dagster import (
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from atom_pipelines.assets.mailbox_days import failure_recorded, progress_metadata, record_step, step_windows
from atom_pipelines.assets.policy import GROUP, backfill_policy
from atom_pipelines.checks.mail import OUTLOOK_MESSAGES_CHECKS, outlook_messages_check_results
from atom_pipelines.mail.source import MailSource
from atom_pipelines.mail.sync import sync_messages
from atom_pipelines.partitions import mailbox_partitions
from atom_pipelines.store.resource import MailStore

ASSET = "outlook_messages"

_PREVIEW_SCHEMA = TableSchema(
    columns=[
        TableColumn("received", "string"),
        TableColumn("from", "string"),
        TableColumn("subject", "string"),
        TableColumn("basis", "string", description="What extraction reads: new text, a forward, or nothing."),
    ]
)


@asset(
    partitions_def=mailbox_partitions,
    backfill_policy=backfill_policy,
    group_name=GROUP,
    kinds={"python", "sql"},
    check_specs=OUTLOOK_MESSAGES_CHECKS,
)
def outlook_messages(context: AssetExecutionContext, mail_source: MailSource, store: MailStore) -> MaterializeResult:
    """The messages of each mailbox-day, with cleaned text split from quoted history and signatures."""
    windows = step_windows(context, store, ASSET)
    with failure_recorded(context, store, ASSET, windows):
        report = sync_messages(mail_source, store, windows)
    checks = outlook_messages_check_results(report)
    record_step(context, store, ASSET, windows, rows=report.messages_per_partition, failed=checks.failed_days)
    removed = 1 - report.chars_extraction / report.chars_raw if report.chars_raw else 0.0
    preview = [
        TableRecord(
            {
                "received": str(row["received_at"]),
                "from": row["sender_address"] or "",
                "subject": row["subject"] or "",
                "basis": row["text_basis"],
            }
        )
        for row in report.preview
    ]
    return MaterializeResult(
        metadata={
            "dagster/row_count": report.message_count,
            "mailbox_days_covered": len(report.messages_per_partition),
            "chars_raw": report.chars_raw,
            "chars_for_extraction": report.chars_extraction,
            "share_of_text_removed": round(removed, 4),
            "text_basis": MetadataValue.json(dict(report.text_basis)),
            "quarantined_records": sum(len(r) for r in report.quarantined.values()),
            # Text the source cut inside a UTF-16 surrogate pair, stored with U+FFFD in place of each lone half
            # (mail/models.py); an identifier so cut is a quarantined record instead.
            "text_repaired_messages": report.repaired_messages,
            "lone_surrogates_replaced": report.lone_surrogates_replaced,
            "text_repairs": MetadataValue.json(report.repaired_text),
            **{f"source_{name}": n for name, n in sorted(report.source_stats.items())},
            "preview": MetadataValue.table(preview, schema=_PREVIEW_SCHEMA),
            **progress_metadata(store, ASSET, context.partition_keys),
        },
        check_results=checks.results,
    )
