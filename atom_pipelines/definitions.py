"""The one place the Definitions are assembled. Nothing registers itself by side effect."""

from __future__ import annotations

from dagster import Definitions

from atom_pipelines.alerts import analyst_alerts
from atom_pipelines.assets import email_entities, entity_graph, entity_links, llm_key_status, outlook_messages
from atom_pipelines.checks.freshness import mailboxes_fresh
from atom_pipelines.config import load_settings
from atom_pipelines.deployment.executors import build_executor
from atom_pipelines.jobs import llm_key_status_job, mail_to_links_job, mailbox_freshness_job
from atom_pipelines.resources import build_resources
from atom_pipelines.schedules import llm_key_status_daily, mail_to_links_daily, mailbox_freshness_hourly
from atom_pipelines.sensors import entity_graph_freshness, graph_delta_sync, register_mailboxes
from atom_pipelines.store.migrate import ensure_schema

# Validated here at the latest (partitions.py reads the settings first, at import): a bad ATOM_* value
# fails the code location's load with a SettingsError naming each bad variable, not each run later.
settings = load_settings()
# The store is checked at load too: a database behind the code's schema fails the load with
# StoreSchemaOutOfDate and the command that upgrades it (`python -m atom_pipelines.store upgrade`), never a
# half-written partition later; an empty database is created at head.
ensure_schema(settings.database_url)

defs = Definitions(
    assets=[outlook_messages, email_entities, entity_links, entity_graph, llm_key_status],
    asset_checks=[mailboxes_fresh],
    jobs=[mail_to_links_job, mailbox_freshness_job, llm_key_status_job],
    schedules=[mail_to_links_daily, mailbox_freshness_hourly, llm_key_status_daily],
    sensors=[register_mailboxes, graph_delta_sync, entity_graph_freshness, analyst_alerts],
    resources=build_resources(settings),
    executor=build_executor(settings),
)
