"""Stuck and killed runs recover, on the real deployment, and leave exactly the rows of a clean run.

Protects against production bugs #3 (jobs "pending" for ever after a worker restart), #4 (housekeeping that
crashed with zero jobs) and #5 (failure paths never exercised). What we found, and what these tests prove:

- Dagster's ``DefaultRunLauncher`` says ``supports_check_run_worker_health = False``: run monitoring never
  checks a STARTED run's worker. If only the run worker's process tree dies, the code server that spawned it
  notices within a second and fails the run itself. If the code server dies with it (a machine restart, a
  killed daemon whose managed code server ran the runs), the run stays STARTED for ever, monitoring ticking
  on (seen under `dagster dev`: STARTED through 60 s of 5 s polls; ``test_default_launcher_leaves_a_dead_worker_started`` pins it).
  ``atom_pipelines.deployment.run_launcher.LocalRunLauncher`` (configured in dagster.yaml) adds the check by pid.
- A killed extraction step never frees its ``openai`` pool slot: two killed runs would stop every later
  extraction. dagster.yaml's ``run_monitoring.free_slots_after_run_end_seconds`` frees them.

``test_killed_and_stuck_runs_recover_with_the_clean_rows`` runs one production-like deployment: the repo's
dagster.yaml (PostgreSQL instance, run queue, the launcher, retries that skip step failures) with shorter
monitoring intervals, ``dagster-webserver`` and ``dagster-daemon`` as separate process groups (the daemon's
managed code server runs the runs), and LLM extraction against the OpenAI-compatible test server, slowed
down so that a kill lands while a partition's messages are stored and its extraction is in flight:

1. zero runs: the daemon's monitoring and queue tick without an error;
2. a run worker and its step processes are SIGKILLed mid-partition (the code server survives): the run is
   failed within a second (by the code server or by monitoring through the launcher, whichever looks
   first), and re-executing it from failure (``launchRunReexecution``, FROM_FAILURE) succeeds;
   the killed run's pool slot is freed; a run failed by a blocking check at the same time is not retried;
3. the whole daemon group (daemon, code server, run worker, steps) is SIGKILLed mid-partition, as a dying
   machine takes them: the run stays STARTED; runs launched meanwhile stay QUEUED; a new daemon fails the
   dead run within one monitoring poll (several live runs beside it are left alone), retries it
   automatically, and launches the queued runs;
4. every table of the store equals what an in-process run of the same partitions writes into a fresh
   database (no row duplicated, none lost).

Why the first kill takes the step processes too: a machine or container that dies takes every process;
killing only the worker's pid would leave its step subprocess running on, unsupervised (a multiprocessing
child does not die with its parent), which is not what a dead machine looks like. The second kill takes
the code server too, which is what only monitoring can notice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
import yaml
from dagster import DagsterInstance, instance_for_test
from dagster._core.events import EngineEventData
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test, create_test_daemon_workspace_context
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

from atom_pipelines.deployment.run_launcher import (
    BOOT_TIME_SLACK_S,
    RUN_WORKER_MACHINE_TAG,
    LocalRunLauncher,
    Machine,
    worker_gone_reason,
)
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.partitions import CHAIN
from atom_pipelines.store.schema import metadata as store_metadata
from atom_pipelines_tests import conftest
from atom_pipelines_tests.conftest import corpus_records
from atom_pipelines_tests.dagster_dev import (
    POLL_S,
    Daemon,
    Server,
    daemon_statuses,
    dagster_daemon,
    dagster_webserver,
    deployment_env,
    graphql,
    group_members,
    launch_partition_run,
    reexecute_from_failure,
    run_messages,
    run_status,
    runs_tagged,
    wait_for_location,
    wait_for_mailboxes,
    wait_for_status,
)
from atom_pipelines_tests.helpers import materialize_days, resources
from atom_pipelines_tests.servers.openai_server import Behaviour, OpenAICompatibleServer

LAUNCHER = {"module": "atom_pipelines.deployment.run_launcher", "class": "LocalRunLauncher"}
LLM_CHAIN = "openai:gpt-4o-mini,heuristic"
LLM_KEY = "sk-test-key"
#: The test's monitoring poll and slot release (production: dagster.yaml's values).
POLL_INTERVAL_S = 5
FREE_SLOTS_AFTER_S = 5
#: How long each in-flight extraction request waits: the kill lands well inside it, so no answer (and no
#: cache entry) of a killed run exists, and the re-executed run's rows must equal a clean run's exactly.
SLOW_LLM_MS = 8_000
#: Dagster's retry daemon consumes run failures every 5 s (DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS).
RETRY_DAEMON_BOUND_S = 30
QUEUE_HOLD_S = 6  # longer than a dequeue interval: a daemon, if any, would have launched them
DAEMON_BACK_BOUND_S = 90  # a fresh daemon loads its code server first (~10 s on 2 busy cores)

KILLED = ("kevin.hyatt@enron.com", dt.date(2001, 11, 27))  # 5 messages; its worker tree is SIGKILLed
STUCK = ("daren.farmer@enron.com", dt.date(2001, 11, 27))  # 5 messages; dies with the whole daemon group
BAD = ("steven.harris@enron.com", dt.date(2001, 12, 31))  # 7 messages and one record without an id
QUEUED = [
    ("steven.harris@enron.com", dt.date(2001, 12, 27)),
    ("kevin.hyatt@enron.com", dt.date(2002, 3, 22)),
    ("daren.farmer@enron.com", dt.date(2001, 6, 8)),
]
MAILBOXES = {KILLED[0], STUCK[0], BAD[0]}
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
#: Columns that say how long something took, not what was found.
# When it happened, not what: a latency, when a partition's quiet counts were recorded (the quiet
# baseline's clock), and which run recorded a mailbox-day's progress and when (the clean run's ids differ).
# Every other column of every row must equal a clean run's: a mailbox-day's status, rows and detail too.
VOLATILE_COLUMNS = {
    "extraction_outcomes": {"latency_ms"},
    "model_quiet_counts": {"recorded_at"},
    "mailbox_days": {"run_id", "root_run_id", "recorded_at"},
}
NOT_RETRIED_MESSAGE = "Not retrying run since it failed due to an asset or op failure"
WORKER_PID = re.compile(r"^Started process for run \(pid: (\d+)\)\.$")

POOL_SLOTS = """
query PoolSlots($pool: String!) {
  instance { concurrencyLimit(concurrencyKey: $pool) { claimedSlots { runId stepKey } } }
}
"""

log = logging.getLogger(__name__)


# -- The launcher's worker check, in process: fast, every edge ------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    """A live child process standing in for a run worker."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def _dead_pid() -> int:
    """The pid of a child that has exited and been reaped (no process has it now)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _zombie(process: subprocess.Popen) -> int:
    """Kill ``process`` without reaping it, and wait until the kernel shows it as a zombie."""
    process.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if psutil.Process(process.pid).status() == psutil.STATUS_ZOMBIE:
            return process.pid
        time.sleep(0.02)
    raise AssertionError(f"pid {process.pid} never became a zombie")


def test_worker_gone_reason_sees_exited_zombie_and_reused_pids(sleeper: subprocess.Popen) -> None:
    now = time.time()
    assert worker_gone_reason(sleeper.pid, reported_at=now) is None
    # Reported a second after it started (the worker reports itself once it runs): the same process.
    assert worker_gone_reason(sleeper.pid, reported_at=psutil.Process(sleeper.pid).create_time() + 1) is None
    # The same live process, reported an hour before it started: its pid was reused by another process.
    assert "now belongs to a process started" in worker_gone_reason(sleeper.pid, reported_at=now - 3600)
    dead = _dead_pid()
    assert worker_gone_reason(dead, reported_at=now) == f"no process has pid {dead}"
    zombie = _zombie(sleeper)
    assert worker_gone_reason(zombie, reported_at=now) == f"pid {zombie} has exited (status zombie, not reaped yet)"


def test_a_killed_worker_is_gone_once_killed_and_not_before() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    reported_at = time.time()
    try:
        assert worker_gone_reason(process.pid, reported_at) is None
        process.kill()
        # SIGKILL is delivered asynchronously: the process may run on for a moment, then it is a zombie
        # until reaped. Gone from the moment it died, and never alive again.
        deadline = time.monotonic() + 10
        while (reason := worker_gone_reason(process.pid, reported_at)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reason == f"pid {process.pid} has exited (status zombie, not reaped yet)"
    finally:
        process.wait()
    assert worker_gone_reason(process.pid, reported_at) == f"no process has pid {process.pid}"


def _first_version_tag(machine: Machine) -> str:
    """The tag as the launcher wrote it before boot times: the kernel's boot id instead."""
    fields = {"boot_id": "6f1c2a9e-0000-4000-8000-000000000000", "hostname": machine.hostname}
    return json.dumps({**fields, "pid_namespace": machine.pid_namespace}, sort_keys=True)


