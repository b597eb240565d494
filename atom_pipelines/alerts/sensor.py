"""The ``analyst_alerts`` sensor: scan, silence, deliver, and fail the tick when a channel did not take its alerts."""

# No `from __future__ import annotations` here: Dagster reads the sensor's annotations at definition time.

import time
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
    AlertConfigError,
    AlertDeliveryError,
)
from atom_pipelines.alerts.cursor import AlertCursor, DeliveryLedger, OwnFailureLedger
from atom_pipelines.alerts.model import Alert, quote
from atom_pipelines.alerts.scan import apply_silence, scan_for_alerts
from atom_pipelines.alerts.ticks import scan_tick_failures


class AlertsNotDelivered(Exception):
    """Raised at the end of a tick in which a channel failed: the tick fails and keeps its old cursor."""

    def __init__(self, message: str, failed_channels: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failed_channels = tuple(failed_channels)


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
    description="Tells analysts once about each failed asset check (ERROR and WARN), each failed run and each "
    "failure episode of the registration and delta sensors, on Teams, Slack and e-mail as configured "
    "(ATOM_ALERT_*); and about its own failures.",
)
def analyst_alerts(context: SensorEvaluationContext, alert_channels: AlertChannels) -> SensorResult:
    """See the module docstring for what is alerted, once, and how delivery failures are handled.

    **Its own failures** cannot wait for a scan of its own ticks: while it fails, nothing scans. So the
    tick that fails reports itself before it re-raises (``_report_own_failure``): one alert per failure
    episode (opened by the first failing tick, closed by the next successful one, kept in the instance's
    key-value table), to every channel that takes it; a channel that just refused this tick's alerts is not
    tried. A failure before this function runs (its resource cannot be built, the code server is down) can
    not be told through the channels; the UI's tick history and the daemon's log show it.
    """
    own = OwnFailureLedger(context.instance)
    try:
        result = _evaluate(context, alert_channels)
    except Exception as exc:
        # Not handled here: reported, then re-raised so that the tick fails as it would have.
        _report_own_failure(context, alert_channels, own, exc)
        raise
    own.clear()
    return result


def _own_failure_alert(context: SensorEvaluationContext, resource: AlertChannels, episode: str, error: str) -> Alert:
    origin = context.code_location_origin  # None outside the daemon (a sensor evaluated in a test)
    if origin is not None:
        link = resource.sensor_url(context.repository_name or "__repository__", origin.location_name, "analyst_alerts")
    else:
        link = f"{resource.ui_base_url.rstrip('/')}/automation"
    return Alert(
        alert_id=episode,
        kind="tick",
        severity="ERROR",
        headline="[ERROR] sensor analyst_alerts failed",
        summary=(
            f"error: {error}",
            "Until it recovers, new failures are alerted late or not at all; its later failed ticks are not "
            "alerted again.",
        ),
        run_id="",
        run_url=link,
        run_scope=f"code location {origin.location_name}" if origin is not None else "",
        link_label="Sensor",
    )


def _report_own_failure(
    context: SensorEvaluationContext, resource: AlertChannels, own: OwnFailureLedger, exc: Exception
) -> None:
    """Send the failure of this tick to the channels that have not had this episode's alert; never raises
    (the tick's own error is what the daemon records)."""
    try:
        channels = resource.configured_channels()
    except AlertConfigError as config_error:
        context.log.error(f"analyst_alerts failed and cannot say so on any channel: {config_error}")
        return
    if not channels:
        return
    own.open(f"tick/analyst_alerts/{time.time():.6f}")
    error = quote(f"{type(exc).__name__}: {exc}")
    alert = _own_failure_alert(context, resource, own.episode or "", error)
    skipped = set(getattr(exc, "failed_channels", ()))
    for channel in channels:
        if channel in own.delivered or channel in skipped:
            continue
        try:
            resource.send(channel, alert)
        except AlertDeliveryError as delivery_error:
            context.log.error(f"the failure of analyst_alerts could not be sent to {channel}: {delivery_error.reason}")
            continue
        own.record(channel)
        context.log.info(f"alert sent to {channel}: {alert.subject}")


def _evaluate(context: SensorEvaluationContext, alert_channels: AlertChannels) -> SensorResult:
    cursor = AlertCursor.parse(context.cursor)
    channels = alert_channels.configured_channels()
    scan = scan_for_alerts(context.instance, cursor, alert_channels)
    ticks = scan_tick_failures(context.instance, cursor.sensor_ticks, alert_channels)
    alerts, silenced = apply_silence(alert_channels, [*scan.alerts, *ticks.alerts])
    notes = []
    if silenced:
        context.log.info(
            f"{len(silenced)} alert(s) silenced by ATOM_ALERT_SILENCED: " + "; ".join(a.subject for a in silenced)
        )
        notes.append(f"{len(silenced)} silenced")
    if scan.waiting:
        notes.append(f"{scan.waiting} failed run(s) waiting for their retry")
    suffix = f" ({', '.join(notes)})" if notes else ""
    next_cursor = replace(scan.cursor, tick=cursor.tick + 1, sensor_ticks=ticks.watches).serialize()
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
            "failed channel(s) only: " + "; ".join(f"{channel}: {reason}" for channel, reason in failed.items()),
            failed_channels=list(failed),
        )
    if not alerts:
        return SensorResult(
            cursor=next_cursor,
            skip_reason=f"no new failures in {scan.runs_read} finished run(s) and {ticks.ticks_read} sensor "
            f"tick(s){suffix}",
        )
    return SensorResult(cursor=next_cursor, skip_reason=f"sent {len(alerts)} alert(s) to {', '.join(channels)}{suffix}")
