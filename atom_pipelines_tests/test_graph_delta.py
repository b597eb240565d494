"""Incremental sync and historical sync through the Graph-compatible server, end to end in Dagster.

- Delta: created, changed and removed messages re-materialize exactly their (mailbox, day) partitions, and
  the store then equals a full resync into a fresh database (messages, entities, relations, links). An
  expired delta token starts a full resync that also finds a removal made while it was expired.
- History: registering a mailbox asks for its history in chunks; a chunk that fails half way (Graph's
  access policy refuses one request) is re-executed from failure, and the store then equals a clean sync.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import (
    DagsterInstance,
    ReexecutionOptions,
    SensorResult,
    SkipReason,
    build_sensor_context,
    execute_job,
    instance_for_test,
    materialize,
    reconstructable,
)

from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.mail.msgraph import GraphMailSource
from atom_pipelines.partitions import partition_key
from atom_pipelines.sensors import graph_delta_sync, register_mailboxes
from atom_pipelines.store.resource import MailStore, dispose_engine
from atom_pipelines_tests.conftest import corpus_records
from atom_pipelines_tests.graph_jobs import mail_to_links_from_env
from atom_pipelines_tests.helpers import PARTITIONED_CHAIN, materialize_days
from atom_pipelines_tests.servers.graph_server import Fault, GraphServer
from atom_pipelines_tests.test_graph_sync import graph_source, received_day

MAILBOX = "kevin.hyatt@enron.com"
COMPARED = {
    "messages": "mailbox, message_id, day, subject, body_raw, extraction_text, content_hash, change_key, origin",
    "entities": "mailbox, message_id, entity_key, day, name, entity_type, roles, evidence, provider, model",
    "entity_relations": "mailbox, message_id, source_key, target_key, relation, day, evidence",
    "entity_links": "mailbox, message_id, source_key, target_key, kind, day, weight",
    "quarantined_records": "mailbox, day, origin, reason",
}
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def snapshot(database_url: str) -> dict[str, set[tuple]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {
                table: {tuple(str(v) for v in row) for row in conn.execute(sa.text(f"select {columns} from {table}"))}
                for table, columns in COMPARED.items()
            }
    finally:
        engine.dispose()


def assert_same_store(actual_url: str, expected_url: str) -> None:
    actual, expected = snapshot(actual_url), snapshot(expected_url)
    for table in COMPARED:
        missing, extra = expected[table] - actual[table], actual[table] - expected[table]
        assert not missing and not extra, (
            f"{table}: {len(missing)} rows missing, {len(extra)} unexpected: {sorted(missing | extra)[:3]}"
        )
    assert actual["messages"], "nothing was stored"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Any:
    with GraphServer(corpus_records({MAILBOX})) as graph:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(graph.ca_bundle_path))
        yield graph


def chain_resources(source: GraphMailSource, database_url: str) -> dict[str, Any]:
    return {
        "mail_source": source,
        "store": MailStore(database_url=database_url),
        "extractor": EntityExtractor(chain="heuristic"),
    }


def full_sync(instance: DagsterInstance, source: GraphMailSource, database_url: str, days: list[dt.date]) -> None:
    result = materialize_days(instance, chain_resources(source, database_url), MAILBOX, min(days), max(days))
    assert result.success


def evaluate_delta(instance: DagsterInstance, source: GraphMailSource, database_url: str) -> SensorResult | SkipReason:
    context = build_sensor_context(
        instance=instance, resources={"mail_source": source, "store": MailStore(database_url=database_url)}
    )
    return graph_delta_sync(context)


def run_requested(
    instance: DagsterInstance, result: SensorResult, source: GraphMailSource, database_url: str
) -> set[str]:
    keys = set()
    for request in result.run_requests:
        keys.add(request.partition_key)
        outcome = materialize(
            PARTITIONED_CHAIN,
            partition_key=request.partition_key,
            instance=instance,
            resources=chain_resources(source, database_url),
            tags=request.tags,
        )
        assert outcome.success
    return keys


@pytest.mark.postgres
def test_delta_changes_end_in_the_state_of_a_full_resync(
    server: GraphServer,
    instance: DagsterInstance,
    postgres_database_url: str,
    sqlite_database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = corpus_records({MAILBOX})
    days = sorted({received_day(r) for r in records})
    source = graph_source(server, postgres_database_url, mailboxes={MAILBOX})
    full_sync(instance, source, postgres_database_url, days)

    baseline = evaluate_delta(instance, source, postgres_database_url)
    assert isinstance(baseline, SkipReason), "a baseline round must not re-request the history"

    by_day = sorted(records, key=lambda r: r["receivedDateTime"])
    created_from, changed, removed = by_day[5], by_day[20], by_day[40]
    new_record = {
        **created_from,
        "id": "AAMk-delta-created-1",
        "subject": "Delta test: a new message",
        "receivedDateTime": created_from["receivedDateTime"],
    }
    server.add_message(new_record)
    server.update_message(MAILBOX, changed["id"], subject="Delta test: subject edited by the user")
    server.delete_message(MAILBOX, removed["id"])

    result = evaluate_delta(instance, source, postgres_database_url)
    assert isinstance(result, SensorResult)
    expected_keys = {partition_key(MAILBOX, received_day(r)) for r in (created_from, changed, removed)}
    assert run_requested(instance, result, source, postgres_database_url) == expected_keys
    assert MailStore(database_url=postgres_database_url).pending_days() == []

    again = evaluate_delta(instance, source, postgres_database_url)
    assert isinstance(again, SkipReason), "a stored change was requested again"

    # Expired token: a removal made while the token was expired is found by the full resync.
    removed_later = by_day[50]
    server.expire_delta_tokens()
    server.delete_message(MAILBOX, removed_later["id"])
    capsys.readouterr()
    resync = evaluate_delta(instance, source, postgres_database_url)
    assert "FULL RESYNC" in capsys.readouterr().err  # the sensor's log, as the daemon shows it
    assert isinstance(resync, SensorResult)
    assert partition_key(MAILBOX, received_day(removed_later)) in run_requested(
        instance, resync, source, postgres_database_url
    )

    # The same mailbox synced from scratch into a fresh database.
    fresh_instance = DagsterInstance.ephemeral()
    full_sync(fresh_instance, graph_source(server, sqlite_database_url), sqlite_database_url, days)
    assert_same_store(postgres_database_url, sqlite_database_url)
    stored_ids = {row[1] for row in snapshot(postgres_database_url)["messages"]}
    assert "AAMk-delta-created-1" in stored_ids
    assert removed["id"] not in stored_ids and removed_later["id"] not in stored_ids


def test_the_delta_sensor_skips_an_export_source(
    instance: DagsterInstance, sqlite_database_url: str, tmp_path: Any
) -> None:
    from atom_pipelines.mail.source import ExportMailSource

    context = build_sensor_context(
        instance=instance,
        resources={
            "mail_source": ExportMailSource(export_dir=str(tmp_path)),
            "store": MailStore(database_url=sqlite_database_url),
        },
    )
    result = graph_delta_sync(context)
    assert isinstance(result, SkipReason) and "not Microsoft Graph" in result.skip_message


def test_a_registered_mailbox_gets_its_history_and_a_failed_chunk_resumes_from_failure(
    server: GraphServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, sqlite_database_url: str
) -> None:
    records = corpus_records({MAILBOX})
    days = sorted({received_day(r) for r in records})
    database_url = f"sqlite:///{tmp_path / 'history.sqlite'}"
    monkeypatch.setenv("ATOM_MAX_PARTITIONS_PER_RUN", "31")
    for name, value in {
        "ATOM_GRAPH_TENANT_ID": server.tenant_id,
        "ATOM_GRAPH_CLIENT_ID": server.client_id,
        "ATOM_GRAPH_CLIENT_SECRET": server.client_secret,
        "ATOM_GRAPH_AUTHORITY_HOST": server.authority_host,
        "ATOM_GRAPH_API_URL": server.api_url,
        "ATOM_GRAPH_MAILBOXES": MAILBOX,
        "ATOM_DATABASE_URL": database_url,
        "DAGSTER_HOME": str(tmp_path / "home"),
        # A live mailbox's history runs to yesterday; the corpus mailbox's mail ends in 2002.
        "ATOM_END_DATE": (days[-1] + dt.timedelta(days=1)).isoformat(),
    }.items():
        monkeypatch.setenv(name, value)
    source = graph_source(server, database_url, mailboxes={MAILBOX})

    with instance_for_test() as instance:
        sensor_resources = {"mail_source": source, "extractor": EntityExtractor()}  # heuristic: no key to check
        registration = register_mailboxes(build_sensor_context(instance=instance, resources=sensor_resources))
        assert isinstance(registration, SensorResult)
        instance.add_dynamic_partitions("mailbox", list(registration.dynamic_partitions_requests[0].partition_keys))
        chunks = registration.run_requests
        assert len(chunks) >= 3
        assert chunks[0].tags["dagster/asset_partition_range_start"] == partition_key(MAILBOX, days[0])
        assert chunks[-1].tags["dagster/asset_partition_range_end"] == partition_key(MAILBOX, days[-1])

        # Graph refuses the third chunk's listing once (an access policy applied mid-sync).
        third_start = chunks[2].tags["dagster/asset_partition_range_start"].split("|")[0]
        server.add_fault(Fault("access_denied", path_contains=f"ge+{third_start}T00%3A00%3A00Z"))

        job = reconstructable(mail_to_links_from_env)
        outcomes = []
        for chunk in chunks:
            with execute_job(
                job, instance=instance, tags=chunk.tags, run_config=IN_PROCESS, raise_on_error=False
            ) as result:
                outcomes.append((result.run_id, result.success))
        failed = [run_id for run_id, success in outcomes if not success]
        assert len(failed) == 1, outcomes
        assert server.faults_pending() == 0
        error_text = " ".join(
            event.dagster_event.event_specific_data.error.to_string()
            for event in instance.all_logs(failed[0])
            if event.dagster_event and event.dagster_event.is_step_failure
        )
        assert "ErrorAccessDenied" in error_text and "request-id" in error_text

        # As the UI's "Re-execute from failure" does: the failed steps only, with the parent run's partition tags.
        parent = instance.get_run_by_id(failed[0])
        with execute_job(
            job,
            instance=instance,
            reexecution_options=ReexecutionOptions.from_failure(failed[0], instance),
            tags={k: v for k, v in parent.tags.items() if k.startswith(("dagster/asset_partition_range", "atom/"))},
            run_config=IN_PROCESS,
        ) as resumed:
            assert resumed.success

    dispose_engine(database_url)
    clean_instance = DagsterInstance.ephemeral()
    full_sync(clean_instance, graph_source(server, sqlite_database_url), sqlite_database_url, days)
    assert_same_store(database_url, sqlite_database_url)