def test_the_machine_tag_says_this_boot_and_reads_the_first_version() -> None:
    here = Machine.current()
    assert here.boot_time == psutil.boot_time() and here.hostname == socket.gethostname()
    if sys.platform.startswith("linux"):
        assert here.pid_namespace == os.readlink("/proc/self/ns/pid")
    assert Machine.from_tag(here.to_tag()) == here
    assert here.reboot_reason(here) is None
    if sys.platform.startswith("linux"):
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as source:
            assert here.linux_boot_id == source.read().strip() != ""
        # The boot id decides: the same boot whatever the boot time says (a clock stepped, a machine paused
        # for ten minutes), another boot even at the same boot time.
        paused = dataclasses.replace(here, boot_time=here.boot_time - 600)
        assert here.reboot_reason(paused) is None
        other_boot = dataclasses.replace(here, linux_boot_id="6f1c2a9e-0000-4000-8000-000000000000")
        assert "has restarted since the run was launched" in here.reboot_reason(other_boot)
    # Without a boot id (another platform, an older tag) the boot time decides: it moves with a wall-clock
    # step, so a minute is the same boot, an hour earlier is not.
    stepped = Machine(here.hostname, here.pid_namespace, here.boot_time - BOOT_TIME_SLACK_S)
    assert here.reboot_reason(stepped) is None
    earlier = Machine(here.hostname, here.pid_namespace, here.boot_time - 3600)
    assert "has restarted since the run was launched" in here.reboot_reason(earlier)
    # The first version's tag (boot_id, no boot_time) still reads; its runs are checked by pid alone.
    legacy = Machine.from_tag(_first_version_tag(here))
    assert legacy == Machine(here.hostname, here.pid_namespace, None)
    assert here.reboot_reason(legacy) is None


