"""entity_graph rebuilds by itself after entity_links changed: at most once per ATOM_GRAPH_REFRESH_MINUTES, never
while entity_links is still being written, and through the daemon's ``entity_graph_freshness`` sensor.

What it protects: ``graph_refresh_condition`` (assets/entity_graph.py) and the sensor that evaluates it
(sensors.py). A wrong condition either leaves the graph stale (nothing requested after links landed) or
rebuilds it once per landed run of a history sync over many mailboxes (requested while links are in progress).

In process, ``dagster.evaluate_automation_conditions`` evaluates the real condition on stand-in assets with
the production keys and partitions (``entity_links`` on the real ``mailbox_partitions``, one dynamic partition
per mailbox, ``entity_graph`` unpartitioned on top): each ``Ticks.requested(minute)`` is one sensor evaluation
at that minute of the hour, carrying the cursor forward as the daemon does. Evaluation times lie in the next
hour, after every event the test writes, as in a deployment (where an evaluation never precedes the events it
reads). Links land through real runs (``materialize``) of a mailbox's partition with a day as the run's day
tags, as a date-range re-sync, the delta sensor or a catch-up run writes them (each run re-materializes the
same mailbox partition: a day landing is a new materialization of its mailbox), and a run in progress is a
real run: created and reported enqueued (as the QueuedRunCoordinator submits it), reported STARTING (as the
queue's launch does) and executed by ``execute_run``, what a run worker does with it. The instance is
``DagsterInstance.ephemeral()`` (in-memory storage): the same event log and run storage code, without the ~1 s
per run that SQLite files cost.

Through the daemon, on PostgreSQL: ``dagster dev`` with ATOM_GRAPH_REFRESH_MINUTES=1 and the production
``dagster.yaml``; once the sensor has evaluated once, one mailbox-day of ``mail_to_links`` (the mailbox's
partition, the day as ``atom/first_day`` and ``atom/last_day``); then the sensor's own run of entity_graph,
whose checks pass and whose graph_edges lead to that day's e-mails.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    asset,
    define_asset_job,
    evaluate_automation_conditions,
    in_process_executor,
    materialize,
)
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.execution.api import execute_run
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.utils import make_new_backfill_id

from atom_pipelines.assets.entity_graph import entity_graph, graph_refresh_condition
from atom_pipelines.config import load_settings
from atom_pipelines.partitions import MAILBOX_DIMENSION, mailbox_partitions
from atom_pipelines.sensors import entity_graph_freshness
from atom_pipelines.tags import FIRST_DAY_TAG, LAST_DAY_TAG, PARTITION_TAG
from atom_pipelines_tests.conftest import REPO_ROOT, corpus_records
from atom_pipelines_tests.dagster_dev import (
    LOCATION,
    POLL_S,
    REPOSITORY,
    Server,
    dagster_dev,
    deployment_env,
    graphql,
    launch_partition_run,
    python_error,
    runs_tagged,
    wait_for_location,
    wait_for_mailboxes,
    wait_for_run,
    wait_for_status,
)

MAILBOX = "kevin.hyatt@enron.com"
#: The mailboxes registered in process: a backfill covers several mailbox partitions.
MAILBOXES = [MAILBOX, "daren.farmer@enron.com", "steven.harris@enron.com"]
LINKS = AssetKey("entity_links")
GRAPH = AssetKey("entity_graph")
DAYS = [dt.date(2001, 11, 26) + dt.timedelta(days=i) for i in range(5)]


# -- The condition, in process ------------------------------------------------------------------------------


@asset(partitions_def=mailbox_partitions, name="entity_links")
def links_stand_in() -> None:
    """entity_links' key and partitions (the real mailbox partitions definition), without the store."""


def graph_stand_in(minutes: int) -> AssetsDefinition:
    @asset(name="entity_graph", deps=[links_stand_in], automation_condition=graph_refresh_condition(minutes))
    def graph() -> None:
        """entity_graph's key, dependency and real condition, without the build."""

    return graph


