"""The chain end to end on both stores: messages -> entities -> links, idempotent partition writes, and the
blocking checks that make a failed or empty extraction loud (production bug #8: a swallowed parse error
became "no entities" for weeks). Every test runs on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from pathlib import Path

import networkx as nx
import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, materialize
from dagster._core.test_utils import create_run_for_test
from PIL import Image

from atom_pipelines.assets.mailbox_days import StaleStepError, refuse_if_run_ended
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.extraction.outcomes import Attempt, Outcome
from atom_pipelines.extraction.providers import ExtractionProvider, MessageText
from atom_pipelines.mail.models import utc_day
from atom_pipelines.partitions import mailbox_day_key
from atom_pipelines.provider_chain import ProviderSpec
from atom_pipelines.store import schema
from atom_pipelines.store.resource import MailStore
from atom_pipelines.tags import FIRST_DAY_TAG, LAST_DAY_TAG
from atom_pipelines_tests.conftest import corpus_records, write_export
from atom_pipelines_tests.helpers import (
    PARTITIONED_CHAIN,
    check_metadata,
    check_results,
    materialize_days,
    resources,
)

MAILBOX = "kevin.hyatt@enron.com"
FIRST_DAY, LAST_DAY = dt.date(2001, 10, 17), dt.date(2002, 3, 24)


@pytest.fixture(scope="module")
def hyatt_records() -> list[dict]:
    return corpus_records({MAILBOX})


@pytest.fixture
def hyatt_export(tmp_path: Path, hyatt_records: list[dict]) -> Path:
    return write_export(tmp_path / "export", hyatt_records)


def table_rows(database_url: str, table: sa.Table) -> list[tuple]:
    """Every row, sorted, with JSON columns serialized so rows compare across runs."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(table)).all()
    finally:
        engine.dispose()
    return sorted(
        tuple(json.dumps(v, sort_keys=True) if isinstance(v, list | dict) else v for v in row) for row in rows
    )


def received_days(records: list[dict]) -> dict[dt.date, int]:
    days: dict[dt.date, int] = {}
    for record in records:
        day = utc_day(record["receivedDateTime"])  # the partition's day, as the source reads it
        days[day] = days.get(day, 0) + 1
    return days


class ExplodingProvider(ExtractionProvider):
    """A provider with a bug: it raises on every message."""

    name = "exploding"
    model = "test"

    def extract(self, message: MessageText) -> Attempt:
        raise ValueError("Expecting value: line 1 column 1 (char 0)")


class EmptyProvider(ExtractionProvider):
    """A provider that 'succeeds' with nothing for every message: the silent empty of production bug #8."""

    name = "empty"
    model = "test"

    def extract(self, message: MessageText) -> Attempt:
        return Attempt(self.name, self.model, Outcome.NONE_FOUND, "model said nothing")


class ChainOf(EntityExtractor):
    """The real extractor resource with a test provider as the whole chain (test code only)."""

    provider: str

    def specs(self) -> list[ProviderSpec]:
        return [ProviderSpec(self.provider, "test")]

    def build_provider(self, spec: ProviderSpec, key_env: str, pacer: object) -> ExtractionProvider:
        return {"exploding": ExplodingProvider, "empty": EmptyProvider}[spec.kind]()


def test_a_mailbox_backfill_stores_every_message_with_entities_and_links(
    instance: DagsterInstance, database_url: str, hyatt_export: Path, hyatt_records: list[dict]
) -> None:
    result = materialize_days(instance, resources(hyatt_export, database_url), MAILBOX, FIRST_DAY, LAST_DAY)

    assert result.success
    assert check_results(result) == {
        "no_duplicate_message_ids": True,
        "no_quarantined_records": True,
        "listing_complete": True,
        "extraction_succeeded": True,
        "llm_configuration_accepted": True,
        "degraded_share_within_limit": True,
        "none_found_share_sane": True,
        "model_not_gone_quiet": True,
        "ungrounded_share_sane": True,
        "links_point_at_entities": True,
    }
    messages = table_rows(database_url, schema.messages)
    assert sorted(r[1] for r in messages) == sorted(r["id"] for r in hyatt_records)
    # Each message sits in the partition of its receivedDateTime's UTC day.
    stored_days: dict[dt.date, int] = {}
    for row in messages:
        stored_days[row[2]] = stored_days.get(row[2], 0) + 1
    assert stored_days == received_days(hyatt_records)

    outcomes = table_rows(database_url, schema.extraction_outcomes)
    assert {r[1] for r in outcomes} == {r["id"] for r in hyatt_records}
    assert {r[6] for r in outcomes} <= {Outcome.ENTITIES.value, Outcome.NONE_FOUND.value}

    entities = table_rows(database_url, schema.entities)
    assert {r[8] for r in entities} == {"heuristic"}  # every row says which provider produced it
    assert any(r[2] == f"person:{MAILBOX}" for r in entities)
    links = table_rows(database_url, schema.entity_links)
    assert {r[4] for r in links} >= {"sent_to", "works_at", "co_mention"}

    # Dagster holds one partition, the mailbox; the store holds each of its days, done, for every asset.
    assert instance.get_materialized_partitions(AssetKey("entity_links")) == {MAILBOX}
    days = (LAST_DAY - FIRST_DAY).days + 1
    progress = table_rows(database_url, schema.mailbox_days)
    for asset in ("outlook_messages", "email_entities", "entity_links"):
        recorded = [r for r in progress if r[0] == asset]
        assert len(recorded) == days and {r[3] for r in recorded} == {"done"}, asset
    assert {r[2]: r[4] for r in progress if r[0] == "outlook_messages" and r[4]} == received_days(hyatt_records)
    (materialization,) = result.asset_materializations_for_node("entity_links")
    assert materialization.metadata["mailbox_days_failed"].value == 0