def _started_run(instance: DagsterInstance, pid: int | None, machine: Machine | str | None) -> str:
    """A STARTED run as the launcher and Dagster's run worker leave it: the machine tag set at launch (a
    Machine, or the tag's text as an older launcher wrote it), and the worker's "Started process for run"
    engine event (worded and shaped as dagster/_grpc/impl.py does)."""
    tag = machine.to_tag() if isinstance(machine, Machine) else machine
    tags = {RUN_WORKER_MACHINE_TAG: tag} if tag else {}
    run = create_run_for_test(instance, job_name="mail_to_links", status=DagsterRunStatus.STARTED, tags=tags)
    if pid is not None:
        instance.report_engine_event(f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid))
    return run.run_id


def _monitor_once(instance: DagsterInstance) -> list:
    """One iteration of Dagster's run monitoring daemon; returns what it yielded (None per healthy check,
    an error otherwise)."""
    with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as context:
        return list(execute_run_monitoring_iteration(context, log))


def _monitoring_instance(**overrides: object):
    return instance_for_test(
        overrides={
            "run_monitoring": {"enabled": True, "poll_interval_seconds": 1, "max_resume_run_attempts": 0},
            **overrides,
        }
    )


def test_run_monitoring_with_zero_one_and_many_runs(sleeper: subprocess.Popen) -> None:
    """Bug #4: housekeeping tested at its edges. Zero runs: nothing to do, no error. One run whose worker is
    gone: failed, saying why. Many: only the runs whose worker is provably gone are failed."""
    here = Machine.current()
    with _monitoring_instance(run_launcher=LAUNCHER) as instance:
        assert isinstance(instance.run_launcher, LocalRunLauncher)
        assert _monitor_once(instance) == []  # zero runs

        dead_pid = _dead_pid()
        one = _started_run(instance, dead_pid, here)
        assert _monitor_once(instance) == [None]
        failed = instance.get_run_by_id(one)
        assert failed.status == DagsterRunStatus.FAILURE
        failure = instance.all_logs(one)[-1].message
        assert f"run worker (pid {dead_pid}) is gone: no process has pid {dead_pid}" in failure

        zombie_process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        try:
            many = {
                "alive": (_started_run(instance, sleeper.pid, here), DagsterRunStatus.STARTED),
                "exited": (_started_run(instance, _dead_pid(), here), DagsterRunStatus.FAILURE),
                "zombie": (_started_run(instance, _zombie(zombie_process), here), DagsterRunStatus.FAILURE),
                # The machine rebooted since the launch: whatever holds that pid now is not the worker.
                "rebooted": (
                    _started_run(
                        instance, sleeper.pid, Machine(here.hostname, here.pid_namespace, here.boot_time - 600)
                    ),
                    DagsterRunStatus.FAILURE,
                ),
                # The same boot, its boot time moved by a clock step or a pause (the CI machine moved 10 s):
                # the boot id says it is this boot, and the worker is alive.
                "clock stepped": (
                    _started_run(instance, sleeper.pid, dataclasses.replace(here, boot_time=here.boot_time - 600)),
                    DagsterRunStatus.STARTED,
                ),
                # A tag of the first version (boot_id, no boot time): still checked, by pid.
                "first-version tag, alive": (
                    _started_run(instance, sleeper.pid, _first_version_tag(here)),
                    DagsterRunStatus.STARTED,
                ),
                "first-version tag, exited": (
                    _started_run(instance, _dead_pid(), _first_version_tag(here)),
                    DagsterRunStatus.FAILURE,
                ),
                # Launched from another machine, or not by this launcher (no tag): not checkable, left alone.
                "elsewhere": (
                    _started_run(instance, dead_pid, Machine("other-host", here.pid_namespace, here.boot_time)),
                    DagsterRunStatus.STARTED,
                ),
                "untagged": (_started_run(instance, dead_pid, None), DagsterRunStatus.STARTED),
            }
            assert _monitor_once(instance) == [None] * len(many)
        finally:
            zombie_process.wait()
        statuses = {name: instance.get_run_by_id(run_id).status for name, (run_id, _) in many.items()}
        assert statuses == {name: expected for name, (_, expected) in many.items()}