def stand_in_definitions(minutes: int) -> Definitions:
    # In-process executor: runs executed here by execute_run are not reconstructable in a subprocess.
    return Definitions(
        assets=[links_stand_in, graph_stand_in(minutes)],
        jobs=[
            define_asset_job("links_job", selection=[LINKS], executor_def=in_process_executor),
            define_asset_job("graph_job", selection=[GRAPH], executor_def=in_process_executor),
        ],
    )


#: The stand-ins at the default interval: what the origin of a queued run names (Dagster requires one for a
#: QUEUED run; nothing loads it here, there is no daemon).
STAND_INS = stand_in_definitions(15)


def _origin(job_name: str) -> RemoteJobOrigin:
    location = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name=__name__, attribute="STAND_INS", working_directory=str(REPO_ROOT)),
        location_name="stand_ins",
    )
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME), job_name)


class Ticks:
    """The entity_graph_freshness sensor's evaluations, in process, on one instance."""

    def __init__(self, instance: DagsterInstance, minutes: int = 15) -> None:
        self.instance = instance
        self.defs = STAND_INS if minutes == 15 else stand_in_definitions(minutes)
        self.cursor = None
        now = dt.datetime.now(dt.timezone.utc)
        self.hour = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        instance.add_dynamic_partitions(MAILBOX_DIMENSION, MAILBOXES)

    def requested(self, minute: float) -> int:
        """One evaluation at ``minute`` past the hour (cron ticks fall on multiples of the interval):
        how many times entity_graph is requested (0 or 1)."""
        result = evaluate_automation_conditions(
            defs=self.defs,
            instance=self.instance,
            cursor=self.cursor,
            evaluation_time=self.hour + dt.timedelta(minutes=minute),
        )
        self.cursor = result.cursor
        assert result.get_requested_partitions(GRAPH) <= {None}, "entity_graph is unpartitioned"
        assert result.get_num_requested(LINKS) == 0, "nothing but entity_graph has a condition"
        return result.get_num_requested(GRAPH)

    def land(self, day: dt.date, mailbox: str = MAILBOX) -> None:
        """One mailbox-day of entity_links written by a run of its own (as a delta sync or a date-range
        re-sync): the mailbox's partition, the day as the run's day tags."""
        result = materialize([links_stand_in], instance=self.instance, partition_key=mailbox, tags=_day_tags(day))
        assert result.success

    def queue_links_run(self, day: dt.date) -> DagsterRun:
        """A run of one mailbox-day of entity_links waiting in the run queue (a history run behind others)."""
        run = self.instance.create_run_for_job(
            self.defs.resolve_job_def("links_job"),
            status=DagsterRunStatus.NOT_STARTED,
            asset_selection={LINKS},
            remote_job_origin=_origin("links_job"),
            tags={PARTITION_TAG: MAILBOX, **_day_tags(day)},
        )
        return self._enqueue(run)

    def queue_graph_run(self) -> DagsterRun:
        """The run the sensor's request becomes."""
        run = self.instance.create_run_for_job(
            self.defs.resolve_job_def("graph_job"),
            status=DagsterRunStatus.NOT_STARTED,
            asset_selection={GRAPH},
            remote_job_origin=_origin("graph_job"),
        )
        return self._enqueue(run)

    def _enqueue(self, run: DagsterRun) -> DagsterRun:
        """What the QueuedRunCoordinator's submit_run does with a created run: report it enqueued."""
        self._report(run, DagsterEventType.RUN_ENQUEUED)
        assert self.instance.get_run_by_id(run.run_id).status == DagsterRunStatus.QUEUED
        return run

    def _report(self, run: DagsterRun, event_type: DagsterEventType) -> None:
        self.instance.report_dagster_event(
            DagsterEvent(event_type_value=event_type.value, job_name=run.job_name), run_id=run.run_id
        )

    def launch(self, run: DagsterRun) -> None:
        """What the run queue's launch does when a slot frees: the run is STARTING (its worker starts)."""
        self._report(run, DagsterEventType.RUN_STARTING)
        assert self.instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTING

    def execute(self, run: DagsterRun) -> None:
        """What the run worker does with a launched run: execute it to the end, materializing its asset."""
        job = self.defs.resolve_job_def(run.job_name)
        result = execute_run(InMemoryJob(job), self.instance.get_run_by_id(run.run_id), self.instance)
        assert result.success
        assert self.instance.get_run_by_id(run.run_id).status == DagsterRunStatus.SUCCESS


