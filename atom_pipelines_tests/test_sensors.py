"""Mailboxes become partitions without a code change: the registration sensor, at its edges (zero new
mailboxes, some, all already known) — production bug #4 was housekeeping code that broke on zero items."""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context

from atom_pipelines.mail.source import ExportMailSource
from atom_pipelines.sensors import register_mailboxes
from atom_pipelines_tests.conftest import corpus_records, write_export

MAILBOXES = {"kevin.hyatt@enron.com", "steven.harris@enron.com"}


def _evaluate(instance: DagsterInstance, export: Path) -> SensorResult | SkipReason:
    context = build_sensor_context(instance=instance, resources={"mail_source": ExportMailSource(export_dir=str(export))})
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
