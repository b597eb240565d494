"""Mailboxes become partitions without a code change: the registration sensor, at its edges (zero new
mailboxes, some, all already known) — production bug #4 was housekeeping code that broke on zero items."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context

from atom_pipelines.mail.source import ExportMailSource
from atom_pipelines.sensors import register_mailboxes
from atom_pipelines_tests.conftest import corpus_records, write_export

MAILBOXES = {"kevin.hyatt@enron.com", "steven.harris@enron.com"}


def _evaluate(instance: DagsterInstance, export: Path) -> SensorResult | SkipReason:
    context = build_sensor_context(
        instance=instance, resources={"mail_source": ExportMailSource(export_dir=str(export))}
    )
    return register_mailboxes(context)


def test_new_mailboxes_are_registered_once(instance: DagsterInstance, tmp_path: Path) -> None:
    export = write_export(tmp_path / "export", corpus_records(MAILBOXES))

    first = _evaluate(instance, export)
    assert isinstance(first, SensorResult)
    (request,) = first.dynamic_partitions_requests
    assert request.partitions_def_name == "mailbox"
    assert sorted(request.partition_keys) == sorted(MAILBOXES)

    instance.add_dynamic_partitions("mailbox", list(request.partition_keys))
    second = _evaluate(instance, export)
    assert isinstance(second, SkipReason)
    assert "all 2 mailboxes" in second.skip_message


def test_only_the_mailboxes_not_yet_known_are_added(instance: DagsterInstance, tmp_path: Path) -> None:
    export = write_export(tmp_path / "export", corpus_records(MAILBOXES))
    instance.add_dynamic_partitions("mailbox", ["kevin.hyatt@enron.com"])

    result = _evaluate(instance, export)

    assert isinstance(result, SensorResult)
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["steven.harris@enron.com"]


def test_mailbox_case_does_not_create_a_second_partition(instance: DagsterInstance, tmp_path: Path) -> None:
    records = corpus_records({"kevin.hyatt@enron.com"})[:2]
    records[1] = {**records[1], "mailbox": "Kevin.Hyatt@Enron.com"}
    export = write_export(tmp_path / "export", records)

    result = _evaluate(instance, export)

    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["kevin.hyatt@enron.com"]


def _days(request) -> tuple[dt.date, dt.date]:  # noqa: ANN001 - a RunRequest
    start = request.tags["dagster/asset_partition_range_start"].split("|")
    end = request.tags["dagster/asset_partition_range_end"].split("|")
    assert start[1] == end[1] == request.tags["atom/mailbox"]
    return dt.date.fromisoformat(start[0]), dt.date.fromisoformat(end[0])


def test_a_new_mailbox_gets_its_history_synced_in_chunks_without_gap_or_overlap(
    instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATOM_MAX_PARTITIONS_PER_RUN", "31")
    records = corpus_records({"kevin.hyatt@enron.com"})
    days = sorted(
        {dt.datetime.fromisoformat(r["receivedDateTime"]).astimezone(dt.timezone.utc).date() for r in records}
    )
    export = write_export(tmp_path / "export", records)

    result = _evaluate(instance, export)

    assert isinstance(result, SensorResult)
    chunks = [_days(r) for r in result.run_requests]
    assert chunks[0][0] == days[0] and chunks[-1][1] == days[-1]  # the export's first to last message
    for (_, end), (next_start, _) in zip(chunks, chunks[1:], strict=False):
        assert next_start == end + dt.timedelta(days=1)  # no gap, no overlap
    assert all((end - start).days < 31 for start, end in chunks)
    assert len({r.run_key for r in result.run_requests}) == len(chunks)
    assert {r.tags["atom/history_sync"] for r in result.run_requests} == {"kevin.hyatt@enron.com"}


def test_history_sync_starts_at_the_configured_start_date(
    instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATOM_START_DATE", "2001-06-01")
    monkeypatch.setenv("ATOM_MAX_PARTITIONS_PER_RUN", "400")
    export = write_export(tmp_path / "export", corpus_records({"kevin.hyatt@enron.com"}))

    (request,) = _evaluate(instance, export).run_requests

    start, _end = _days(request)
    first_after = min(
        day
        for r in corpus_records({"kevin.hyatt@enron.com"})
        if (day := dt.datetime.fromisoformat(r["receivedDateTime"]).astimezone(dt.timezone.utc).date())
        >= dt.date(2001, 6, 1)
    )
    assert start == first_after


def test_history_sync_can_be_turned_off(
    instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATOM_HISTORY_SYNC_ON_REGISTER", "false")
    export = write_export(tmp_path / "export", corpus_records(MAILBOXES))

    result = _evaluate(instance, export)

    assert result.run_requests == []
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == sorted(MAILBOXES)