def _day_tags(day: dt.date) -> dict[str, str]:
    return {FIRST_DAY_TAG: day.isoformat(), LAST_DAY_TAG: day.isoformat()}


@pytest.fixture
def ticks() -> Iterator[Ticks]:
    with DagsterInstance.ephemeral() as instance:
        yield Ticks(instance)


def test_the_production_graph_carries_the_condition_and_the_sensor_evaluates_only_it() -> None:
    minutes = load_settings().graph_refresh_minutes
    assert entity_graph.automation_conditions_by_key == {GRAPH: graph_refresh_condition(minutes)}
    assert graph_refresh_condition(minutes) != graph_refresh_condition(60 if minutes != 60 else 30)
    with DagsterInstance.ephemeral() as instance:
        graph = Ticks(instance).defs.resolve_asset_graph()
    assert entity_graph_freshness.asset_selection.resolve(graph) == {GRAPH}
    assert entity_graph_freshness.default_status == DefaultSensorStatus.RUNNING
    assert entity_graph_freshness.minimum_interval_seconds == 30


def test_the_sensor_starts_stopped_when_auto_refresh_is_off() -> None:
    """ATOM_GRAPH_AUTO_REFRESH=false: the sensor is defined (and can be turned on in the UI) but not running."""
    code = "from atom_pipelines.sensors import entity_graph_freshness as s; print(s.default_status.value)"
    env = {**os.environ, "ATOM_GRAPH_AUTO_REFRESH": "false"}
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == DefaultSensorStatus.STOPPED.value


def test_nothing_is_requested_when_nothing_changed(ticks: Ticks) -> None:
    assert ticks.requested(1) == 0  # the first evaluation only records where things stand
    assert ticks.requested(16) == 0  # a tick passed, no link changed
    assert ticks.requested(31) == 0


def test_links_that_landed_before_the_first_evaluation_wait_for_the_next_change(ticks: Ticks) -> None:
    """Dagster's ``newly_updated`` is empty on a condition's first evaluation, and ``since_last_handled``
    resets there: links written before the sensor's first tick (a sensor added to a running deployment)
    do not rebuild the graph; the next change does. The daemon test below waits for that first tick."""
    ticks.land(DAYS[0])
    assert ticks.requested(1) == 0
    assert ticks.requested(16) == 0
    ticks.land(DAYS[1])
    assert ticks.requested(17) == 1


@pytest.mark.parametrize("minutes", [1, 15, 60])
def test_a_landed_partition_is_requested_at_the_first_evaluation_after_the_next_tick(minutes: int) -> None:
    """60 is Dagster's "0 * * * *", the others "*/N * * * *": the first tick is on the hour."""
    with DagsterInstance.ephemeral() as instance:
        ticks = Ticks(instance, minutes)
        assert ticks.requested(0.1 * minutes) == 0
        ticks.land(DAYS[0])
        assert ticks.requested(0.5 * minutes) == 0, "requested before the tick"
        assert ticks.requested(0.9 * minutes) == 0, "requested before the tick"
        assert ticks.requested(1.1 * minutes) == 1, "not requested after the tick"
        assert ticks.requested(1.2 * minutes) == 0, "requested twice for one change"
        assert ticks.requested(2.1 * minutes) == 0, "requested again without a change"


def test_at_most_once_per_interval(ticks: Ticks) -> None:
    assert ticks.requested(1) == 0
    ticks.land(DAYS[0])
    assert ticks.requested(16) == 1
    # The request is handled (the previous evaluation requested it); more links land in the same interval.
    ticks.land(DAYS[1])
    assert ticks.requested(17) == 0
    ticks.land(DAYS[2])
    assert ticks.requested(25) == 0
    assert ticks.requested(29.9) == 0
    assert ticks.requested(31) == 1, "the changes of the interval are not requested after the next tick"
    assert ticks.requested(32) == 0


