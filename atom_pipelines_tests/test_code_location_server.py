"""The code location loads the way the server loads it, and one partition runs through the server.

Protects against production bug #6: run workers died at start-up on a broken import
(ModuleNotFoundError), because nothing ever loaded the code the way the deployed server does. In-process
tests (``materialize``, ``Definitions`` validation) import the package from the test process and cannot
see that. This test starts the real ``dagster dev -w workspace.yaml`` from the repo root (webserver,
daemon, gRPC code server and run workers as separate processes), with the repo's production
``dagster.yaml`` (PostgreSQL run/event/schedule storage from ``DAGSTER_PG_*``) on a fresh PostgreSQL
database that also serves as the pipeline store, then:

1. waits, through the webserver's GraphQL API, until the ``atom_pipelines`` location is loaded, failing
   with the load error if it is not;
2. waits until the ``register_mailboxes`` sensor, evaluated by the server's daemon, has registered the
   export's mailbox as a partition;
3. launches one mailbox-day of ``mail_to_links`` with the ``launchRun`` mutation the UI uses (the mailbox's
   partition, the day as ``atom/first_day`` and ``atom/last_day``), waits for SUCCESS (failing with the
   run's error events), and checks the rows it stored;
4. stops every process it started and checks that the webserver's port is free again.

``test_an_analyst_resyncs_a_date_range_of_one_mailbox_through_the_daemon`` is the analyst's flow on the
mailbox partition scheme: a launchpad run of one mailbox with a date range (the run queue, so the daemon
launches it) records exactly those days done in the store's ``mailbox_days``, for each asset of the chain;
a run with only ``atom/first_day`` fails at its first step naming the missing tag, and records nothing.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from atom_pipelines.partitions import CHAIN, days_between
from atom_pipelines.tags import FIRST_DAY_TAG, LAST_DAY_TAG, PARTITION_TAG
from atom_pipelines_tests.conftest import corpus_records
from atom_pipelines_tests.dagster_dev import (
    JOB,
    LOCATION,
    POLL_S,
    REPOSITORY,
    SENSOR_TIMEOUT_S,
    Server,
    dagster_dev,
    deployment_env,
    graphql,
    launch_run,
    python_error,
    run_errors,
    wait_for_location,
    wait_for_run,
    wait_for_status,
)

pytestmark = [pytest.mark.server, pytest.mark.postgres]

SENSOR = "register_mailboxes"
PARTITIONED_ASSET = "outlook_messages"
MAILBOX = "kevin.hyatt@enron.com"
DAY = dt.date(2001, 11, 27)  # the mailbox's busiest UTC day in the corpus (5 messages)
#: The analyst's re-sync: two days without mail (24th, 25th), then 1 + 5 + 1 messages.
RESYNC_DAYS = (dt.date(2001, 11, 24), dt.date(2001, 11, 28))

MAILBOX_PARTITIONS = """
query MailboxPartitions($sensor: SensorSelector!, $asset: AssetKeyInput!) {
  sensorOrError(sensorSelector: $sensor) {
    __typename
    ... on Sensor {
      sensorState {
        status
        ticks(limit: 5) { status skipReason error { message stack causes { message stack } } }
      }
    }
    ... on SensorNotFoundError { message }
    ... on PythonError { message }
  }
  assetNodeOrError(assetKey: $asset) {
    __typename
    ... on AssetNode { partitionKeysByDimension { name partitionKeys } }
  }
}
"""


@pytest.fixture
def server_env(tmp_path: Path, postgres_database_url: str) -> dict[str, str]:
    """The environment of a production-like deployment, pointed at the fresh database and a small export."""
    return deployment_env(tmp_path, postgres_database_url, corpus_records({MAILBOX}))


def _wait_for_mailbox_partition(server: Server) -> None:
    """Wait until the register_mailboxes sensor, running in the server's daemon, has added the mailbox.

    Chosen over adding the partition from the test process (``DagsterInstance.from_config`` +
    ``add_dynamic_partitions``): a sensor that has never ticked is evaluated as soon as the daemon's
    sensor loop starts (seen: within 1 s of the daemon starting, before the webserver answers);
    ``minimum_interval_seconds=60`` only spaces the ticks after that. So waiting costs nothing, and the test
    then also covers the daemon loading the code location and the sensor reading the export through the
    ``mail_source`` resource in the deployed environment. A failed tick fails the test at once with its
    error; the bound leaves room for one retry tick after the 60 s interval.
    """
    deadline = time.monotonic() + SENSOR_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        server.assert_alive()
        data = graphql(
            server,
            MAILBOX_PARTITIONS,
            {
                "sensor": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": REPOSITORY,
                    "sensorName": SENSOR,
                },
                "asset": {"path": [PARTITIONED_ASSET]},
            },
        )
        sensor, asset = data["sensorOrError"], data["assetNodeOrError"]
        if sensor["__typename"] != "Sensor":
            pytest.fail(f"sensor {SENSOR}: {sensor}", pytrace=False)
        for tick in sensor["sensorState"]["ticks"]:
            if tick["status"] == "FAILURE":
                pytest.fail(f"sensor {SENSOR} tick failed:\n{python_error(tick['error'])}", pytrace=False)
        if asset["__typename"] != "AssetNode":
            pytest.fail(f"asset {PARTITIONED_ASSET}: {asset}", pytrace=False)
        # One dimension: the mailbox partitions (one per mailbox, days are the run's).
        dimensions = asset["partitionKeysByDimension"]
        assert len(dimensions) == 1, f"{PARTITIONED_ASSET} is not partitioned by mailbox alone: {dimensions}"
        keys = dimensions[0]["partitionKeys"]
        if MAILBOX in keys:
            return
        last = f"sensor {sensor['sensorState']}, mailbox partitions: {keys}"
        time.sleep(POLL_S)
    pytest.fail(f"mailbox {MAILBOX} not registered within {SENSOR_TIMEOUT_S}s; last: {last}", pytrace=False)


def _launch_partition_run(server: Server, tags: dict[str, str] | None = None) -> str:
    """``mail_to_links`` with the tags the UI's launchpad sets: the mailbox's partition and, by default, DAY
    as the run's first and last day."""
    if tags is None:
        tags = {PARTITION_TAG: MAILBOX, FIRST_DAY_TAG: DAY.isoformat(), LAST_DAY_TAG: DAY.isoformat()}
    # No run config: the production executor (a subprocess per step), not in_process. In-process would save
    # ~10 s here but would no longer load the code the way production's step workers do.
    return launch_run(server, JOB, tags)


