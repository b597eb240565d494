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
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from atom_pipelines.partitions import DATE_DIMENSION, MAILBOX_DIMENSION, partition_key
from atom_pipelines_tests.conftest import REPO_ROOT, corpus_records, write_export

pytestmark = [pytest.mark.server, pytest.mark.postgres]

LOCATION = "atom_pipelines"
REPOSITORY = "__repository__"  # the repository a Definitions object becomes
JOB = "mail_to_links"
SENSOR = "register_mailboxes"
PARTITIONED_ASSET = "outlook_messages"
MAILBOX = "kevin.hyatt@enron.com"
DAY = dt.date(2001, 11, 27)  # the mailbox's busiest UTC day in the corpus (5 messages)

LOAD_TIMEOUT_S = 120
SENSOR_TIMEOUT_S = 90
RUN_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30
POLL_S = 0.5
LOG_TAIL_CHARS = 6_000

LOCATION_QUERY = """
query Location {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message stack causes { message stack } }
        }
      }
    }
    ... on PythonError { message stack }
  }
}
"""

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

LAUNCH_RUN = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PresetNotFoundError { message }
    ... on NoModeProvidedError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
  }
}
"""

RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

RUN_ERRORS = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId, limit: 1000) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ErrorEvent { error { message stack causes { message stack } } }
      }
    }
    ... on PythonError { message }
  }
}
"""


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log_path: Path

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- last {LOG_TAIL_CHARS} chars of {self.log_path} ---\n{text[-LOG_TAIL_CHARS:]}"

    def assert_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"dagster dev exited with code {code}\n{self.log_tail()}", pytrace=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _graphql(server: Server, query: str, variables: dict | None = None) -> dict:
    response = requests.post(
        f"http://127.0.0.1:{server.port}/graphql",
        json={"query": query, "variables": variables or {}},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        pytest.fail(f"GraphQL errors: {body['errors']}\n{server.log_tail()}", pytrace=False)
    return body["data"]


def _python_error(error: dict) -> str:
    text = f"{error['message']}{''.join(error.get('stack') or [])}"
    for cause in error.get("causes") or []:
        text += f"\nCaused by: {cause['message']}{''.join(cause.get('stack') or [])}"
    return text


def _pg_env(database_url: str) -> dict[str, str]:
    url = sa.engine.make_url(database_url)
    return {
        "DAGSTER_PG_USERNAME": url.username or "postgres",
        # Trust auth: no password. dagster.yaml's {env: ...} accepts an empty value (only an unset one fails).
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_DB": url.database,
        "DAGSTER_PG_PORT": str(url.port or 5432),
    }


@pytest.fixture
def server_env(tmp_path: Path, postgres_database_url: str) -> dict[str, str]:
    """The environment of a production-like deployment, pointed at the fresh database and a small export."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    export_dir = write_export(tmp_path / "export", corpus_records({MAILBOX}))
    pipeline_url = (
        sa.engine.make_url(postgres_database_url)
        .set(drivername="postgresql+psycopg2")
        .render_as_string(hide_password=False)
    )
    # Nothing of the caller's deployment may leak in (another DAGSTER_HOME, a real API key, other ATOM_* settings).
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("ATOM_", "DAGSTER_", "OPENAI_"))}
    return {
        **inherited,
        **_pg_env(postgres_database_url),
        "DAGSTER_HOME": str(home),
        "ATOM_DATABASE_URL": pipeline_url,
        "ATOM_MAIL_EXPORT_DIR": str(export_dir),
        "ATOM_END_DATE": "2002-07-01",  # keeps the date dimension (and the UI's partition lists) small
        "ATOM_GRAPH_EXPORT_DIR": str(tmp_path / "graph_exports"),
        "ATOM_LLM_CHAIN": "heuristic",  # no network: without a key the default chain is this anyway
        "PYTHONUNBUFFERED": "1",
    }


def _dagster_command(port: int) -> list[str]:
    # The console script of this venv, as a deployment runs it; `python -m dagster` where there is none.
    script = Path(sys.executable).with_name("dagster")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "dagster"]
    return [*base, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]


def _group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes of a process group, as 'pid cmdline' (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            state, member_pgid = fields[0], int(fields[2])
            if member_pgid == pgid and state != "Z":
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                members.append(f"{entry.name} {cmdline.strip()}")
        except (OSError, ValueError):
            continue  # exited while we looked
    return members


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the whole group (dagster dev forwards it to webserver, daemon, code server, run workers),
    SIGKILL to whatever is left after the timeout."""
    pgid = process.pid  # start_new_session=True: the leader's pid is the group id
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if process.poll() is None or _group_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


@contextmanager
def _dagster_dev(env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    port = _free_port()
    log_path = tmp_path / "dagster_dev.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            _dagster_command(port),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so every process it starts can be stopped together
        )
    server = Server(port=port, process=process, log_path=log_path)
    try:
        yield server
    except BaseException:
        print(server.log_tail())  # shown by pytest with the failure
        raise
    finally:
        _stop(process)
        leftovers = _group_members(process.pid)
        assert not leftovers, f"processes of dagster dev survived the stop: {leftovers}"
        assert not _port_answers(port), f"something still listens on port {port} after the stop"


def _wait_for_location(server: Server) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        server.assert_alive()
        try:
            data = _graphql(server, LOCATION_QUERY)["workspaceOrError"]
        except (requests.ConnectionError, requests.Timeout) as exc:
            last = f"webserver not answering: {type(exc).__name__}"
            time.sleep(POLL_S)
            continue
        if data["__typename"] == "PythonError":
            pytest.fail(f"workspace failed to load: {_python_error(data)}", pytrace=False)
        entry = next((e for e in data["locationEntries"] if e["name"] == LOCATION), None)
        if entry is not None:
            loaded = entry["locationOrLoadError"]
            if loaded and loaded["__typename"] == "PythonError":
                pytest.fail(f"code location {LOCATION} failed to load:\n{_python_error(loaded)}", pytrace=False)
            if entry["loadStatus"] == "LOADED" and loaded and loaded["__typename"] == "RepositoryLocation":
                return
        last = str(data)
        time.sleep(POLL_S)
    pytest.fail(f"code location {LOCATION} not loaded within {LOAD_TIMEOUT_S}s; last answer: {last}", pytrace=False)


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
        data = _graphql(
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
                pytest.fail(f"sensor {SENSOR} tick failed:\n{_python_error(tick['error'])}", pytrace=False)
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
    launched = _graphql(
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


def _run_errors(server: Server, run_id: str) -> str:
    logs = _graphql(server, RUN_ERRORS, {"runId": run_id})["logsForRun"]
    if logs["__typename"] != "EventConnection":
        return f"(no events: {logs})"
    lines = []
    for event in logs["events"]:
        if event.get("error") or event.get("level") in ("ERROR", "CRITICAL"):
            line = f"[{event['__typename']} step={event.get('stepKey')}] {event.get('message', '')}"
            if event.get("error"):
                line += f"\n{_python_error(event['error'])}"
            lines.append(line)
    return "\n".join(lines) or "(no error events)"


def _wait_for_run(server: Server, run_id: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = None
    while time.monotonic() < deadline:
        server.assert_alive()
        answer = _graphql(server, RUN_STATUS, {"runId": run_id})["runOrError"]
        if answer["__typename"] != "Run":
            pytest.fail(f"run {run_id}: {answer}", pytrace=False)
        status = answer["status"]
        if status == "SUCCESS":
            return
        if status in ("FAILURE", "CANCELED", "CANCELING"):
            break
        time.sleep(POLL_S)
    else:
        pytest.fail(
            f"run {run_id} still {status} after {RUN_TIMEOUT_S}s:\n{_run_errors(server, run_id)}", pytrace=False
        )
    pytest.fail(f"run {run_id} ended {status}:\n{_run_errors(server, run_id)}", pytrace=False)


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

    with _dagster_dev(server_env, tmp_path) as server:
        _wait_for_location(server)
        phase(f"code location {LOCATION} loaded")
        _wait_for_mailbox_partition(server)
        phase(f"mailbox partition {MAILBOX} registered by the sensor")
        run_id = _launch_partition_run(server)
        _wait_for_run(server, run_id)
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