def test_after_a_quiet_interval_a_change_is_requested_at_once(ticks: Ticks) -> None:
    """The limit is at most once per interval, not a delay: once a tick has passed since the last request,
    the next change is requested at the next evaluation, without waiting for another tick."""
    assert ticks.requested(1) == 0
    ticks.land(DAYS[0])
    assert ticks.requested(16) == 1
    assert ticks.requested(17) == 0
    assert ticks.requested(31) == 0  # a tick passes, nothing changed
    ticks.land(DAYS[1])
    assert ticks.requested(40) == 1


def test_nothing_is_requested_while_a_links_run_is_queued_or_starting(ticks: Ticks) -> None:
    """A history sync queues all its chunks at once (register_mailboxes); one graph at its end, not one per
    interval. The earlier chunk landed, the later one waits in the queue, then runs, then ends."""
    assert ticks.requested(1) == 0
    ticks.land(DAYS[0])
    later_chunk = ticks.queue_links_run(DAYS[1])
    assert ticks.requested(2) == 0
    assert ticks.requested(16) == 0, "requested while a links run is queued"
    ticks.launch(later_chunk)
    assert ticks.requested(17) == 0, "requested while a links run is starting"
    assert ticks.requested(31) == 0, "requested while a links run is starting"
    ticks.execute(later_chunk)
    latest = ticks.instance.get_latest_materialization_event(LINKS)
    assert (latest.run_id, latest.asset_materialization.partition) == (later_chunk.run_id, MAILBOX)
    assert ticks.instance.get_run_by_id(later_chunk.run_id).tags[FIRST_DAY_TAG] == DAYS[1].isoformat()
    assert ticks.requested(32) == 1, "not requested once the links run ended"
    assert ticks.requested(33) == 0


def test_nothing_is_requested_while_a_links_backfill_is_in_progress(ticks: Ticks) -> None:
    """A UI backfill of several mailboxes launches its runs one by one: between them, its mailbox
    partitions not yet written are in progress only through the backfill."""
    assert ticks.requested(1) == 0
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=ticks.defs.resolve_asset_graph(),
        partition_names=MAILBOXES,
        asset_selection=[LINKS],
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=ticks.instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    ticks.instance.add_backfill(backfill)
    ticks.land(DAYS[0], MAILBOXES[0])  # the backfill's first run
    assert ticks.requested(2) == 0
    assert ticks.requested(16) == 0, "requested while a links backfill is in progress"
    ticks.land(DAYS[0], MAILBOXES[1])
    ticks.land(DAYS[0], MAILBOXES[2])
    assert ticks.requested(17) == 0, "requested while the backfill is still in progress"
    ticks.instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_SUCCESS))
    assert ticks.requested(18) == 1, "not requested once the backfill completed"
    assert ticks.requested(19) == 0


def test_nothing_is_requested_while_the_graph_itself_runs(ticks: Ticks) -> None:
    """Links land and a tick passes while the graph's run is queued, then running: no second run beside it."""
    assert ticks.requested(1) == 0
    ticks.land(DAYS[0])
    assert ticks.requested(16) == 1
    graph_run = ticks.queue_graph_run()
    assert ticks.requested(17) == 0
    ticks.land(DAYS[1])
    assert ticks.requested(31) == 0, "requested while entity_graph's run is queued"
    ticks.launch(graph_run)
    ticks.land(DAYS[2])
    assert ticks.requested(46) == 0, "requested while entity_graph's run is starting"


def test_the_graphs_own_materialization_is_no_reason_to_rebuild_it(ticks: Ticks) -> None:
    assert ticks.requested(1) == 0
    ticks.land(DAYS[0])
    assert ticks.requested(16) == 1
    graph_run = ticks.queue_graph_run()
    ticks.launch(graph_run)
    ticks.execute(graph_run)
    assert ticks.requested(17) == 0
    assert ticks.requested(31) == 0
    assert ticks.requested(46) == 0


