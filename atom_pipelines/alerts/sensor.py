"""The ``analyst_alerts`` sensor: scan, silence, deliver, and fail the tick when a channel did not take its alerts."""

# No `from __future__ import annotations` here: Dagster reads the sensor's annotations at definition time.

from collections.abc import Sequence
from dataclasses import replace

from dagster import (
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from atom_pipelines.alerts.channels import (
    ENV_SLACK_WEBHOOK_URL,
    ENV_TEAMS_WEBHOOK_URL,
    AlertChannels,
    AlertDeliveryError,
)
from atom_pipelines.alerts.cursor import AlertCursor, DeliveryLedger
from atom_pipelines.alerts.model import Alert
from atom_pipelines.alerts.scan import apply_silence, scan_for_alerts


class AlertsNotDelivered(Exception):
    """Raised at the end of a tick in which a channel failed: the tick fails and keeps its old cursor."""


def _deliver(
    context: SensorEvaluationContext,
    resource: AlertChannels,
    channels: Sequence[str],
    alerts: Sequence[Alert],
    tick: int,
) -> dict[str, str]:
    """Send each alert to each channel that has not had it; returns channel -> why it failed. A failing
    channel is not tried again this tick (it is down or refusing); the other channels still get theirs."""
    ledger = DeliveryLedger(context.instance, channels, tick)
    failed: dict[str, str] = {}
    for channel in channels:
        owed = [alert for alert in alerts if not ledger.has(channel, alert.alert_id)]
        for position, alert in enumerate(owed):
            try:
                resource.send(channel, alert)
            except AlertDeliveryError as exc:
                failed[channel] = f"{exc.reason} ({len(owed) - position} of {len(alerts)} alert(s) not delivered)"
                break
            ledger.record(channel, alert.alert_id)
            context.log.info(f"alert sent to {channel}: {alert.subject}")
    return failed


@sensor(
    name="analyst_alerts",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Tells analysts once about each failed asset check (ERROR and WARN) and each failed run, "
    "on Teams, Slack and e-mail as configured (ATOM_ALERT_*).",
)
def analyst_alerts(context: SensorEvaluationContext, alert_channels: AlertChannels) -> SensorResult:
    """See the module docstring for what is alerted, once, and how delivery failures are handled."""
    cursor = AlertCursor.parse(context.cursor)
    channels = alert_channels.configured_channels()
    scan = scan_for_alerts(context.instance, cursor, alert_channels)
    alerts, silenced = apply_silence(alert_channels, scan.alerts)
    notes = []
    if silenced:
        context.log.info(
            f"{len(silenced)} alert(s) silenced by ATOM_ALERT_SILENCED: " + "; ".join(a.subject for a in silenced)
        )
        notes.append(f"{len(silenced)} silenced")
    if scan.waiting:
        notes.append(f"{scan.waiting} failed run(s) waiting for their retry")
    suffix = f" ({', '.join(notes)})" if notes else ""
    next_cursor = replace(scan.cursor, tick=cursor.tick + 1).serialize()
    if not channels:
        for alert in alerts:
            context.log.warning(f"no alert channel configured; would send:\n{alert.text}")
        return SensorResult(
            cursor=next_cursor,
            skip_reason=f"no alert channel configured (set {ENV_TEAMS_WEBHOOK_URL}, {ENV_SLACK_WEBHOOK_URL} or "
            f"ATOM_ALERT_SMTP_HOST): {len(alerts)} alert(s) logged, not sent{suffix}",
        )
    failed = _deliver(context, alert_channels, channels, alerts, cursor.tick)
    if failed:
        raise AlertsNotDelivered(
            "alert delivery failed, the cursor stays where it was and the next tick sends again to the "
            "failed channel(s) only: " + "; ".join(f"{channel}: {reason}" for channel, reason in failed.items())
        )
    if not alerts:
        return SensorResult(
            cursor=next_cursor, skip_reason=f"no new failures in {scan.runs_read} finished run(s){suffix}"
        )
    return SensorResult(cursor=next_cursor, skip_reason=f"sent {len(alerts)} alert(s) to {', '.join(channels)}{suffix}")