def test_materializing_twice_leaves_the_same_rows(
    instance: DagsterInstance, database_url: str, hyatt_export: Path
) -> None:
    run_resources = resources(hyatt_export, database_url)
    materialize_days(instance, run_resources, MAILBOX, "2001-11-01", "2001-11-30")
    first = {
        t.name: table_rows(database_url, t) for t in schema.PARTITIONED_TABLES if t is not schema.extraction_outcomes
    }
    materialize_days(instance, run_resources, MAILBOX, "2001-11-01", "2001-11-30")
    second = {
        t.name: table_rows(database_url, t) for t in schema.PARTITIONED_TABLES if t is not schema.extraction_outcomes
    }

    assert first["messages"], "the window holds mail"
    assert first == second
    # Outcomes differ only in measured latency.
    outcomes = [row[:9] for row in table_rows(database_url, schema.extraction_outcomes)]
    assert len(outcomes) == len(first["messages"])


def test_a_partition_write_replaces_exactly_its_own_rows(
    instance: DagsterInstance, database_url: str, tmp_path: Path, hyatt_records: list[dict]
) -> None:
    days = received_days(hyatt_records)
    busy = sorted(day for day, n in days.items() if n >= 2)
    day_a, day_b = busy[0], busy[1]
    export = write_export(tmp_path / "export", hyatt_records)
    run_resources = resources(export, database_url)
    materialize_days(instance, run_resources, MAILBOX, day_a)
    materialize_days(instance, run_resources, MAILBOX, day_b)
    before_b = [r for r in table_rows(database_url, schema.messages) if r[2] == day_b]

    # One message of day A disappears from the source (deleted in the mailbox); re-run day A only.
    gone = next(r for r in hyatt_records if received_days([r]).popitem()[0] == day_a)
    write_export(tmp_path / "export", [r for r in hyatt_records if r["id"] != gone["id"]])
    materialize_days(instance, run_resources, MAILBOX, day_a)

    rows = table_rows(database_url, schema.messages)
    assert len([r for r in rows if r[2] == day_a]) == days[day_a] - 1
    assert gone["id"] not in {r[1] for r in rows}
    assert [r for r in rows if r[2] == day_b] == before_b
    for table in (schema.entities, schema.entity_links, schema.extraction_outcomes):
        assert gone["id"] not in {r[1] for r in table_rows(database_url, table)}


@pytest.mark.parametrize(
    ("provider", "expected_reason"),
    [("exploding", "ValueError: Expecting value"), ("empty", "0 entities")],
)
def test_a_broken_extractor_turns_the_check_red_and_stops_the_links(
    instance: DagsterInstance, database_url: str, hyatt_export: Path, provider: str, expected_reason: str
) -> None:
    day = dt.date(2001, 10, 17)
    run_resources = resources(hyatt_export, database_url, extractor=ChainOf(provider=provider))
    result = materialize_days(instance, run_resources, MAILBOX, day, raise_on_error=False)

    assert not result.success
    assert check_results(result)["extraction_succeeded"] is False
    failures = check_metadata(result, "extraction_succeeded")["failures"]
    assert list(failures) == [mailbox_day_key(MAILBOX, day)]
    assert expected_reason in json.dumps(failures)
    if provider == "exploding":
        # The failing messages are named, each with the reason of every attempt.
        named = failures[mailbox_day_key(MAILBOX, day)]["failed_messages"]
        assert set(named) == {r[1] for r in table_rows(database_url, schema.messages)}
        outcomes = table_rows(database_url, schema.extraction_outcomes)
        assert {r[6] for r in outcomes} == {Outcome.ERROR.value}
    assert instance.get_materialized_partitions(AssetKey("entity_links")) == set()
    assert "links_point_at_entities" not in check_results(result)
    # The store's progress says the same: that day failed email_entities, naming the check; the messages
    # are done; entity_links never ran, so it has no row (missing), and a catch-up retries the day.
    progress = {(r[0], r[2]): (r[3], r[5]) for r in table_rows(database_url, schema.mailbox_days)}
    assert progress[("email_entities", day)] == ("failed", "extraction_succeeded")
    assert progress[("outlook_messages", day)] == ("done", "")
    assert ("entity_links", day) not in progress


