"""The code location loads, its names are the contracts others rely on, and no secret reaches its config.

Production bug #6: workers died at start-up on a broken import that no test loaded. Here the Definitions
are loaded in-process and through Dagster's own CLI validation from a clean DAGSTER_HOME, as a server does.
"""

from __future__ import annotations

import os
import subprocess
import sys

import sqlalchemy as sa
from dagster import AssetKey, DynamicPartitionsDefinition, EnvVar

from atom_pipelines.config import load_settings
from atom_pipelines_tests.conftest import REPO_ROOT


def test_definitions_import_with_the_contract_names() -> None:
    from atom_pipelines import defs

    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "outlook_messages",
        "email_entities",
        "entity_links",
        "entity_graph",
        "llm_key_status",
    }
    # One dynamic dimension named mailbox on the whole chain; the days are the run's (partitions.py).
    partitions = graph.get(AssetKey("outlook_messages")).partitions_def
    assert isinstance(partitions, DynamicPartitionsDefinition) and partitions.name == "mailbox"
    for name in ("email_entities", "entity_links"):
        assert graph.get(AssetKey(name)).partitions_def == partitions
    assert graph.get(AssetKey("entity_graph")).partitions_def is None
    # The jobs: the partitioned chain with its own checks, and the freshness check alone.
    chain = defs.resolve_job_def("mail_to_links")
    assert {key.to_user_string() for key in chain.asset_layer.selected_asset_keys} == {
        "outlook_messages",
        "email_entities",
        "entity_links",
    }
    assert chain.partitions_def == partitions
    assert {key.name for key in chain.asset_layer.asset_graph.asset_check_keys} == {
        "no_duplicate_message_ids",
        "no_quarantined_records",
        "listing_complete",
        "extraction_succeeded",
        "llm_configuration_accepted",
        "degraded_share_within_limit",
        "none_found_share_sane",
        "model_not_gone_quiet",
        "ungrounded_share_sane",
        "links_point_at_entities",
    }
    freshness = defs.resolve_job_def("mailbox_freshness")
    assert freshness.asset_layer.selected_asset_keys == set()
    assert {key.name for key in freshness.asset_layer.asset_graph.asset_check_keys} == {"mailboxes_fresh"}
    # The key status alone: llm_key_status and its check, no extraction.
    keys = defs.resolve_job_def("llm_key_status_refresh")
    assert {key.to_user_string() for key in keys.asset_layer.selected_asset_keys} == {"llm_key_status"}
    assert {key.name for key in keys.asset_layer.asset_graph.asset_check_keys} == {"llm_keys_accepted"}
    # Sensors: the two that launch runs launch the chain (registration also the key status, for a history
    # sync it holds back); the alerts sensor launches nothing.
    targets = {
        name: [target.job_name for target in defs.resolve_sensor_def(name).targets]
        for name in ("register_mailboxes", "graph_delta_sync", "analyst_alerts")
    }
    assert targets == {
        "register_mailboxes": ["mail_to_links", "llm_key_status_refresh"],
        "graph_delta_sync": ["mail_to_links"],
        "analyst_alerts": [],
    }
    # The graph's automation sensor evaluates exactly entity_graph's condition.
    freshness_sensor = defs.resolve_sensor_def("entity_graph_freshness")
    assert freshness_sensor.asset_selection.resolve(graph) == {AssetKey("entity_graph")}
    # Schedules: the daily sync at the configured UTC time, the freshness check every hour, the key status
    # an hour before the sync.
    settings = load_settings()
    daily, hourly, key_status_daily = (
        defs.resolve_schedule_def("mail_to_links_daily"),
        defs.resolve_schedule_def("mailbox_freshness_hourly"),
        defs.resolve_schedule_def("llm_key_status_daily"),
    )
    assert (key_status_daily.job_name, key_status_daily.cron_schedule, key_status_daily.execution_timezone) == (
        "llm_key_status_refresh",
        f"{settings.daily_sync_minute} {(settings.daily_sync_hour - 1) % 24} * * *",
        "UTC",
    )
    assert (daily.job_name, daily.cron_schedule, daily.execution_timezone) == (
        "mail_to_links",
        f"{settings.daily_sync_minute} {settings.daily_sync_hour} * * *",
        "UTC",
    )
    assert (hourly.job_name, hourly.cron_schedule, hourly.execution_timezone) == (
        "mailbox_freshness",
        "30 * * * *",
        "UTC",
    )
    checks = {key.name for key in graph.asset_check_keys}
    assert checks == {
        "no_duplicate_message_ids",
        "no_quarantined_records",
        "listing_complete",
        "extraction_succeeded",
        "llm_configuration_accepted",
        "degraded_share_within_limit",
        "none_found_share_sane",
        "model_not_gone_quiet",
        "ungrounded_share_sane",
        "links_point_at_entities",
        "llm_keys_accepted",
        "mailboxes_fresh",
        "graph_edges_have_provenance",
        "one_address_per_person",
        "name_merge_share_in_band",
        "graph_not_empty",
    }


def test_the_database_url_reaches_resources_only_as_an_env_var_name(postgres_database_url: str) -> None:
    # The load checks the store's schema, so the URL must reach a real database; trust auth accepts the password.
    url = sa.make_url(postgres_database_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    code = (
        "from atom_pipelines.definitions import defs;"
        "store = defs.resources['store'];"
        "print(type(store.database_url).__name__, store.database_url.env_var_name)"
    )
    env = {**os.environ, "ATOM_DATABASE_URL": url}
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == f"{EnvVar.__name__} ATOM_DATABASE_URL"
    assert "s3cret" not in out


def test_graph_is_the_source_when_its_credentials_are_set_and_they_stay_env_var_names() -> None:
    code = (
        "from atom_pipelines.definitions import defs;"
        "source = defs.resources['mail_source'];"
        "print(type(source).__name__, source.client_secret.env_var_name, source.tenant_id.env_var_name,"
        " source.api_url, source.mailboxes, source.page_size)"
    )
    env = {
        **os.environ,
        "ATOM_GRAPH_TENANT_ID": "contoso-tenant",
        "ATOM_GRAPH_CLIENT_ID": "app-id",
        "ATOM_GRAPH_CLIENT_SECRET": "graph-s3cret-value",
        "ATOM_GRAPH_API_URL": "https://graph.example/v1.0",
        "ATOM_GRAPH_MAILBOXES": "Alice@Contoso.com,bob@contoso.com",
        "ATOM_GRAPH_PAGE_SIZE": "500",
    }
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == [
        "GraphMailSource",
        "ATOM_GRAPH_CLIENT_SECRET",
        "ATOM_GRAPH_TENANT_ID",
        "https://graph.example/v1.0",
        "Alice@Contoso.com,bob@contoso.com",
        "500",
    ]
    assert "s3cret" not in out
    without = {k: v for k, v in env.items() if k != "ATOM_GRAPH_CLIENT_SECRET"}
    out = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore",
            "-c",
            "from atom_pipelines import defs; print(type(defs.resources['mail_source']).__name__)",
        ],
        env=without,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "ExportMailSource"  # two of three credentials is not Graph


def test_dagster_validates_the_workspace_from_a_clean_home(tmp_path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "All code locations passed validation" in completed.stdout + completed.stderr