def test_default_launcher_leaves_a_dead_worker_started() -> None:
    """Why the launcher exists: under Dagster's own launcher, monitoring never looks at the worker."""
    with _monitoring_instance() as instance:
        assert not instance.run_launcher.supports_check_run_worker_health
        run_id = _started_run(instance, _dead_pid(), Machine.current())
        assert _monitor_once(instance) == [None]
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED


# -- The deployment -------------------------------------------------------------------------------------------


@pytest.fixture
def clean_database_url() -> Iterator[str]:
    """A second fresh PostgreSQL database, for the clean run the recovered store is compared with."""
    with conftest.fresh_postgres_database("atom_test_clean") as url:
        yield url


def _export_records() -> list[dict]:
    """The three mailboxes, plus a record of BAD's day without an id (quarantined, so BAD's check fails)."""
    records = corpus_records(MAILBOXES)
    template = next(
        r
        for r in records
        if r["mailbox"] == BAD[0]
        and dt.datetime.fromisoformat(r["receivedDateTime"]).astimezone(dt.timezone.utc).date() == BAD[1]
    )
    return [*records, {k: v for k, v in template.items() if k != "id"}]


def _shorten_monitoring(dagster_home: Path) -> dict:
    """Check the copied production dagster.yaml has what this test relies on, and shorten its intervals."""
    path = dagster_home / "dagster.yaml"
    settings = yaml.safe_load(path.read_text())
    assert settings["run_launcher"] == LAUNCHER, "dagster.yaml does not configure the pid-checking launcher"
    monitoring, retries = settings["run_monitoring"], settings["run_retries"]
    assert monitoring["enabled"] and monitoring["max_resume_run_attempts"] == 0
    assert monitoring["free_slots_after_run_end_seconds"] > 0, "killed steps would keep their pool slots"
    assert retries["enabled"] and retries["max_retries"] >= 1 and retries["retry_on_asset_or_op_failure"] is False
    monitoring["poll_interval_seconds"] = POLL_INTERVAL_S
    monitoring["free_slots_after_run_end_seconds"] = FREE_SLOTS_AFTER_S
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return settings


