"""Incremental sync and historical sync through the Graph-compatible server, end to end in Dagster.

- Delta: created, changed and removed messages re-materialize exactly their mailbox-days (a run of the
  mailbox's partition whose day tags ``atom/first_day`` = ``atom/last_day`` name the day), and the store then
  equals a full resync into a fresh database (messages, entities, relations, links). An expired delta token
  starts a full resync that also finds a removal made while it was expired. Days not complete yet, or
  before ATOM_START_DATE, wait.
- History: registering a mailbox asks for its history as one catch-up run of its partition (no day tags);
  a run that fails half way (Graph's access policy refuses a later page) records its days failed, is
  re-executed from failure, and the store then equals a clean sync, every day done.
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

from atom_pipelines.config import load_settings
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.mail.msgraph import GraphMailSource
from atom_pipelines.partitions import days_between
from atom_pipelines.sensors import graph_delta_sync, register_mailboxes
from atom_pipelines.store.resource import MailStore, dispose_engine
from atom_pipelines.tags import DELTA_SYNC_TAG, FIRST_DAY_TAG, LAST_DAY_TAG, MAILBOX_TAG, PARTITION_TAG
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


def requested_days(result: SensorResult) -> set[tuple[str, dt.date]]:
    """The (mailbox, day) of each delta request, checking its shape: the mailbox's partition, one day as both
    day tags, a run key naming mailbox, day and when the change was noted."""
    days = set()
    for request in result.run_requests:
        mailbox, first, last = request.partition_key, request.tags[FIRST_DAY_TAG], request.tags[LAST_DAY_TAG]
        assert first == last, request.tags
        assert request.tags[MAILBOX_TAG] == mailbox
        assert request.tags[DELTA_SYNC_TAG]  # why: the folder and the message created, changed or removed
        assert request.run_key.startswith(f"delta:{mailbox}:{first}:")
        days.add((mailbox, dt.date.fromisoformat(first)))
    assert len(days) == len(result.run_requests)  # one run per changed mailbox-day
    return days


def run_requested(
    instance: DagsterInstance, result: SensorResult, source: GraphMailSource, database_url: str
) -> set[tuple[str, dt.date]]:
    for request in result.run_requests:
        outcome = materialize(
            PARTITIONED_CHAIN,
            partition_key=request.partition_key,
            instance=instance,
            resources=chain_resources(source, database_url),
            tags=request.tags,
        )
        assert outcome.success
        (materialization,) = outcome.asset_materializations_for_node("outlook_messages")
        assert materialization.metadata["mailbox_days_covered"].value == 1  # that day only
    return requested_days(result)


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
    expected_days = {(MAILBOX, received_day(r)) for r in (created_from, changed, removed)}
    assert run_requested(instance, result, source, postgres_database_url) == expected_days
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
    assert (MAILBOX, received_day(removed_later)) in run_requested(instance, resync, source, postgres_database_url)

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


def test_a_registered_mailbox_gets_its_history_and_a_failed_run_resumes_from_failure(
    server: GraphServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, sqlite_database_url: str
) -> None:
    records = corpus_records({MAILBOX})
    days = sorted({received_day(r) for r in records})
    database_url = f"sqlite:///{tmp_path / 'history.sqlite'}"
    end_date = days[-1] + dt.timedelta(days=1)
    for name, value in {
        "ATOM_GRAPH_TENANT_ID": server.tenant_id,
        "ATOM_GRAPH_CLIENT_ID": server.client_id,
        "ATOM_GRAPH_CLIENT_SECRET": server.client_secret,
        "ATOM_GRAPH_AUTHORITY_HOST": server.authority_host,
        "ATOM_GRAPH_API_URL": server.api_url,
        "ATOM_GRAPH_MAILBOXES": MAILBOX,
        # Pages of 20: the mailbox's 58 messages are three pages, so a refused later page fails half way.
        "ATOM_GRAPH_PAGE_SIZE": "20",
        "ATOM_DATABASE_URL": database_url,
        "DAGSTER_HOME": str(tmp_path / "home"),
        # A live mailbox's history runs to yesterday; the corpus mailbox's mail ends in 2002.
        "ATOM_END_DATE": end_date.isoformat(),
    }.items():
        monkeypatch.setenv(name, value)
    source = graph_source(server, database_url, mailboxes={MAILBOX})
    settings = load_settings()
    history_days = days_between(settings.start_date, end_date - dt.timedelta(days=1))
    assert history_days[0] <= days[0] and history_days[-1] == days[-1]

    with instance_for_test() as instance:
        sensor_resources = {"mail_source": source, "extractor": EntityExtractor()}  # heuristic: no key to check
        registration = register_mailboxes(build_sensor_context(instance=instance, resources=sensor_resources))
        assert isinstance(registration, SensorResult)
        instance.add_dynamic_partitions("mailbox", list(registration.dynamic_partitions_requests[0].partition_keys))
        (history,) = registration.run_requests  # one mailbox: one catch-up run of its partition
        assert history.tags[PARTITION_TAG] == history.tags[MAILBOX_TAG] == MAILBOX
        assert FIRST_DAY_TAG not in history.tags and LAST_DAY_TAG not in history.tags

        # Graph refuses the listing's second page once (an access policy applied mid-sync).
        server.add_fault(Fault("access_denied", path_contains="%24skip="))

        job = reconstructable(mail_to_links_from_env)
        with execute_job(job, instance=instance, tags=history.tags, run_config=IN_PROCESS, raise_on_error=False) as run:
            failed_id, failed_success = run.run_id, run.success
        assert not failed_success
        assert server.faults_pending() == 0
        error_text = " ".join(
            event.dagster_event.event_specific_data.error.to_string()
            for event in instance.all_logs(failed_id)
            if event.dagster_event and event.dagster_event.is_step_failure
        )
        assert "ErrorAccessDenied" in error_text and "request-id" in error_text
        # Every day of the failed step is recorded failed, with the error, and none is done.
        store = MailStore(database_url=database_url)
        statuses = store.day_statuses("outlook_messages", [MAILBOX], history_days[0], history_days[-1])[MAILBOX]
        assert set(statuses) == set(history_days)
        assert {status for status, _ in statuses.values()} == {"failed"}
        assert all("ErrorAccessDenied" in detail for _, detail in statuses.values())
        assert store.latest_done_days("outlook_messages") == {}

        # As the UI's "Re-execute from failure" does: the failed steps only, with the parent run's partition tags.
        parent = instance.get_run_by_id(failed_id)
        with execute_job(
            job,
            instance=instance,
            reexecution_options=ReexecutionOptions.from_failure(failed_id, instance),
            tags={k: v for k, v in parent.tags.items() if k == PARTITION_TAG or k.startswith("atom/")},
            run_config=IN_PROCESS,
        ) as resumed:
            assert resumed.success
        for asset in ("outlook_messages", "email_entities", "entity_links"):
            recorded = store.day_statuses(asset, [MAILBOX], history_days[0], history_days[-1])[MAILBOX]
            assert set(recorded) == set(history_days) and {s for s, _ in recorded.values()} == {"done"}, asset

    dispose_engine(database_url)
    clean_instance = DagsterInstance.ephemeral()
    full_sync(clean_instance, graph_source(server, sqlite_database_url), sqlite_database_url, days)
    assert_same_store(database_url, sqlite_database_url)


def _delta_source(database_url: str) -> GraphMailSource:
    """A Graph source that follows no folder: the sensor asks Graph nothing, the store's pending days decide."""
    return GraphMailSource(
        tenant_id="t", client_id="c", client_secret="s", delta_folders="", gate_database_url=database_url
    )


