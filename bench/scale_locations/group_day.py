"""100 static mailbox groups x UTC day (StaticPartitionsDefinition "g00".."g99" x 730 daily keys): mailboxes
live in our own table, each in a fixed group, so registering one touches no Dagster state. The history sync
of a mailbox is a backfill of its group's 730 days with a tag naming the mailbox; the daily schedule is
``build_schedule_from_partitioned_job``, one run per group for yesterday; backfill runs hold up to 31 days."""

from __future__ import annotations

import sys
from pathlib import Path

from dagster import (
    Definitions,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    build_schedule_from_partitioned_job,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

GROUPS = [f"g{i:02d}" for i in range(100)]

partitions = MultiPartitionsDefinition(
    {"group": StaticPartitionsDefinition(GROUPS), "date": _common.daily_partitions()}
)
assets = _common.build_assets(partitions, partitions_per_run=31)
job = _common.build_job(assets)
schedule = build_schedule_from_partitioned_job(
    job,
    name=_common.SCHEDULE,
    hour_of_day=_common.tick_hour(),
    minute_of_hour=_common.tick_minute(),
    default_status=_common.schedule_status(),
)

defs = Definitions(assets=assets, jobs=[job], schedules=[schedule])
