"""Failed sensor ticks as alerts: once per failure episode of each watched sensor.

A sensor that raises leaves a FAILURE tick in the instance (Dagster's sensor daemon stores every tick of a
running sensor, with the error) and nothing else: no run, so no run alert. The ``analyst_alerts`` sensor reads
the ticks of the sensors in ``WATCHED_SENSORS`` from ``instance.get_ticks`` each time it runs and alerts the
*first* failed tick of an episode; later failed ticks of the same episode are not alerted again (a sensor
that fails every minute is one alert, not 1,440 a day). A finished tick that did not fail (SUCCESS or
SKIPPED) ends the episode, so the next failure is alerted anew.

The sensors are found by name among the instance's sensor states (``all_instigator_state``), in every code
location that has them, and tracked by selector id (location, repository, sensor name) in the
``analyst_alerts`` cursor (``TickWatch``). A tick still running is waited for (``STARTED_TICK_GRACE``),
then passed over; ticks older than ``FIRST_TICK_LOOKBACK`` are not read, as on the very first tick.

``analyst_alerts`` is not watched here: it reports its own failures while it fails (``sensor.py``), which a
later scan of its ticks would repeat.
"""

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dagster import DagsterInstance

# Not exported by dagster: the types of what DagsterInstance.all_instigator_state and get_ticks return.
from dagster._core.scheduler.instigation import InstigatorState, InstigatorTick, InstigatorType, TickStatus

from atom_pipelines.alerts.channels import AlertChannels
from atom_pipelines.alerts.cursor import FIRST_TICK_LOOKBACK, TickWatch
from atom_pipelines.alerts.model import Alert, quote

#: The sensors whose failed ticks are alerted: the registration (and history launch) and Graph's delta.
WATCHED_SENSORS = ("register_mailboxes", "graph_delta_sync")
#: A tick still STARTED this long after it began is taken as dangling (the daemon moves such ticks to
#: SKIPPED on its next evaluation) and passed over; a younger one is waited for.
STARTED_TICK_GRACE = dt.timedelta(minutes=5)
#: Dagster's wrapper around the error a sensor's function raised.
_SENSOR_WRAPPERS = {"SensorExecutionError", "DagsterUserCodeExecutionError"}


@dataclass(frozen=True)
class TickScan:
    """What one scan of the watched sensors' ticks found: the alerts (first failures of episodes) and, per
    sensor selector id, where the scan stands."""

    alerts: list[Alert]
    watches: dict[str, TickWatch]
    ticks_read: int = 0


def tick_error_text(tick: InstigatorTick) -> str:
    """The error the sensor raised (under Dagster's wrapper), on one line: ``Class: message``."""
    error = tick.error
    while error is not None and error.cls_name in _SENSOR_WRAPPERS and error.cause is not None:
        error = error.cause
    if error is None:
        return "no error recorded"
    first = next((line for line in error.message.strip().splitlines() if line.strip()), "")
    # Dagster writes "module.Class: message"; the class name alone reads better.
    qualified, _, message = first.partition(": ")
    if message and qualified.rsplit(".", 1)[-1] == error.cls_name:
        first = message
    return quote(f"{error.cls_name}: {first}")


def _tick_alert(resource: AlertChannels, state: InstigatorState, tick: InstigatorTick) -> Alert:
    name = state.instigator_name
    repository = state.origin.repository_origin
    location = repository.code_location_origin.location_name
    at = dt.datetime.fromtimestamp(tick.timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return Alert(
        alert_id=f"tick/{name}/{tick.tick_id}",
        kind="tick",
        severity="ERROR",
        headline=f"[ERROR] sensor {name} failed",
        summary=(
            f"code location {location}, tick {tick.tick_id} at {at} UTC",
            f"error: {tick_error_text(tick)}",
            "Its later failed ticks are not alerted again; a new failure after it recovers is.",
        ),
        run_id="",
        run_url=resource.sensor_url(repository.repository_name, location, name),
        run_scope=f"code location {location}",
        link_label="Sensor",
    )


def _watched_states(instance: DagsterInstance, names: Sequence[str]) -> list[InstigatorState]:
    states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    return sorted((s for s in states if s.instigator_name in names), key=lambda s: s.selector_id)


def scan_tick_failures(
    instance: DagsterInstance,
    watches: Mapping[str, TickWatch],
    resource: AlertChannels,
    now: float | None = None,
    names: Sequence[str] = WATCHED_SENSORS,
) -> TickScan:
    """The first failed tick of every failure episode of the sensors ``names`` since ``watches``."""
    now = dt.datetime.now(dt.timezone.utc).timestamp() if now is None else now
    oldest = now - FIRST_TICK_LOOKBACK.total_seconds()
    alerts: list[Alert] = []
    updated: dict[str, TickWatch] = {}
    read = 0
    for state in _watched_states(instance, names):
        watch = watches.get(state.selector_id) or TickWatch(oldest, 0)
        after = max(watch.after_timestamp, oldest)
        # Newest first from storage: read oldest first. Ticks are rows updated in place, so a tick read
        # while STARTED is found again, finished, by a later scan (the watch stays before it).
        ticks = sorted(
            instance.get_ticks(state.instigator_origin_id, state.selector_id, after=after),
            key=lambda t: (t.timestamp, t.tick_id),
        )
        episode, at, tick_id = watch.episode, watch.after_timestamp, watch.after_tick_id
        for tick in ticks:
            if tick.tick_id == watch.after_tick_id:
                continue
            if tick.status == TickStatus.STARTED:
                if now - tick.timestamp < STARTED_TICK_GRACE.total_seconds():
                    break  # still being evaluated: read it when it has finished
                continue
            read += 1
            if tick.status == TickStatus.FAILURE:
                if episode is None:
                    episode = f"tick/{state.instigator_name}/{tick.tick_id}"
                    alerts.append(_tick_alert(resource, state, tick))
            else:
                episode = None
            at, tick_id = tick.timestamp, tick.tick_id
        updated[state.selector_id] = TickWatch(at, tick_id, episode)
    return TickScan(alerts=alerts, watches=updated, ticks_read=read)