def _process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]


def _worker_pid(server: Server, run_id: str) -> int:
    for message in run_messages(server, run_id):
        if match := WORKER_PID.match(message):
            return int(match.group(1))
    pytest.fail(f"run {run_id} reported no worker pid", pytrace=False)


def _wait_for_llm_requests(llm: OpenAICompatibleServer, more_than: int, server: Server, run_id: str) -> None:
    deadline = time.monotonic() + 120
    while llm.requests <= more_than:
        if time.monotonic() > deadline or run_status(server, run_id) in ("SUCCESS", "FAILURE", "CANCELED"):
            pytest.fail(f"run {run_id} never asked the LLM (status {run_status(server, run_id)})", pytrace=False)
        time.sleep(0.2)


def _partition_counts(database_url: str, table: str, mailbox: str, day: dt.date) -> int:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            query = sa.text(f"select count(*) from {table} where mailbox = :m and day = :d")  # noqa: S608 - our names
            return conn.execute(query, {"m": mailbox, "d": day}).scalar_one()
    finally:
        engine.dispose()


def _day_progress(database_url: str, mailbox: str, day: dt.date) -> set[tuple[str, str, str]]:
    """(asset, status, root run) of one mailbox-day in the store's progress (``mailbox_days``)."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            query = sa.text("select asset, status, root_run_id from mailbox_days where mailbox = :m and day = :d")
            return {tuple(row) for row in conn.execute(query, {"m": mailbox, "d": day})}
    finally:
        engine.dispose()


def _claimed_slots(server: Server, pool: str = "openai") -> set[str]:
    limit = graphql(server, POOL_SLOTS, {"pool": pool})["instance"]["concurrencyLimit"]
    return {slot["runId"] for slot in limit["claimedSlots"]}


def _wait(what: str, condition, timeout_s: float, server: Server) -> float:  # noqa: ANN001 - a callable
    started = time.monotonic()
    while not condition():
        server.assert_alive()
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"{what}: not within {timeout_s}s", pytrace=False)
        time.sleep(POLL_S)
    return time.monotonic() - started


def _assert_daemons_healthy(server: Server, daemon: Daemon) -> None:
    """Every required daemon (queue, monitoring, sensors, retries...) heartbeats without errors, and the
    daemon's log has no error."""
    statuses = daemon_statuses(server)
    for name in ("QUEUED_RUN_COORDINATOR", "MONITORING", "EVENT_LOG_CONSUMER"):
        assert statuses[name]["required"], f"{name} daemon not running: {statuses[name]}"
    problems = {
        name: status
        for name, status in statuses.items()
        if status["required"] and (not status["healthy"] or status["lastHeartbeatErrors"])
    }
    assert not problems, f"daemons unhealthy or failing: {problems}"
    errors = [
        line
        for line in daemon.log_path.read_text(errors="replace").splitlines()
        if " - ERROR - " in line or "Traceback" in line
    ]
    assert not errors, f"errors in {daemon.log_path.name}: {errors}"


