"""UTC day only (730 daily keys): every run covers all mailboxes (or those named by a tag), which live in our
own table. The history sync of a mailbox is a backfill of the 730 days with a tag naming the mailbox; the
daily schedule is ``build_schedule_from_partitioned_job``, one run for yesterday; backfill runs hold 31 days."""

from __future__ import annotations

import sys
from pathlib import Path

from dagster import Definitions, build_schedule_from_partitioned_job

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

partitions = _common.daily_partitions()
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