def test_bad_export_records_never_vanish(
    instance: DagsterInstance, database_url: str, tmp_path: Path, hyatt_records: list[dict]
) -> None:
    day = dt.date(2001, 10, 17)
    on_day = [r for r in hyatt_records if r["receivedDateTime"].startswith("2001-10-17")]
    good = on_day[0]
    no_id = {k: v for k, v in good.items() if k != "id"}
    naive_date = {**good, "id": "naive", "receivedDateTime": "2001-10-17T10:00:00"}
    no_mailbox = {k: v for k, v in {**good, "id": "nobox"}.items() if k != "mailbox"}
    duplicate = {**good, "subject": "changed"}
    other_day = {**good, "id": "other-day", "receivedDateTime": "2001-10-18T10:00:00Z"}
    lines = [good, "{not json", no_id, naive_date, no_mailbox, duplicate, other_day]
    export = write_export(tmp_path / "export", lines, name="bad.jsonl")

    result = materialize_days(instance, resources(export, database_url), MAILBOX, day, raise_on_error=False)

    assert not result.success
    assert check_results(result)["no_quarantined_records"] is False
    named = check_metadata(result, "no_quarantined_records")["failures"][mailbox_day_key(MAILBOX, day)]
    origins = [entry.split(":")[0] + ":" + entry.split(":")[1] for entry in named]
    # Line 2: bad JSON (day unknown), 3: no id, 4: naive date (day unknown), 5: no mailbox, 6: duplicate id.
    assert origins == ["bad.jsonl:2", "bad.jsonl:3", "bad.jsonl:4", "bad.jsonl:5", "bad.jsonl:6"]
    assert "duplicate message id" in named[4] and "bad.jsonl:1" in named[4]
    quarantine = table_rows(database_url, schema.quarantined_records)
    assert [r[2] for r in quarantine] == ["bad.jsonl:2", "bad.jsonl:3", "bad.jsonl:4", "bad.jsonl:5", "bad.jsonl:6"]
    # The good message is stored; the rejected ones are not; downstream did not run.
    assert [r[1] for r in table_rows(database_url, schema.messages)] == [good["id"]]
    assert instance.get_materialized_partitions(AssetKey("email_entities")) == set()


