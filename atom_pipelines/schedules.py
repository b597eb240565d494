"""Schedules: the daily sync of every mailbox, the freshness check that says when it fell behind, and the
daily key status that says, before the sync, whether each mailbox's key and models still work.

All default to RUNNING: a deployment syncs and watches itself without anyone toggling anything, which is
what analysts expect. On the local one-command start (sample export of 2000-2002) the daily sync then asks
for yesterday's empty day of the sample mailbox, a run with nothing to fetch and no LLM call, and the
freshness check turns red, truthfully: that mailbox's mail stops in 2002. The daemon starts a schedule
from its next tick; it never replays the ticks before it first saw it. Whoever toggles a schedule in the UI
overrides the default from then on (the state is kept in the instance).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import (
    DefaultScheduleStatus,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
)

from atom_pipelines import config
from atom_pipelines.jobs import llm_key_status_job, mail_to_links_job, mailbox_freshness_job

if TYPE_CHECKING:
    # Not exported by dagster: what build_schedule_from_partitioned_job returns for an asset job.
    from dagster._core.definitions.partitions.partitioned_schedule import (
        UnresolvedPartitionedAssetScheduleDefinition,
    )

#: The freshness check runs every hour at this minute: within an hour of the day rolling over or of a
#: repair (a backfill) landing, the signal is current; each run only reads the instance.
FRESHNESS_MINUTE = 30


def build_daily_sync_schedule(
    hour_of_day: int, minute_of_hour: int
) -> UnresolvedPartitionedAssetScheduleDefinition | ScheduleDefinition:
    """Every day at ``hour_of_day:minute_of_hour`` UTC, one ``mail_to_links`` run per registered mailbox for
    the previous UTC day (the newest complete ``date`` partition), keyed by partition so a tick launches
    each at most once. A day the schedule missed is not retried by the next tick: backfill it."""
    return build_schedule_from_partitioned_job(
        mail_to_links_job,
        name="mail_to_links_daily",
        hour_of_day=hour_of_day,
        minute_of_hour=minute_of_hour,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Syncs the previous UTC day of every registered mailbox at {hour_of_day:02d}:{minute_of_hour:02d} "
        "UTC (ATOM_DAILY_SYNC_HOUR / ATOM_DAILY_SYNC_MINUTE), late enough for the day's mail to have arrived.",
    )


_settings = config.load_settings()
mail_to_links_daily = build_daily_sync_schedule(_settings.daily_sync_hour, _settings.daily_sync_minute)

mailbox_freshness_hourly = ScheduleDefinition(
    name="mailbox_freshness_hourly",
    job=mailbox_freshness_job,
    cron_schedule=f"{FRESHNESS_MINUTE} * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Evaluates mailboxes_fresh every hour: red when a mailbox's latest synced day is more than "
    "ATOM_FRESHNESS_MAX_DAYS_BEHIND days behind, or it was never synced.",
)


def build_key_status_schedule(sync_hour: int, sync_minute: int) -> ScheduleDefinition:
    """Every day one hour before the daily sync (UTC), ``llm_key_status`` for every registered mailbox: a key
    revoked or a model withdrawn since yesterday turns ``llm_keys_accepted`` red, and ``analyst_alerts`` says
    so, an hour before the sync would send the day's mail to the provider. One hour is ahead of the sync by
    more than any key status run takes (one models listing per key variable)."""
    hour = (sync_hour - 1) % 24
    return ScheduleDefinition(
        name="llm_key_status_daily",
        job=llm_key_status_job,
        cron_schedule=f"{sync_minute} {hour} * * *",
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Evaluates llm_key_status every day at {hour:02d}:{sync_minute:02d} UTC, an hour before "
        "mail_to_links_daily: is every mailbox's key set and accepted, and does every chain model exist for it?",
    )


llm_key_status_daily = build_key_status_schedule(_settings.daily_sync_hour, _settings.daily_sync_minute)
