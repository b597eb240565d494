"""What every partitioned asset shares: its partitions and how a backfill batches them into runs."""

import warnings

from dagster import BackfillPolicy, BetaWarning

from atom_pipelines import config

# Batching partitions into runs is the point of backfill_policy (beta in Dagster 1.13); say it once here
# instead of on every import.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=BetaWarning)

#: Dagster costs ~0.33 s per run in-process and 5-7 s per subprocess run: one run per mailbox-day would cap a
#: backfill far below the pipeline's speed, so a backfill puts ATOM_MAX_PARTITIONS_PER_RUN days in a run.
backfill_policy = BackfillPolicy.multi_run(max_partitions_per_run=config.load_settings().max_partitions_per_run)

GROUP = "mail_graph"
