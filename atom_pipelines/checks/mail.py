"""The checks of ``outlook_messages``: what the source listed is exactly what the store holds.

``mailboxes_fresh``, the other check on this asset, reads the whole instance rather than a run's partitions
and lives in ``freshness.py`` beside this module.
"""

from atom_pipelines.checks.results import StepChecks, blocking_check
from atom_pipelines.mail.sync import SyncReport

ASSET = "outlook_messages"

OUTLOOK_MESSAGES_CHECKS = [
    blocking_check("no_duplicate_message_ids", ASSET, "No message id is listed twice in a partition."),
    blocking_check(
        "no_quarantined_records",
        ASSET,
        "No source record that may belong to the partition was rejected (bad JSON, no id, no date, no mailbox, "
        "an identifier or address cut inside a UTF-16 surrogate pair).",
    ),
    blocking_check(
        "listing_complete",
        ASSET,
        "The store holds exactly as many distinct messages per day as the source listed (for Graph: as many "
        "as its @odata.count over every page).",
    ),
]


def outlook_messages_check_results(report: SyncReport) -> StepChecks:
    return (
        StepChecks()
        .add("no_duplicate_message_ids", report.duplicate_ids, "message ids listed twice")
        .add(
            "no_quarantined_records",
            {key: [f"{r.origin}: {r.reason}" for r in records] for key, records in report.quarantined.items()},
            "rejected source records",
        )
        .add("listing_complete", report.incomplete, "stored messages not matching the source's listing")
    )