def _hashable(value: object) -> object:
    """JSON columns (recipient lists) come back as lists and dicts."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _store_rows(database_url: str) -> dict[str, Counter]:
    """Every table of the store, as a multiset of rows (volatile columns left out)."""
    engine = sa.create_engine(database_url)
    try:
        rows = {}
        with engine.connect() as conn:
            for table in store_metadata.sorted_tables:
                columns = [c for c in table.columns if c.name not in VOLATILE_COLUMNS.get(table.name, set())]
                rows[table.name] = Counter(tuple(map(_hashable, r)) for r in conn.execute(sa.select(*columns)))
        return rows
    finally:
        engine.dispose()


def _clean_rows(export_dir: Path, database_url: str, llm: OpenAICompatibleServer) -> dict[str, Counter]:
    """What the same partitions write when nothing goes wrong: in process, into a fresh database, through
    the same LLM server, in the deployment's order."""
    extractor = EntityExtractor(chain=LLM_CHAIN, openai_base_url=llm.base_url, max_concurrency=4)
    run_resources = resources(export_dir, database_url, extractor)
    with instance_for_test() as instance:
        for mailbox, day in [KILLED, BAD, STUCK, *QUEUED]:
            materialize_days(instance, run_resources, mailbox, day, raise_on_error=(mailbox, day) != BAD)
    return _store_rows(database_url)


