"""Schedules: the daily catch-up of every mailbox, the freshness check that says when it fell behind, and the
daily key status that says, before the sync, whether each mailbox's key and models still work.

All default to RUNNING: a deployment syncs and watches itself without anyone toggling anything, which is
what analysts expect. On the local one-command start (sample export of 2000-2002) the daily sync then
syncs the sample mailbox's empty recent days, with nothing to fetch and no LLM call. The daemon starts a schedule
from its next tick; it never replays the ticks before it first saw it. Whoever toggles a schedule in the UI
overrides the default from then on (the state is kept in the instance).
"""

from __future__ import annotations

import datetime as dt

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from atom_pipelines import config
from atom_pipelines.jobs import llm_key_status_job, mail_to_links_job, mailbox_freshness_job
from atom_pipelines.partitions import MAILBOX_DIMENSION, latest_complete_day, mailbox_run_tags, mailbox_runs

#: The freshness check runs every hour at this minute: within an hour of the day rolling over or of a
#: repair (a backfill) landing, the signal is current; each run only reads the instance and the store.
FRESHNESS_MINUTE = 30

#: Tag of a daily sync run: the day it was launched for (the newest day it syncs).
DAILY_SYNC_TAG = "atom/daily_sync"


def daily_sync_requests(
    registered: list[str], scheduled_at: dt.datetime, per_run: int
) -> list[RunRequest] | SkipReason:
    """One catch-up run of ``mail_to_links`` per ``per_run`` registered mailboxes (a partition range each):
    every day not yet done up to the newest complete one, so yesterday and any day a tick missed or a run
    failed. The run key names the day and the range, so a tick launches each at most once."""
    day = latest_complete_day(scheduled_at)
    if day is None:
        return SkipReason("no complete day exists yet since ATOM_START_DATE")
    if not registered:
        return SkipReason("no mailbox is registered yet")
    return [
        RunRequest(
            run_key=f"daily:{day.isoformat()}:{chunk[0]}..{chunk[-1]}:{len(chunk)}",
            job_name=mail_to_links_job.name,
            tags={DAILY_SYNC_TAG: day.isoformat(), **mailbox_run_tags(chunk)},
        )
        for chunk in mailbox_runs(registered, registered, per_run)
    ]


def build_daily_sync_schedule(hour_of_day: int, minute_of_hour: int, per_run: int) -> ScheduleDefinition:
    """Every day at ``hour_of_day:minute_of_hour`` UTC, the catch-up of every registered mailbox, in runs of
    ``per_run`` mailboxes (ATOM_DAILY_MAILBOXES_PER_RUN): 10,000 mailboxes are 20 runs, not 10,000
    (bench/partition_scale.py: the daemon's tick for them took 9.6 s, against 79 s for 100 runs of 100)."""

    @schedule(
        name="mail_to_links_daily",
        job=mail_to_links_job,
        cron_schedule=f"{minute_of_hour} {hour_of_day} * * *",
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Syncs every registered mailbox up to the previous UTC day at {hour_of_day:02d}:"
        f"{minute_of_hour:02d} UTC (ATOM_DAILY_SYNC_HOUR / ATOM_DAILY_SYNC_MINUTE), late enough for the day's "
        f"mail to have arrived, in runs of {per_run} mailboxes (ATOM_DAILY_MAILBOXES_PER_RUN); each run also "
        "picks up any earlier day not done yet.",
    )
    def mail_to_links_daily(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        registered = list(context.instance.get_dynamic_partitions(MAILBOX_DIMENSION))
        return daily_sync_requests(registered, context.scheduled_execution_time, per_run)

    return mail_to_links_daily


_settings = config.load_settings()
mail_to_links_daily = build_daily_sync_schedule(
    _settings.daily_sync_hour, _settings.daily_sync_minute, _settings.daily_mailboxes_per_run
)

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
