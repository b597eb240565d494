"""What the sensor has dealt with: its cursor, and per channel the ledger of alerts already delivered."""

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dagster import DagsterInstance

#: How far back the very first tick looks.
FIRST_TICK_LOOKBACK = dt.timedelta(hours=24)

_LEDGER_KEY = "atom_pipelines/analyst_alerts/delivered/{channel}"


@dataclass(frozen=True)
class TickWatch:
    """Where the scan of one watched sensor's ticks stands: the newest finished tick read (its timestamp and
    id), and the alert id of the failure episode that tick is in (None: the sensor was not failing)."""

    after_timestamp: float
    after_tick_id: int
    episode: str | None = None


@dataclass(frozen=True)
class AlertCursor:
    """What the sensor has dealt with: the last run status event read (event storage id), failed runs
    waiting for Dagster's retry decision, the count of successful ticks (it stamps the ledgers), and per
    watched sensor (by selector id) how far its ticks were read (``ticks.py``)."""

    after_storage_id: int | None = None
    waiting_run_ids: tuple[str, ...] = ()
    tick: int = 0
    sensor_ticks: Mapping[str, TickWatch] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> "AlertCursor":
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            after = data["after"]
            return cls(
                after_storage_id=None if after is None else int(after),
                waiting_run_ids=tuple(str(run_id) for run_id in data["waiting"]),
                tick=int(data["tick"]),
                # Absent from the cursors written before failed sensor ticks were alerted.
                sensor_ticks={
                    str(selector): TickWatch(float(watch["at"]), int(watch["id"]), watch["episode"])
                    for selector, watch in data.get("sensor_ticks", {}).items()
                },
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"the analyst_alerts cursor {raw[:80]!r} is not one this sensor wrote ({exc!r}); clear the "
                f"sensor's cursor in the UI to start again from the last {FIRST_TICK_LOOKBACK}"
            ) from exc

    def serialize(self) -> str:
        return json.dumps(
            {
                "after": self.after_storage_id,
                "waiting": list(self.waiting_run_ids),
                "tick": self.tick,
                "sensor_ticks": {
                    selector: {"at": watch.after_timestamp, "id": watch.after_tick_id, "episode": watch.episode}
                    for selector, watch in sorted(self.sensor_ticks.items())
                },
            }
        )


class DeliveryLedger:
    """Per channel, the ids of the alerts delivered on top of the stored sensor cursor, so that a tick that
    failed on one channel does not send again to the others when its alerts are found again.

    Kept in the instance's key-value cursor table, written after every delivery. An entry is stamped with
    the tick whose cursor will cover it (stored tick + 1); entries at or below the stored tick are covered
    by the cursor and dropped.
    """

    def __init__(self, instance: DagsterInstance, channels: Sequence[str], stored_tick: int) -> None:
        self._storage = instance.daemon_cursor_storage
        self._stamp = stored_tick + 1
        self._keys = {channel: _LEDGER_KEY.format(channel=channel) for channel in channels}
        stored = self._storage.get_cursor_values(set(self._keys.values()))
        self._delivered: dict[str, dict[str, int]] = {}
        for channel, key in self._keys.items():
            entries = json.loads(stored.get(key) or "{}")
            self._delivered[channel] = {alert_id: stamp for alert_id, stamp in entries.items() if stamp > stored_tick}

    def has(self, channel: str, alert_id: str) -> bool:
        return alert_id in self._delivered[channel]

    def record(self, channel: str, alert_id: str) -> None:
        self._delivered[channel][alert_id] = self._stamp
        self._storage.set_cursor_values({self._keys[channel]: json.dumps(self._delivered[channel], sort_keys=True)})


_OWN_FAILURE_KEY = "atom_pipelines/analyst_alerts/own_failure"


class OwnFailureLedger:
    """The ``analyst_alerts`` sensor's own failure episode: its alert id and the channels that have had it.

    Kept in the instance's key-value cursor table, not in the sensor cursor: a failing tick does not store
    its cursor. Opened by the first failing tick, cleared by the next successful one.
    """

    def __init__(self, instance: DagsterInstance) -> None:
        self._storage = instance.daemon_cursor_storage
        raw = self._storage.get_cursor_values({_OWN_FAILURE_KEY}).get(_OWN_FAILURE_KEY) or "{}"
        entry = json.loads(raw)
        self.episode: str | None = entry.get("episode")
        self.delivered: set[str] = set(entry.get("delivered", ()))

    def open(self, episode: str) -> None:
        if self.episode is None:
            self.episode, self.delivered = episode, set()
            self._write()

    def record(self, channel: str) -> None:
        self.delivered.add(channel)
        self._write()

    def clear(self) -> None:
        if self.episode is not None:
            self.episode, self.delivered = None, set()
            self._write()

    def _write(self) -> None:
        entry = {"episode": self.episode, "delivered": sorted(self.delivered)} if self.episode else {}
        self._storage.set_cursor_values({_OWN_FAILURE_KEY: json.dumps(entry)})