@pytest.mark.server
@pytest.mark.postgres
def test_killed_and_stuck_runs_recover_with_the_clean_rows(
    tmp_path: Path,
    postgres_database_url: str,
    clean_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}

    def phase(what: str) -> None:  # where the time goes, shown with -s or on failure
        print(f"{time.monotonic() - started:6.1f}s {what}")

    with OpenAICompatibleServer(accepted_keys={LLM_KEY}) as llm:
        env = deployment_env(
            tmp_path,
            postgres_database_url,
            _export_records(),
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY=LLM_KEY,
            ATOM_LLM_CHAIN=LLM_CHAIN,
        )
        _shorten_monitoring(Path(env["DAGSTER_HOME"]))
        store_url = env["ATOM_DATABASE_URL"]

        with dagster_webserver(env, tmp_path) as web:
            with dagster_daemon(env, tmp_path, "dagster_daemon_1.log") as daemon:
                wait_for_location(web)
                wait_for_mailboxes(web, MAILBOXES)
                phase("location loaded, mailboxes registered by the daemon's sensor")

                # 1. Zero runs: the monitoring and queue daemons have ticked (at start, then every poll).
                idle = 2 * POLL_INTERVAL_S + 1 - (time.monotonic() - daemon.started_at)
                if idle > 0:
                    time.sleep(idle)
                assert runs_tagged(web, {}) == []
                _assert_daemons_healthy(web, daemon)
                phase("zero runs: daemons healthy, no error in the daemon's log")

                # 2. A run worker's process tree dies mid-partition; its code server survives.
                llm.set_default(Behaviour("latency", latency_ms=SLOW_LLM_MS))
                before = llm.requests
                # max_retries 0: this run is re-executed by hand (the STUCK run below takes the automatic path).
                killed = launch_partition_run(web, *KILLED, tags={"dagster/max_retries": "0"})
                bad = launch_partition_run(web, *BAD)
                _wait_for_llm_requests(llm, before, web, killed)
                assert run_status(web, killed) == "STARTED"
                worker = _worker_pid(web, killed)
                assert any(m.split()[0] == str(worker) for m in group_members(daemon.process.pid)), (
                    f"worker {worker} is not a process of the daemon's group"
                )
                tree = _process_tree(worker)
                for pid in tree:
                    os.kill(pid, signal.SIGKILL)
                llm.set_default(Behaviour("deterministic"))
                phase(f"SIGKILLed run worker {worker} and its {len(tree) - 1} descendants, extraction in flight")
                # Mid-partition: the messages are stored, no extraction result is.
                assert _partition_counts(store_url, "messages", *KILLED) > 0
                assert _partition_counts(store_url, "extraction_outcomes", *KILLED) == 0
                timings["worker killed -> run FAILURE"] = wait_for_status(web, killed, "FAILURE", timeout_s=60)
                phase(f"killed run failed {timings['worker killed -> run FAILURE']:.1f}s after the kill")
                # Whichever notices first: the code server that spawned the worker (it polls its children every
                # 0.5 s) or run monitoring through the launcher (seen both on 2 busy cores).
                messages = run_messages(web, killed)
                detectors = {
                    "code server": any("terminated by signal 9" in m for m in messages),
                    "run monitoring": any(f"run worker (pid {worker}) is gone" in m for m in messages),
                }
                assert any(detectors.values()), messages[-5:]
                phase(f"failed by the {' and '.join(name for name, seen in detectors.items() if seen)}")
                # The killed step still holds its openai pool slot (checked at once: the slot is freed no sooner
                # than FREE_SLOTS_AFTER_S after the run ended), and monitoring frees it.
                assert killed in _claimed_slots(web), "the killed extraction step held no pool slot"
                reexecuted = reexecute_from_failure(web, killed)
                timings["killed run's pool slot freed"] = _wait(
                    "pool slot of the killed run freed",
                    lambda: killed not in _claimed_slots(web),
                    FREE_SLOTS_AFTER_S + 2 * POLL_INTERVAL_S + 10,
                    web,
                )
                wait_for_status(web, reexecuted, "SUCCESS")
                phase(f"re-executed from failure: {reexecuted} succeeded")

                # A run failed by a step (a blocking check on a quarantined record) is not retried.
                wait_for_status(web, bad, "FAILURE")
                _wait(
                    "retry daemon considered the check failure",
                    lambda: any(NOT_RETRIED_MESSAGE in m for m in run_messages(web, bad)),
                    RETRY_DAEMON_BOUND_S,
                    web,
                )
                assert runs_tagged(web, {"dagster/parent_run_id": bad}) == []
                phase("check failure: the retry daemon declined it, no retry run")

                # 3. The machine dies: daemon, its code server, the run worker and its steps, all at once.
                llm.set_default(Behaviour("latency", latency_ms=SLOW_LLM_MS))
                before = llm.requests
                stuck = launch_partition_run(web, *STUCK)
                _wait_for_llm_requests(llm, before, web, stuck)
                assert run_status(web, stuck) == "STARTED"
                stuck_worker = _worker_pid(web, stuck)
                daemon.kill()
                died_at = time.monotonic()
                llm.set_default(Behaviour("deterministic"))
                phase(f"SIGKILLed the daemon's whole process group (run worker {stuck_worker})")
            assert worker_gone_reason(stuck_worker, reported_at=time.time()) is not None, "the run worker survived"

            # In-process executor: these runs are here to be queued and monitored (monitoring checks the run
            # worker, not its steps); one process each instead of four keeps 4 concurrent runs cheap on 2 cores.
            queued = [launch_partition_run(web, mailbox, day, run_config=IN_PROCESS) for mailbox, day in QUEUED]
            time.sleep(QUEUE_HOLD_S)
            assert {run_id: run_status(web, run_id) for run_id in queued} == dict.fromkeys(queued, "QUEUED")
            assert run_status(web, stuck) == "STARTED", "nothing should be left to notice the dead worker"
            phase(f"no daemon: {len(queued)} runs stay QUEUED, the dead run stays STARTED")

            with dagster_daemon(env, tmp_path, "dagster_daemon_2.log") as daemon:
                back = time.time()
                wait_for_status(web, stuck, "FAILURE", timeout_s=DAEMON_BACK_BOUND_S)
                failed = time.time()
                timings["daemon back -> dead run FAILURE"] = failed - back
                timings["machine died -> dead run FAILURE"] = time.monotonic() - died_at
                phase(f"daemon back: dead run failed after {failed - back:.1f}s")
                messages = run_messages(web, stuck)
                assert any(f"run worker (pid {stuck_worker}) is gone" in m for m in messages), messages[-5:]
                # Within one poll of the new monitoring daemon's first iteration, plus slack. A daemon writes its
                # first heartbeat at its first iteration, then every 30 s, so this is that first iteration.
                first_tick = daemon_statuses(web)["MONITORING"]["lastHeartbeatTime"]
                assert first_tick and first_tick > back, "the new monitoring daemon has not ticked"
                timings["monitoring's first tick -> dead run FAILURE"] = failed - first_tick
                assert failed - first_tick <= POLL_INTERVAL_S + 5

                for run_id in queued:
                    wait_for_status(web, run_id, {"STARTING", "STARTED", "SUCCESS"}, timeout_s=DAEMON_BACK_BOUND_S)
                timings["daemon back -> queued runs launched"] = time.time() - back
                _wait(
                    "automatic retry of the dead run",
                    lambda: bool(runs_tagged(web, {"dagster/parent_run_id": stuck})),
                    RETRY_DAEMON_BOUND_S,
                    web,
                )
                retries = runs_tagged(web, {"dagster/parent_run_id": stuck})
                assert len(retries) == 1 and retries[0]["tags"].get("dagster/retry_number") == "1", retries
                # Many runs monitored at once (the retry and the queued runs): none of the live ones is failed.
                for run_id in [*queued, retries[0]["runId"]]:
                    wait_for_status(web, run_id, "SUCCESS")
                phase("queued runs and the automatic retry succeeded")
                _wait(
                    "every pool slot of a finished run freed",
                    lambda: not _claimed_slots(web),
                    FREE_SLOTS_AFTER_S + 2 * POLL_INTERVAL_S + 10,
                    web,
                )
                _assert_daemons_healthy(web, daemon)
                # The hand re-execution is the killed run's only child: run_retries left it alone (max_retries 0).
                children = runs_tagged(web, {"dagster/parent_run_id": killed})
                assert [(r["runId"], r["status"]) for r in children] == [(reexecuted, "SUCCESS")], children
        phase("every process stopped")

        # 4. Exactly the rows of a clean run, in every table of the store.
        monkeypatch.setenv("OPENAI_API_KEY", LLM_KEY)
        clean = _clean_rows(Path(env["ATOM_MAIL_EXPORT_DIR"]), clean_database_url, llm)
        phase("clean run of the same partitions written in process")
    recovered = _store_rows(store_url)
    for partition in [KILLED, STUCK]:
        for table in ("messages", "extraction_outcomes", "entities", "entity_links", "mailbox_days"):
            assert _partition_counts(clean_database_url, table, *partition) > 0, f"clean {table} of {partition} empty"
        # The killed and the dead run's days are done for every asset of the chain, by the run they descend
        # from (the re-execution and the automatic retry record their root run).
        roots = {KILLED: killed, STUCK: stuck}
        assert _day_progress(store_url, *partition) == {(asset, "done", roots[partition]) for asset in CHAIN}
    differences = {
        table: {"missing": clean[table] - recovered[table], "extra": recovered[table] - clean[table]}
        for table in clean
        if clean[table] != recovered[table]
    }
    assert not differences, f"the recovered store differs from a clean run's: {differences}"
    outcomes = store_metadata.tables["extraction_outcomes"]
    cache_hit = [c.name for c in outcomes.columns if c.name not in VOLATILE_COLUMNS["extraction_outcomes"]].index(
        "cache_hit"
    )
    assert not any(row[cache_hit] for row in recovered["extraction_outcomes"]), "a killed run's answer was served"
    print({name: round(seconds, 1) for name, seconds in timings.items()})
