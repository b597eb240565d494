"""The one place the Definitions are assembled. Nothing registers itself by side effect."""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar

from atom_pipelines import config
from atom_pipelines.alerts import alert_channels_from_env, analyst_alerts
from atom_pipelines.assets import email_entities, entity_graph, entity_links, llm_key_status, outlook_messages
from atom_pipelines.checks.freshness import mailboxes_fresh
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.jobs import mail_to_links_job, mailbox_freshness_job
from atom_pipelines.mail.msgraph import GraphMailSource
from atom_pipelines.mail.source import ExportMailSource, MailSource
from atom_pipelines.schedules import mail_to_links_daily, mailbox_freshness_hourly
from atom_pipelines.sensors import graph_delta_sync, register_mailboxes
from atom_pipelines.store.resource import MailStore


def store_from_env() -> MailStore:
    # The URL can hold a password: through EnvVar the UI and run config show only the variable's name.
    if os.environ.get("ATOM_DATABASE_URL"):
        return MailStore(database_url=EnvVar("ATOM_DATABASE_URL"))
    return MailStore(database_url=config.database_url())


def mail_source_from_env() -> MailSource:
    """Graph when its three credentials are set, else the export directory (docs/architecture.md, "Contracts")."""
    if not config.graph_configured():
        return ExportMailSource(export_dir=str(config.mail_export_dir()))
    database_url = EnvVar("ATOM_DATABASE_URL") if os.environ.get("ATOM_DATABASE_URL") else config.database_url()
    return GraphMailSource(
        tenant_id=EnvVar("ATOM_GRAPH_TENANT_ID"),
        client_id=EnvVar("ATOM_GRAPH_CLIENT_ID"),
        client_secret=EnvVar("ATOM_GRAPH_CLIENT_SECRET"),
        gate_database_url=database_url,
        **config.graph_settings(),
    )


defs = Definitions(
    assets=[outlook_messages, email_entities, entity_links, entity_graph, llm_key_status],
    asset_checks=[mailboxes_fresh],
    jobs=[mail_to_links_job, mailbox_freshness_job],
    schedules=[mail_to_links_daily, mailbox_freshness_hourly],
    sensors=[register_mailboxes, graph_delta_sync, analyst_alerts],
    resources={
        "mail_source": mail_source_from_env(),
        "store": store_from_env(),
        "extractor": EntityExtractor(),
        "alert_channels": alert_channels_from_env(),
    },
)