def test_the_delta_sensor_requests_each_complete_pending_day_with_its_day_tags(
    instance: DagsterInstance, sqlite_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pending days (as a delta round notes them): a complete day of a registered mailbox is one run of the
    mailbox's partition, that day as both day tags; today (not complete), a day before ATOM_START_DATE and
    a mailbox not registered wait."""
    monkeypatch.setenv("ATOM_START_DATE", "2001-01-01")
    store = MailStore(database_url=sqlite_database_url)
    instance.add_dynamic_partitions("mailbox", [MAILBOX])
    now = dt.datetime.now(dt.timezone.utc)
    today, changed = now.date(), dt.date(2001, 10, 17)
    noted = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.timezone.utc)
    reasons = {changed: "inbox: m1 changed", today: "inbox: m2 created", dt.date(2000, 12, 31): "inbox: m3 removed"}
    store.note_delta_round(MAILBOX, "inbox", "https://graph.test/delta?token=1", reasons, noted)
    store.note_delta_round("someone.else@enron.com", "inbox", "https://graph.test/delta?token=2", reasons, noted)

    result = evaluate_delta(instance, _delta_source(sqlite_database_url), sqlite_database_url)

    assert isinstance(result, SensorResult)
    (request,) = result.run_requests
    assert requested_days(result) == {(MAILBOX, changed)}
    assert request.partition_key == MAILBOX
    assert (request.tags[FIRST_DAY_TAG], request.tags[LAST_DAY_TAG]) == ("2001-10-17", "2001-10-17")
    assert request.tags[DELTA_SYNC_TAG] == "inbox: m1 changed"
    stored_noted = {(p["mailbox"], p["day"]): p["noted_at"] for p in store.pending_days()}[(MAILBOX, changed)]
    assert request.run_key == f"delta:{MAILBOX}:2001-10-17:{stored_noted.isoformat()}"
    # Requested every tick until the day is listed again; the run key keeps Dagster from launching it twice.
    again = evaluate_delta(instance, _delta_source(sqlite_database_url), sqlite_database_url)
    assert [r.run_key for r in again.run_requests] == [request.run_key]


def test_the_delta_sensor_skips_when_only_incomplete_days_are_pending(
    instance: DagsterInstance, sqlite_database_url: str
) -> None:
    store = MailStore(database_url=sqlite_database_url)
    instance.add_dynamic_partitions("mailbox", [MAILBOX])
    today = dt.datetime.now(dt.timezone.utc).date()
    store.note_delta_round(
        MAILBOX,
        "inbox",
        "https://graph.test/delta?token=1",
        {today: "inbox: m2 created"},
        dt.datetime.now(dt.timezone.utc),
    )

    result = evaluate_delta(instance, _delta_source(sqlite_database_url), sqlite_database_url)

    assert isinstance(result, SkipReason)
    assert result.skip_message == "no changed complete day pending in 1 mailbox(es)"
