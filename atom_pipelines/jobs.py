"""The jobs schedules and sensors launch. Here rather than in definitions.py, so that schedules and sensors
can import them without importing the Definitions (a cycle)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from atom_pipelines.assets import PARTITIONED_CHAIN, llm_key_status
from atom_pipelines.checks.freshness import mailboxes_fresh

#: The partitioned chain for one mailbox-day (or a range of them): what schedules, sensors and backfills
#: run, with the checks declared on those assets (their ``check_specs``). Standalone checks on them, such
#: as ``mailboxes_fresh`` (it reads the whole instance, not the run's partitions, and has its own job), are
#: left out: selecting the declared checks by key, rather than subtracting ``mailboxes_fresh``, keeps the
#: job resolvable in any Definitions that hold the three assets.
mail_to_links_job = define_asset_job(
    "mail_to_links",
    selection=AssetSelection.assets(*PARTITIONED_CHAIN).without_checks()
    | AssetSelection.checks(*(key for asset in PARTITIONED_CHAIN for key in asset.check_keys)),
)

#: Only the freshness check: no asset is materialized, nothing is read but the Dagster instance.
mailbox_freshness_job = define_asset_job(
    "mailbox_freshness",
    selection=AssetSelection.checks(mailboxes_fresh),
    description="Evaluates mailboxes_fresh: is every registered mailbox synced up to the latest complete UTC day?",
)

#: ``llm_key_status`` and its check ``llm_keys_accepted`` (ERROR): is every registered mailbox's key set,
#: accepted by the provider, with every chain model present? Launched daily by ``llm_key_status_daily`` and
#: by ``register_mailboxes`` when a new mailbox's history sync is held back for its key; a failed check is
#: alerted by ``analyst_alerts`` like any other.
llm_key_status_job = define_asset_job(
    "llm_key_status_refresh",
    selection=AssetSelection.assets(llm_key_status),
    description="Evaluates llm_key_status: per mailbox, its key variable, whether the provider accepts the key "
    "and whether every model of the chain exists for it (no extraction request is made).",
)