def test_a_missing_export_directory_is_a_clear_error(
    instance: DagsterInstance, sqlite_database_url: str, tmp_path: Path
) -> None:
    result = materialize_days(
        instance, resources(tmp_path / "nowhere", sqlite_database_url), MAILBOX, "2001-10-17", raise_on_error=False
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.cause
    assert failure.cls_name == "MailSourceError"
    assert "nowhere does not exist" in failure.message and "ATOM_MAIL_EXPORT_DIR" in failure.message


def test_entity_graph_spans_every_partition(
    instance: DagsterInstance, database_url: str, hyatt_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATOM_GRAPH_EXPORT_DIR", str(tmp_path / "exports"))
    run_resources = resources(hyatt_export, database_url)
    materialize_days(instance, run_resources, MAILBOX, "2001-10-17", "2001-11-15")
    from dagster import materialize

    from atom_pipelines_tests.helpers import ALL_ASSETS

    result = materialize([ALL_ASSETS[-1]], instance=instance, resources=run_resources)
    assert all(e.passed for e in result.get_asset_check_evaluations()) and result.get_asset_check_evaluations()
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    links = table_rows(database_url, schema.entity_links)
    edges = table_rows(database_url, schema.graph_edges)
    assert metadata["nodes"].value == len(table_rows(database_url, schema.graph_nodes))
    assert metadata["edges"].value == len(edges)
    # Kinds stay apart: every kind of link is a kind of edge, none folded into another.
    assert {row[4] for row in links} == {row[2] for row in edges}
    # One mailbox holds no copies, so a header edge (between addresses, never renamed by resolution) weighs
    # its links, one per message. (A co-mention may gain the messages of body names resolved to its ends.)
    by_edge = {(row[0], row[1], row[2]): row[4] for row in edges}
    addressed = [r for r in links if r[4] in ("sent_to", "cc_to", "works_at")]
    expected: dict[tuple[str, str, str], int] = {}
    for row in addressed:
        expected[(row[2], row[3], row[4])] = expected.get((row[2], row[3], row[4]), 0) + 1
    assert {edge: by_edge[edge] for edge in expected} == expected
    for name in ("graphml_path", "gexf_path", "node_link_json_path", "picture_path"):
        assert Path(metadata[name].value).parent == tmp_path / "exports"
    exported = nx.read_graphml(metadata["graphml_path"].value)
    assert exported.number_of_edges() == len(edges)
    inline = metadata["picture"].value
    assert inline.startswith("![entity graph](data:image/png;base64,") and inline.endswith(")")
    with Image.open(io.BytesIO(base64.b64decode(inline.split(",", 1)[1][:-1]))) as thumbnail:
        assert thumbnail.format == "PNG" and thumbnail.width <= 800 and thumbnail.height <= 600
    with Image.open(metadata["picture_path"].value) as picture:
        assert picture.width > thumbnail.width  # the full picture is on disk, the thumbnail inline
    top = [record.data for record in metadata["top_people"].records]
    assert f"person:{MAILBOX}" in [row["entity"] for row in top]
    assert [row["pagerank"] for row in top] == sorted((row["pagerank"] for row in top), reverse=True)
    assert [record.data["size"] for record in metadata["top_communities"].records][0] >= 2


def test_a_blocking_check_records_its_mailbox_days_failed_and_a_repair_clears_them(
    instance: DagsterInstance, database_url: str, tmp_path: Path, hyatt_records: list[dict]
) -> None:
    day = dt.date(2001, 10, 17)
    good = [r for r in hyatt_records if r["receivedDateTime"].startswith("2001-10-17")]
    export = write_export(tmp_path / "export", [*good, "{not json"], name="bad.jsonl")

    failed = materialize_days(instance, resources(export, database_url), MAILBOX, day, raise_on_error=False)

    assert not failed.success
    progress = {(r[0], r[2]): (r[3], r[5]) for r in table_rows(database_url, schema.mailbox_days)}
    assert progress == {("outlook_messages", day): ("failed", "no_quarantined_records")}
    write_export(tmp_path / "export", good, name="bad.jsonl")  # the line fixed, as the runbook says

    repaired = materialize_days(instance, resources(export, database_url), MAILBOX, day)

    assert repaired.success
    progress = {(r[0], r[2]): r[3] for r in table_rows(database_url, schema.mailbox_days)}
    assert progress == {(asset, day): "done" for asset in ("outlook_messages", "email_entities", "entity_links")}


@pytest.mark.parametrize(
    ("tags", "named"),
    [
        ({FIRST_DAY_TAG: "2001-10-17"}, "has the tag atom/first_day but not atom/last_day"),
        ({FIRST_DAY_TAG: "2001-10-18", LAST_DAY_TAG: "2001-10-17"}, "atom/first_day=2001-10-18 is after"),
        ({FIRST_DAY_TAG: "17.10.2001", LAST_DAY_TAG: "2001-10-17"}, "atom/first_day='17.10.2001' is not a day"),
        ({FIRST_DAY_TAG: "2000-01-01", LAST_DAY_TAG: "2000-01-02"}, "outside the days that may be synced"),
    ],
    ids=["one-tag", "backwards", "not-a-day", "before-start"],
)
def test_a_run_with_unusable_day_tags_fails_at_its_first_step_naming_the_tag(
    instance: DagsterInstance, database_url: str, hyatt_export: Path, tags: dict[str, str], named: str
) -> None:
    instance.add_dynamic_partitions("mailbox", [MAILBOX])

    result = materialize(
        PARTITIONED_CHAIN,
        instance=instance,
        resources=resources(hyatt_export, database_url),
        partition_key=MAILBOX,
        tags=tags,
        raise_on_error=False,
    )

    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "outlook_messages"
    assert named in failure.event_specific_data.error.to_string()
    store = MailStore(database_url=database_url)  # nothing was written: the step failed before the store
    assert store.count(schema.messages) == store.count(schema.mailbox_days) == 0


def test_a_step_handed_out_after_its_run_ended_is_refused(instance: DagsterInstance) -> None:
    """What a Celery broker's redelivery of a failed run's step meets at step_windows, before it writes or
    records anything: the run's status as the instance has it now."""
    running = create_run_for_test(instance, job_name="mail_to_links", status=DagsterRunStatus.STARTED)
    refuse_if_run_ended(instance, running.run_id)  # a step of a run in progress runs
    for status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED, DagsterRunStatus.SUCCESS):
        ended = create_run_for_test(instance, job_name="mail_to_links", status=status)
        with pytest.raises(StaleStepError, match=f"run {ended.run_id} already ended {status.value}"):
            refuse_if_run_ended(instance, ended.run_id)