def test_links_that_land_while_the_graph_builds_are_rebuilt_after_the_next_tick(ticks: Ticks) -> None:
    """The graph run reads entity_links once; a partition that lands after that (a delta sync, the daily
    schedule, a history chunk) is not in the graph it writes, so a later build must follow."""
    assert ticks.requested(1) == 0
    ticks.land(DAYS[0])
    assert ticks.requested(16) == 1
    graph_run = ticks.queue_graph_run()
    ticks.launch(graph_run)
    assert ticks.requested(17) == 0
    ticks.land(DAYS[1])  # while the graph builds
    assert ticks.requested(18) == 0, "requested while entity_graph runs"
    ticks.execute(graph_run)
    assert ticks.requested(19) == 0
    assert ticks.requested(31) == 1, "the links that landed during the build never rebuild the graph"


# -- Through the daemon, on PostgreSQL ----------------------------------------------------------------------

SENSOR = "entity_graph_freshness"
#: A day of the mailbox (3 messages) whose graph passes all four checks: on most single days the WARN check
#: name_merge_share_in_band fails, its band having no minimum count (2001-11-27, the busiest: 0 of 5 merged).
DAY = dt.date(2002, 3, 22)
#: The sensor ticks every 30 s and the 1-minute cron must pass since its last handled evaluation: the graph
#: run is launched within about 90 s of the links landing; the rest is room for a slow machine.
GRAPH_RUN_TIMEOUT_S = 240
FIRST_TICK_TIMEOUT_S = 120

