"""Shared parts of the synthetic code locations of ``bench/partition_scale.py``: three chained no-op assets
``outlook_messages -> email_entities -> entity_links`` on one partitions definition, the asset job
``mail_to_links`` and the daily schedule's time and status.

Environment (set by the bench for the webserver's and the daemon's code servers alike):
SCALE_START_DATE  first day of the date dimension (default: 730 days before today, UTC, so the dimension
                  has 730 keys up to yesterday); SCALE_TICK_HOUR / SCALE_TICK_MINUTE: when the daily schedule
                  fires (default 06:00 UTC); SCALE_SCHEDULE_RUNNING=1: the schedule defaults to RUNNING
                  (the bench sets it only for the daemon it starts to measure a real tick).
"""

from __future__ import annotations

import datetime as dt
import os

from dagster import (
    AssetSelection,
    BackfillPolicy,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    MaterializeResult,
    PartitionsDefinition,
    asset,
    define_asset_job,
)

DAYS = 730
JOB = "mail_to_links"
SCHEDULE = "mail_to_links_daily"


def start_date() -> dt.date:
    raw = os.environ.get("SCALE_START_DATE")
    if raw:
        return dt.date.fromisoformat(raw)
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=DAYS)


def daily_partitions() -> DailyPartitionsDefinition:
    """UTC days from ``start_date()`` up to yesterday (no end date: 730 keys on the bench's day)."""
    return DailyPartitionsDefinition(start_date=start_date().isoformat(), timezone="UTC")


def tick_hour() -> int:
    return int(os.environ.get("SCALE_TICK_HOUR", "6"))


def tick_minute() -> int:
    return int(os.environ.get("SCALE_TICK_MINUTE", "0"))


def schedule_status() -> DefaultScheduleStatus:
    running = os.environ.get("SCALE_SCHEDULE_RUNNING") == "1"
    return DefaultScheduleStatus.RUNNING if running else DefaultScheduleStatus.STOPPED


def build_assets(partitions_def: PartitionsDefinition, partitions_per_run: int) -> list:
    """The three chained assets, doing nothing, each with ``BackfillPolicy.multi_run(partitions_per_run)``."""
    policy = BackfillPolicy.multi_run(max_partitions_per_run=partitions_per_run)

    @asset(partitions_def=partitions_def, backfill_policy=policy)
    def outlook_messages() -> MaterializeResult:
        return MaterializeResult()

    @asset(partitions_def=partitions_def, backfill_policy=policy, deps=[outlook_messages])
    def email_entities() -> MaterializeResult:
        return MaterializeResult()

    @asset(partitions_def=partitions_def, backfill_policy=policy, deps=[email_entities])
    def entity_links() -> MaterializeResult:
        return MaterializeResult()

    return [outlook_messages, email_entities, entity_links]


def build_job(assets: list):
    return define_asset_job(JOB, selection=AssetSelection.assets(*assets))
