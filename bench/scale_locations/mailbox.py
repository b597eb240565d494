"""One dynamic dimension ``mailbox``; the days a run covers are run tags (``atom/first_day``, ``atom/last_day``).
The history sync of a mailbox is a backfill of its one partition (tags: its 730 days); the daily schedule lists
the registered mailboxes and asks for one run per chunk of 100, a partition range (the
``dagster/asset_partition_range_start``/``_end`` tags) for yesterday; backfill runs hold up to 5 mailboxes."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from dagster import (
    Definitions,
    DynamicPartitionsDefinition,
    RunRequest,
    ScheduleEvaluationContext,
    schedule,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

MAILBOXES_PER_DAILY_RUN = 100

partitions = DynamicPartitionsDefinition(name="mailbox")
assets = _common.build_assets(partitions, partitions_per_run=5)
job = _common.build_job(assets)


@schedule(
    name=_common.SCHEDULE,
    job=job,
    cron_schedule=f"{_common.tick_minute()} {_common.tick_hour()} * * *",
    execution_timezone="UTC",
    default_status=_common.schedule_status(),
)
def mail_to_links_daily(context: ScheduleEvaluationContext):
    day = (context.scheduled_execution_time - dt.timedelta(days=1)).date().isoformat()
    # Insertion order: the order Dagster resolves a dynamic partition range in.
    keys = context.instance.get_dynamic_partitions("mailbox")
    for start in range(0, len(keys), MAILBOXES_PER_DAILY_RUN):
        chunk = keys[start : start + MAILBOXES_PER_DAILY_RUN]
        yield RunRequest(
            run_key=f"{day}:{chunk[0]}",
            tags={
                "dagster/asset_partition_range_start": chunk[0],
                "dagster/asset_partition_range_end": chunk[-1],
                "atom/first_day": day,
                "atom/last_day": day,
            },
        )


defs = Definitions(assets=assets, jobs=[job], schedules=[mail_to_links_daily])
