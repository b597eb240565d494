"""A reconstructable ``mail_to_links`` whose resources are built from the settings at load time, as the
code location builds them: tests point ATOM_GRAPH_* and ATOM_DATABASE_URL at a Graph server and a database,
then run and re-execute (from failure) through ``dagster.execute_job``, which needs a job it can reload."""

from __future__ import annotations

from dagster import Definitions, JobDefinition

from atom_pipelines.assets import email_entities, entity_links, outlook_messages
from atom_pipelines.config import load_settings
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.jobs import mail_to_links_job
from atom_pipelines.resources import build_mail_source, build_store


def mail_to_links_from_env() -> JobDefinition:
    settings = load_settings()
    definitions = Definitions(
        assets=[outlook_messages, email_entities, entity_links],
        jobs=[mail_to_links_job],
        resources={
            "mail_source": build_mail_source(settings),
            "store": build_store(settings),
            "extractor": EntityExtractor(chain="heuristic"),
        },
    )
    return definitions.resolve_job_def("mail_to_links")
