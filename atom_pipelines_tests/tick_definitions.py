"""A code location for test_sensor_ticks.py: the real ``register_mailboxes`` and ``graph_delta_sync``
sensors, loaded by Dagster's own sensor daemon code in process, with a mail source a test can break. The
export directory is ``$ATOM_TEST_TICK_EXPORT_DIR``, read each time the sensor runs (an ``EnvVar``):
registration fails while the directory does not exist, as it does in a deployment whose export is gone."""

from __future__ import annotations

from dagster import Definitions, EnvVar

from atom_pipelines.assets import llm_key_status
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.jobs import llm_key_status_job, mail_to_links_job
from atom_pipelines.mail.source import ExportMailSource
from atom_pipelines.sensors import graph_delta_sync, register_mailboxes
from atom_pipelines.store.resource import MailStore
from atom_pipelines_tests.helpers import PARTITIONED_CHAIN

EXPORT_DIR_ENV = "ATOM_TEST_TICK_EXPORT_DIR"

defs = Definitions(
    assets=[*PARTITIONED_CHAIN, llm_key_status],
    jobs=[mail_to_links_job, llm_key_status_job],
    sensors=[register_mailboxes, graph_delta_sync],
    resources={
        "mail_source": ExportMailSource(export_dir=EnvVar(EXPORT_DIR_ENV)),
        "extractor": EntityExtractor(),  # the heuristic: nothing to ask a provider
        # graph_delta_sync skips an export source before it touches the store.
        "store": MailStore(database_url="sqlite://"),
    },
)
