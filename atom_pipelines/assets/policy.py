"""What every partitioned asset shares: its group and how a backfill batches its mailboxes into runs."""

import warnings

from dagster import BackfillPolicy, BetaWarning

from atom_pipelines import config

# Batching partitions into runs is the point of backfill_policy (beta in Dagster 1.13); say it once here
# instead of on every import.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=BetaWarning)

#: Dagster costs ~0.33 s per run in-process and 5-7 s per subprocess run, so a backfill over many mailboxes
#: puts ATOM_MAILBOXES_PER_RUN of them in a run; several runs, not one, so the run queue spreads a large
#: backfill over the cores (or the workers) and one failing mailbox fails a few others, not all.
backfill_policy = BackfillPolicy.multi_run(max_partitions_per_run=config.load_settings().mailboxes_per_run)

GROUP = "mail_graph"