SENSOR_TICKS = """
query SensorTicks($sensor: SensorSelector!) {
  sensorOrError(sensorSelector: $sensor) {
    __typename
    ... on Sensor {
      sensorState {
        status
        ticks(limit: 20) { tickId status timestamp runIds skipReason error { message stack causes { message stack } } }
      }
    }
    ... on SensorNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

GRAPH_RUN = """
query GraphRun($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
      assetSelection { path }
      tags { key value }
    }
  }
  logsForRun(runId: $runId, limit: 5000) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MaterializationEvent { assetKey { path } }
        ... on AssetCheckEvaluationEvent { evaluation { checkName success severity description assetKey { path } } }
      }
    }
  }
}
"""


def _sensor_ticks(server: Server) -> list[dict]:
    """The sensor's ticks, newest first; fails at once on a failed tick, with its error."""
    answer = graphql(
        server,
        SENSOR_TICKS,
        {"sensor": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": SENSOR}},
    )["sensorOrError"]
    if answer["__typename"] != "Sensor":
        pytest.fail(f"sensor {SENSOR}: {answer}", pytrace=False)
    assert answer["sensorState"]["status"] == "RUNNING", f"{SENSOR} is not running by default: {answer}"
    ticks = answer["sensorState"]["ticks"]
    for tick in ticks:
        if tick["status"] == "FAILURE":
            pytest.fail(f"sensor {SENSOR} tick failed:\n{python_error(tick['error'])}", pytrace=False)
    return ticks


def _wait_for_first_tick(server: Server) -> float:
    """Wait until the daemon has evaluated the condition once; returns the seconds waited.

    That first evaluation only records where things stand (``since_last_handled`` resets on it, and
    ``newly_updated`` reads nothing before it): a partition landing before it would never rebuild the graph
    (test_links_that_landed_before_the_first_evaluation_wait_for_the_next_change). So the links run is
    launched only after it, and is then seen as an update by a later tick.
    """
    started = time.monotonic()
    while time.monotonic() - started < FIRST_TICK_TIMEOUT_S:
        server.assert_alive()
        ticks = _sensor_ticks(server)
        if ticks:
            assert not any(t["runIds"] for t in ticks), f"{SENSOR} launched a run before any link landed: {ticks}"
            return time.monotonic() - started
        time.sleep(POLL_S)
    pytest.fail(f"{SENSOR} did not tick within {FIRST_TICK_TIMEOUT_S}s", pytrace=False)


def _wait_for_graph_run(server: Server) -> tuple[str, float]:
    """Wait until the sensor has launched a run; returns its id and the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < GRAPH_RUN_TIMEOUT_S:
        server.assert_alive()
        runs = runs_tagged(server, {"dagster/sensor_name": SENSOR})
        if runs:
            assert len(runs) == 1, f"{SENSOR} launched {len(runs)} runs for one change: {runs}"
            return runs[0]["runId"], time.monotonic() - started
        _sensor_ticks(server)  # fails at once on a failed tick
        time.sleep(POLL_S)
    pytest.fail(
        f"{SENSOR} launched no run within {GRAPH_RUN_TIMEOUT_S}s of the links landing; ticks: {_sensor_ticks(server)}",
        pytrace=False,
    )


@pytest.mark.server
@pytest.mark.postgres
def test_the_daemon_rebuilds_the_graph_after_a_links_partition_lands(
    tmp_path: Path, postgres_database_url: str
) -> None:
    """The order matters: the sensor's first evaluation before the links land (see _wait_for_first_tick),
    then the links run, then at most ~90 s (one 30 s sensor interval after a 1-minute cron tick) until the
    sensor launches entity_graph."""
    started = time.monotonic()

    def phase(what: str) -> None:  # where the time goes, shown with -s or on failure
        print(f"{time.monotonic() - started:6.1f}s {what}")

    env = deployment_env(
        tmp_path,
        postgres_database_url,
        corpus_records({MAILBOX}),
        ATOM_GRAPH_REFRESH_MINUTES="1",
        ATOM_GRAPH_AUTO_REFRESH="true",
    )
    with dagster_dev(env, tmp_path) as server:
        wait_for_location(server)
        phase(f"code location {LOCATION} loaded")
        _wait_for_first_tick(server)
        phase(f"{SENSOR} evaluated once")
        wait_for_mailboxes(server, {MAILBOX})
        phase(f"mailbox {MAILBOX} registered")
        links_run = launch_partition_run(server, MAILBOX, DAY)
        wait_for_run(server, links_run)
        phase(f"mail_to_links run {links_run} succeeded")
        graph_run, waited = _wait_for_graph_run(server)
        phase(f"{SENSOR} launched run {graph_run} after {waited:.1f}s")
        wait_for_status(server, graph_run, "SUCCESS")
        phase(f"entity_graph run {graph_run} succeeded")
        data = graphql(server, GRAPH_RUN, {"runId": graph_run})
        launched = [r["runId"] for r in runs_tagged(server, {"dagster/sensor_name": SENSOR})]
        assert launched == [graph_run], f"{SENSOR} launched more than one run for one change: {launched}"
    phase("every process stopped, port free")

    run, logs = data["runOrError"], data["logsForRun"]
    assert run["__typename"] == "Run" and logs["__typename"] == "EventConnection", data
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags.get("dagster/from_automation_condition") == "true", tags
    assert [key["path"] for key in run["assetSelection"]] == [["entity_graph"]]
    materialized = [e["assetKey"]["path"] for e in logs["events"] if e["__typename"] == "MaterializationEvent"]
    assert materialized == [["entity_graph"]]
    checks = {
        e["evaluation"]["checkName"]: e["evaluation"]
        for e in logs["events"]
        if e["__typename"] == "AssetCheckEvaluationEvent"
    }
    expected_checks = {
        "graph_edges_have_provenance",
        "one_address_per_person",
        "name_merge_share_in_band",
        "graph_not_empty",
    }
    assert set(checks) == expected_checks, f"checks evaluated: {sorted(checks)}"
    failed = {name: c for name, c in checks.items() if not c["success"]}
    assert not failed, f"entity_graph checks failed in {graph_run}: {failed}"

    engine = sa.create_engine(env["ATOM_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            edges = conn.execute(sa.text("select count(*) from graph_edges")).scalar_one()
            provenance = conn.execute(
                sa.text(
                    "select p.mailbox, p.message_id, m.day from graph_edge_messages p "
                    "left join messages m on m.mailbox = p.mailbox and m.message_id = p.message_id"
                )
            ).all()
            day_messages = set(
                conn.execute(
                    sa.text("select message_id from messages where mailbox = :mailbox and day = :day"),
                    {"mailbox": MAILBOX, "day": DAY},
                ).scalars()
            )
    finally:
        engine.dispose()
    assert edges > 0, "the sensor's run wrote no graph_edges"
    assert provenance, "no graph_edge_messages behind the edges"
    assert day_messages, f"the links run stored no message of {MAILBOX} on {DAY}"
    assert {(mailbox, day) for mailbox, _, day in provenance} == {(MAILBOX, DAY)}, provenance
    assert {message_id for _, message_id, _ in provenance} <= day_messages
