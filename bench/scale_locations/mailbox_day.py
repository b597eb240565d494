"""The current scheme: a partition is one mailbox x one UTC day (MultiPartitionsDefinition of the dynamic
``mailbox`` and 730 daily ``date`` keys); the daily schedule is ``build_schedule_from_partitioned_job``, one run
per mailbox for yesterday; backfill runs hold up to 31 mailbox-days (the old ATOM_MAX_PARTITIONS_PER_RUN)."""

from __future__ import annotations

import sys
from pathlib import Path

from dagster import (
    Definitions,
    DynamicPartitionsDefinition,
    MultiPartitionsDefinition,
    build_schedule_from_partitioned_job,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

partitions = MultiPartitionsDefinition(
    {"mailbox": DynamicPartitionsDefinition(name="mailbox"), "date": _common.daily_partitions()}
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
