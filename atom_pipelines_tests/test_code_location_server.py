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
3. launches one mailbox-day of ``mail_to_links`` with the ``launchRun`` mutation the UI uses, waits for
   SUCCESS (failing with the run's error events), and checks the rows it stored;
4. stops every process it started and checks that the webserver's port is free again.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from atom_pipelines.partitions import DATE_DIMENSION, MAILBOX_DIMENSION, partition_key
from atom_pipelines_tests.conftest import corpus_records
from atom_pipelines_tests.dagster_dev import (
    JOB,
    LAUNCH_RUN,
    LOCATION,
    POLL_S,
    REPOSITORY,
    SENSOR_TIMEOUT_S,
    Server,
    dagster_dev,
    deployment_env,
    graphql,
    python_error,
    wait_for_location,
    wait_for_run,
)

pytestmark = [pytest.mark.server, pytest.mark.postgres]

SENSOR = "register_mailboxes"
PARTITIONED_ASSET = "outlook_messages"
MAILBOX = "kevin.hyatt@enron.com"
DAY = dt.date(2001, 11, 27)  # the mailbox's busiest UTC day in the corpus (5 messages)

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
        keys = {d["name"]: d["partitionKeys"] for d in asset["partitionKeysByDimension"]}
        if MAILBOX in keys.get(MAILBOX_DIMENSION, []):
            return
        last = f"sensor {sensor['sensorState']}, partition keys of {MAILBOX_DIMENSION}: {keys.get(MAILBOX_DIMENSION)}"
        time.sleep(POLL_S)
    pytest.fail(f"mailbox {MAILBOX} not registered within {SENSOR_TIMEOUT_S}s; last: {last}", pytrace=False)


def _launch_partition_run(server: Server) -> str:
    key = partition_key(MAILBOX, DAY)
    assert key == f"{DAY.isoformat()}|{MAILBOX}"
    launched = graphql(
        server,
        LAUNCH_RUN,
        {
            "executionParams": {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": REPOSITORY,
                    "jobName": JOB,
                },
                # No run config: the production executor (a subprocess per step), not in_process. In-process
                # would save ~10 s here but would no longer load the code the way production's step workers do.
                "runConfigData": {},
                "executionMetadata": {
                    # The tags the UI's launchpad sets for one partition of a multi-partitioned job.
                    "tags": [
                        {"key": "dagster/partition", "value": key},
                        {"key": f"dagster/partition/{DATE_DIMENSION}", "value": DAY.isoformat()},
                        {"key": f"dagster/partition/{MAILBOX_DIMENSION}", "value": MAILBOX},
                    ]
                },
            }
        },
    )["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        pytest.fail(f"launchRun answered {launched}", pytrace=False)
    return launched["run"]["runId"]


def _expected_messages() -> set[tuple[str, str]]:
    """(mailbox, message id) of every export record received on DAY in UTC."""
    expected = set()
    for record in corpus_records({MAILBOX}):
        received = dt.datetime.fromisoformat(record["receivedDateTime"]).astimezone(dt.timezone.utc)
        if received.date() == DAY:
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
