"""Run tags: the ones we set (dagster.yaml limits concurrent runs per ``atom/mailbox`` value; the Runs page
filters a mailbox's history sync by ``atom/history_sync``; the days of a re-sync) and Dagster's own, which we read."""

#: Which mailbox a run reads.
MAILBOX_TAG = "atom/mailbox"
#: A run of a mailbox's history sync (value: the mailbox).
HISTORY_SYNC_TAG = "atom/history_sync"
#: A run launched because Graph's delta reported a change (value: why).
DELTA_SYNC_TAG = "atom/delta_sync"
#: The days of a run, inclusive ISO days, both or neither (partitions.py): a date-range re-sync. Without
#: them a run catches up every day not yet done.
FIRST_DAY_TAG = "atom/first_day"
LAST_DAY_TAG = "atom/last_day"

# Dagster's run tags (public names, documented with run retries and partitioned runs).
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
WILL_RETRY_TAG = "dagster/will_retry"
AUTO_RETRY_RUN_ID_TAG = "dagster/auto_retry_run_id"
PARENT_RUN_ID_TAG = "dagster/parent_run_id"
