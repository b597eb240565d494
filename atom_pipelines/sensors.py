"""Sensors: how mailboxes become partitions without a code change."""

# No `from __future__ import annotations` here: Dagster reads these annotations at definition time.

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from atom_pipelines.mail.source import MailSource
from atom_pipelines.partitions import MAILBOX_DIMENSION, mailbox_partitions


@sensor(
    name="register_mailboxes",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds every mailbox the mail source knows as a `mailbox` partition.",
)
def register_mailboxes(context: SensorEvaluationContext, mail_source: MailSource) -> SensorResult | SkipReason:
    """A sensor rather than a job: it runs in the daemon on its own, so a mailbox that appears in the
    export (or in ATOM_GRAPH_MAILBOXES) shows up in the UI's partitions without anyone launching anything."""
    known = set(context.instance.get_dynamic_partitions(MAILBOX_DIMENSION))
    new = sorted(set(mail_source.list_mailboxes()) - known)
    if not new:
        return SkipReason(f"all {len(known)} mailboxes of the source are registered")
    context.log.info(f"registering {len(new)} mailbox(es): {', '.join(new)}")
    return SensorResult(dynamic_partitions_requests=[mailbox_partitions.build_add_request(new)])
