"""What the sensor has dealt with: its cursor, and per channel the ledger of alerts already delivered."""

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

from dagster import DagsterInstance

#: How far back the very first tick looks.
FIRST_TICK_LOOKBACK = dt.timedelta(hours=24)

_LEDGER_KEY = "atom_pipelines/analyst_alerts/delivered/{channel}"


@dataclass(frozen=True)
class AlertCursor:
    """What the sensor has dealt with: the last run status event read (event storage id), failed runs
    waiting for Dagster's retry decision, and the count of successful ticks (it stamps the ledgers)."""

    after_storage_id: int | None = None
    waiting_run_ids: tuple[str, ...] = ()
    tick: int = 0

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
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"the analyst_alerts cursor {raw[:80]!r} is not one this sensor wrote ({exc!r}); clear the "
                f"sensor's cursor in the UI to start again from the last {FIRST_TICK_LOOKBACK}"
            ) from exc

    def serialize(self) -> str:
        return json.dumps({"after": self.after_storage_id, "waiting": list(self.waiting_run_ids), "tick": self.tick})


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
