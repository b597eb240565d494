"""The one place the Definitions are assembled. Nothing registers itself by side effect."""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar, define_asset_job

from atom_pipelines import config
from atom_pipelines.assets import email_entities, entity_graph, entity_links, llm_key_status, outlook_messages
from atom_pipelines.extraction.resource import EntityExtractor
from atom_pipelines.mail.source import ExportMailSource
from atom_pipelines.sensors import register_mailboxes
from atom_pipelines.store.resource import MailStore

#: The partitioned chain for one mailbox-day (or a range of them): what schedules and backfills run.
mail_to_links_job = define_asset_job(
    "mail_to_links", selection=[outlook_messages, email_entities, entity_links]
)


def _store() -> MailStore:
    # The URL can hold a password: through EnvVar the UI and run config show only the variable's name.
    if os.environ.get("ATOM_DATABASE_URL"):
        return MailStore(database_url=EnvVar("ATOM_DATABASE_URL"))
    return MailStore(database_url=config.database_url())


defs = Definitions(
    assets=[outlook_messages, email_entities, entity_links, entity_graph, llm_key_status],
    jobs=[mail_to_links_job],
    sensors=[register_mailboxes],
    resources={
        "mail_source": ExportMailSource(export_dir=str(config.mail_export_dir())),
        "store": _store(),
        "extractor": EntityExtractor(),
    },
)