def _expected_messages(first: dt.date = DAY, last: dt.date = DAY) -> set[tuple[str, str]]:
    """(mailbox, message id) of every export record received from ``first`` to ``last`` in UTC."""
    expected = set()
    for record in corpus_records({MAILBOX}):
        received = dt.datetime.fromisoformat(record["receivedDateTime"]).astimezone(dt.timezone.utc)
        if first <= received.date() <= last:
            expected.add((record["mailbox"], record["id"]))
    return expected


def test_dagster_dev_loads_the_code_location_and_runs_one_partition(
    server_env: dict[str, str],
    tmp_path: Path,
) -> None:
    started = time.monotonic()

    def phase(what: str) -> None:  # where the time goes, shown with -s or on failure
        print(f"{time.monotonic() - started:6.1f}s {what}")

    with dagster_dev(server_env, tmp_path) as server:
        wait_for_location(server)
        phase(f"code location {LOCATION} loaded")
        _wait_for_mailbox_partition(server)
        phase(f"mailbox partition {MAILBOX} registered by the sensor")
        run_id = _launch_partition_run(server)
        wait_for_run(server, run_id)
        phase(f"run {run_id} succeeded")
    phase("every process stopped, port free")

    expected = _expected_messages()
    assert expected, f"the corpus has no message of {MAILBOX} on {DAY}"
    engine = sa.create_engine(server_env["ATOM_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            stored = {tuple(row) for row in conn.execute(sa.text("select mailbox, message_id from messages"))}
            days = set(conn.execute(sa.text("select distinct day from messages")).scalars())
            entities = conn.execute(sa.text("select count(*) from entities")).scalar_one()
            # The instance storage is this database too (dagster.yaml's PostgreSQL storage, not SQLite).
            dagster_runs = set(conn.execute(sa.text("select run_id from runs")).scalars())
    finally:
        engine.dispose()
    assert stored == expected, f"missing {expected - stored}, unexpected {stored - expected}"
    assert days == {DAY}
    assert entities > 0, "the run stored no entities"
    assert run_id in dagster_runs, f"run {run_id} is not in the PostgreSQL run storage: {dagster_runs}"


def _store_progress(database_url: str) -> tuple[set[tuple], set[tuple[str, str]]]:
    """Every row of ``mailbox_days`` as (asset, mailbox, day, status, rows, detail, run id), and the stored
    (mailbox, message id) pairs."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            progress = {
                tuple(row)
                for row in conn.execute(
                    sa.text("select asset, mailbox, day, status, rows, detail, run_id from mailbox_days")
                )
            }
            stored = {tuple(row) for row in conn.execute(sa.text("select mailbox, message_id from messages"))}
    finally:
        engine.dispose()
    return progress, stored


def test_an_analyst_resyncs_a_date_range_of_one_mailbox_through_the_daemon(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()

    def phase(what: str) -> None:  # where the time goes, shown with -s or on failure
        print(f"{time.monotonic() - started:6.1f}s {what}")

    first, last = RESYNC_DAYS
    with dagster_dev(server_env, tmp_path) as server:
        wait_for_location(server)
        _wait_for_mailbox_partition(server)
        phase(f"code location loaded, {MAILBOX} registered")
        # The launchpad's date-range re-sync: the mailbox's partition and the two day tags. The run goes
        # through the run queue (dagster.yaml's QueuedRunCoordinator): the daemon launches it.
        resync = _launch_partition_run(
            server, {PARTITION_TAG: MAILBOX, FIRST_DAY_TAG: first.isoformat(), LAST_DAY_TAG: last.isoformat()}
        )
        wait_for_run(server, resync)
        phase(f"re-sync {resync} of {first}..{last} succeeded")
        after_resync = _store_progress(server_env["ATOM_DATABASE_URL"])

        # One day tag without the other: refused at the first step, naming the missing tag.
        half = _launch_partition_run(server, {PARTITION_TAG: MAILBOX, FIRST_DAY_TAG: first.isoformat()})
        wait_for_status(server, half, "FAILURE")
        errors = run_errors(server, half)
        phase(f"run {half} with only {FIRST_DAY_TAG} failed")
    phase("every process stopped, port free")

    assert f"the run has the tag {FIRST_DAY_TAG} but not {LAST_DAY_TAG}" in errors, errors
    assert "RunDaysError" in errors, errors

    progress, stored = after_resync
    days = days_between(first, last)
    per_day = {day: 0 for day in days}
    for record in corpus_records({MAILBOX}):
        received = dt.datetime.fromisoformat(record["receivedDateTime"]).astimezone(dt.timezone.utc).date()
        if received in per_day:
            per_day[received] += 1
    assert per_day[first] == 0 and sum(per_day.values()) == 7, per_day  # empty days are done days too
    # Exactly those days, every one done by the re-sync, for each asset of the chain; no other day recorded.
    assert {(asset, mailbox, day) for asset, mailbox, day, *_ in progress} == {
        (asset, MAILBOX, day) for asset in CHAIN for day in days
    }, sorted(progress)
    failed = [row for row in progress if row[3] != "done" or row[6] != resync]
    assert not failed, f"days not done by the re-sync {resync}: {failed}"
    assert {day: rows for asset, _, day, _, rows, _, _ in progress if asset == "outlook_messages"} == per_day
    assert all(detail == "" for *_, detail, _ in progress)
    assert stored == _expected_messages(first, last)
    # The refused run recorded nothing and stored nothing.
    assert _store_progress(server_env["ATOM_DATABASE_URL"]) == after_resync
