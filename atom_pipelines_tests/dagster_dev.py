"""Run the real ``dagster dev`` (webserver, daemon, code server, run workers) against a PostgreSQL instance,
and talk to it through the webserver's GraphQL API the way the UI does.

Shared by the server tests (code location, run recovery, the browser test). Every process started here is
stopped with its whole process group, and a test fails if one survives or the port stays taken.
"""

from __future__ import annotations

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

from atom_pipelines_tests.conftest import REPO_ROOT, write_export

LOCATION = "atom_pipelines"
REPOSITORY = "__repository__"  # the repository a Definitions object becomes
JOB = "mail_to_links"

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def graphql(server: Server, query: str, variables: dict | None = None) -> dict:
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


def python_error(error: dict) -> str:
    text = f"{error['message']}{''.join(error.get('stack') or [])}"
    for cause in error.get("causes") or []:
        text += f"\nCaused by: {cause['message']}{''.join(cause.get('stack') or [])}"
    return text


def pg_env(database_url: str) -> dict[str, str]:
    url = sa.engine.make_url(database_url)
    return {
        "DAGSTER_PG_USERNAME": url.username or "postgres",
        # Trust auth: no password. dagster.yaml's {env: ...} accepts an empty value (only an unset one fails).
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_DB": url.database,
        "DAGSTER_PG_PORT": str(url.port or 5432),
    }


def deployment_env(tmp_path: Path, postgres_database_url: str, records: list[dict], **settings: str) -> dict[str, str]:
    """The environment of a production-like deployment: the repo's dagster.yaml (PostgreSQL instance) in a
    fresh DAGSTER_HOME, the pipeline store in the same database, an export of ``records``; ``settings``
    override or add ATOM_*/OPENAI_* variables."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    export_dir = write_export(tmp_path / "export", records)
    pipeline_url = (
        sa.engine.make_url(postgres_database_url)
        .set(drivername="postgresql+psycopg2")
        .render_as_string(hide_password=False)
    )
    # Nothing of the caller's deployment may leak in (another DAGSTER_HOME, a real API key, other ATOM_* settings).
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("ATOM_", "DAGSTER_", "OPENAI_"))}
    return {
        **inherited,
        **pg_env(postgres_database_url),
        "DAGSTER_HOME": str(home),
        "ATOM_DATABASE_URL": pipeline_url,
        "ATOM_MAIL_EXPORT_DIR": str(export_dir),
        "ATOM_END_DATE": "2002-07-01",  # keeps the date dimension (and the UI's partition lists) small
        "ATOM_GRAPH_EXPORT_DIR": str(tmp_path / "graph_exports"),
        "ATOM_LLM_CHAIN": "heuristic",  # no network: without a key the default chain is this anyway
        # Registering the mailbox would otherwise launch its whole history sync; tests launch what they need.
        "ATOM_HISTORY_SYNC_ON_REGISTER": "false",
        # The graph's own automation would launch entity_graph runs whenever a cron tick falls inside a test:
        # tests that count runs or compare the whole store would see them. test_graph_automation turns it on.
        "ATOM_GRAPH_AUTO_REFRESH": "false",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }


def dagster_command(port: int) -> list[str]:
    # The console script of this venv, as a deployment runs it; `python -m dagster` where there is none.
    script = Path(sys.executable).with_name("dagster")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "dagster"]
    return [*base, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]


def group_members(pgid: int) -> list[str]:
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


def stop_group(process: subprocess.Popen) -> None:
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
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if process.poll() is None or group_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
        # SIGKILL is delivered at once but a member takes a moment to exit (on two loaded cores, more than
        # one poll): wait for the group, not only its leader, before anyone counts survivors.
        deadline = time.monotonic() + 10
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(POLL_S / 5)


@contextmanager
def dagster_dev(env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    log_path = tmp_path / "dagster_dev.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            dagster_command(port),
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
        stop_group(process)
        leftovers = group_members(process.pid)
        assert not leftovers, f"processes of dagster dev survived the stop: {leftovers}"
        assert not port_answers(port), f"something still listens on port {port} after the stop"


def wait_for_location(server: Server) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        server.assert_alive()
        try:
            data = graphql(server, LOCATION_QUERY)["workspaceOrError"]
        except (requests.ConnectionError, requests.Timeout) as exc:
            last = f"webserver not answering: {type(exc).__name__}"
            time.sleep(POLL_S)
            continue
        if data["__typename"] == "PythonError":
            pytest.fail(f"workspace failed to load: {python_error(data)}", pytrace=False)
        entry = next((e for e in data["locationEntries"] if e["name"] == LOCATION), None)
        if entry is not None:
            loaded = entry["locationOrLoadError"]
            if loaded and loaded["__typename"] == "PythonError":
                pytest.fail(f"code location {LOCATION} failed to load:\n{python_error(loaded)}", pytrace=False)
            if entry["loadStatus"] == "LOADED" and loaded and loaded["__typename"] == "RepositoryLocation":
                return
        last = str(data)
        time.sleep(POLL_S)
    pytest.fail(f"code location {LOCATION} not loaded within {LOAD_TIMEOUT_S}s; last answer: {last}", pytrace=False)


def run_errors(server: Server, run_id: str) -> str:
    logs = graphql(server, RUN_ERRORS, {"runId": run_id})["logsForRun"]
    if logs["__typename"] != "EventConnection":
        return f"(no events: {logs})"
    lines = []
    for event in logs["events"]:
        if event.get("error") or event.get("level") in ("ERROR", "CRITICAL"):
            line = f"[{event['__typename']} step={event.get('stepKey')}] {event.get('message', '')}"
            if event.get("error"):
                line += f"\n{python_error(event['error'])}"
            lines.append(line)
    return "\n".join(lines) or "(no error events)"


def wait_for_run(server: Server, run_id: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = None
    while time.monotonic() < deadline:
        server.assert_alive()
        answer = graphql(server, RUN_STATUS, {"runId": run_id})["runOrError"]
        if answer["__typename"] != "Run":
            pytest.fail(f"run {run_id}: {answer}", pytrace=False)
        status = answer["status"]
        if status == "SUCCESS":
            return
        if status in ("FAILURE", "CANCELED", "CANCELING"):
            break
        time.sleep(POLL_S)
    else:
        pytest.fail(f"run {run_id} still {status} after {RUN_TIMEOUT_S}s:\n{run_errors(server, run_id)}", pytrace=False)
    pytest.fail(f"run {run_id} ended {status}:\n{run_errors(server, run_id)}", pytrace=False)


# -- The webserver and the daemon as separate process groups ------------------------------------------------
# `dagster dev` runs both or nothing. A deployment runs them as separate services, each with its own managed
# code server; the daemon's code server is the one that runs the runs (the queue launches them). So stopping
# (or killing) the daemon's group stops its run workers too, while the webserver keeps taking runs.


@dataclass
class Daemon:
    """A ``dagster-daemon run`` process group."""

    process: subprocess.Popen
    log_path: Path
    started_at: float  # time.monotonic() when it was started

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- last {LOG_TAIL_CHARS} chars of {self.log_path} ---\n{text[-LOG_TAIL_CHARS:]}"

    def assert_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"dagster-daemon exited with code {code}\n{self.log_tail()}", pytrace=False)

    def kill(self) -> None:
        """SIGKILL the whole group at once (daemon, its code server, run workers, step processes), as a
        machine or container that dies takes them: nothing gets to clean up or report."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while group_members(self.process.pid) and time.monotonic() < deadline:
            time.sleep(POLL_S / 5)


def console_script(name: str, module: str) -> list[str]:
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


@contextmanager
def process_group(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """Start ``command`` in the repo root as its own process group; stop the whole group on the way out and
    fail if a member survives."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_group(process)
        leftovers = group_members(process.pid)
        assert not leftovers, f"processes of {command[0]} survived the stop: {leftovers}"


@contextmanager
def dagster_webserver(env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    """``dagster-webserver -w workspace.yaml`` alone: the UI and GraphQL, no daemon (runs launched now queue)."""
    port = free_port()
    log_path = tmp_path / "dagster_webserver.log"
    command = [*console_script("dagster-webserver", "dagster_webserver"), "-w", "workspace.yaml"]
    with process_group([*command, "-h", "127.0.0.1", "-p", str(port)], env, log_path) as process:
        server = Server(port=port, process=process, log_path=log_path)
        try:
            yield server
        except BaseException:
            print(server.log_tail())
            raise
    assert not port_answers(port), f"something still listens on port {port} after the stop"


@contextmanager
def dagster_daemon(env: dict[str, str], tmp_path: Path, log_name: str = "dagster_daemon.log") -> Iterator[Daemon]:
    """``dagster-daemon run -w workspace.yaml`` (queue, monitoring, retries, sensors) as its own group; may be
    killed inside the block (``Daemon.kill``) and started again with another block."""
    log_path = tmp_path / log_name
    command = [*console_script("dagster-daemon", "dagster._daemon"), "run", "-w", "workspace.yaml"]
    with process_group(command, env, log_path) as process:
        daemon = Daemon(process=process, log_path=log_path, started_at=time.monotonic())
        try:
            yield daemon
        except BaseException:
            print(daemon.log_tail())
            raise


# -- Runs through GraphQL, as the UI launches, re-executes and watches them ---------------------------------

LAUNCH_RUN_REEXECUTION = """
mutation Reexecute($reexecutionParams: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $reexecutionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on ConflictingExecutionParamsError { message }
    ... on NoModeProvidedError { message }
    ... on PresetNotFoundError { message }
  }
}
"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on PythonError { message }
  }
}
"""

RUN_MESSAGES = """
query RunMessages($runId: ID!) {
  logsForRun(runId: $runId, limit: 5000) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { message timestamp } } }
    ... on PythonError { message }
  }
}
"""

DAEMON_HEALTH = """
query DaemonHealth {
  instance {
    daemonHealth {
      allDaemonStatuses { daemonType required healthy lastHeartbeatTime lastHeartbeatErrors { message } }
    }
  }
}
"""

FINISHED_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


def launch_run(
    server: Server,
    job: str,
    tags: dict[str, str] | None = None,
    run_config: dict | None = None,
    assets: list[str] | None = None,
) -> str:
    """The launchpad's "Launch run" of ``job`` with ``tags`` (no run config: the production executor), or
    with ``assets`` an asset's "Materialize" (``__ASSET_JOB`` with that selection). The run is queued and the
    daemon's run queue launches it (``dagster dev`` runs a daemon too). Returns the run id."""
    selector: dict = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job}
    if assets:
        selector["assetSelection"] = [{"path": [asset]} for asset in assets]
    params = {
        "selector": selector,
        "runConfigData": run_config or {},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    launched = graphql(server, LAUNCH_RUN, {"executionParams": params})["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        pytest.fail(f"launchRun of {job} answered {launched}", pytrace=False)
    return launched["run"]["runId"]


def launch_partition_run(
    server: Server, mailbox: str, day: object, tags: dict[str, str] | None = None, run_config: dict | None = None
) -> str:
    """Launch ``mail_to_links`` for one mailbox-day with the tags the UI's launchpad sets for a date-range
    re-sync of one day (the mailbox's partition, that day as first and last day); returns the run id."""
    from atom_pipelines.tags import FIRST_DAY_TAG, LAST_DAY_TAG

    partition_tags = {"dagster/partition": mailbox, FIRST_DAY_TAG: str(day), LAST_DAY_TAG: str(day)}
    return launch_run(server, JOB, {**partition_tags, **(tags or {})}, run_config)


def reexecute_from_failure(server: Server, run_id: str) -> str:
    """The UI's "Re-execute from failure": the failed steps and everything downstream; returns the new run id."""
    launched = graphql(
        server, LAUNCH_RUN_REEXECUTION, {"reexecutionParams": {"parentRunId": run_id, "strategy": "FROM_FAILURE"}}
    )["launchRunReexecution"]
    if launched["__typename"] != "LaunchRunSuccess":
        pytest.fail(f"launchRunReexecution of {run_id} answered {launched}", pytrace=False)
    return launched["run"]["runId"]


def run_status(server: Server, run_id: str) -> str:
    answer = graphql(server, RUN_STATUS, {"runId": run_id})["runOrError"]
    if answer["__typename"] != "Run":
        pytest.fail(f"run {run_id}: {answer}", pytrace=False)
    return answer["status"]


def wait_for_status(server: Server, run_id: str, wanted: set[str] | str, timeout_s: float = RUN_TIMEOUT_S) -> float:
    """Wait until the run's status is one of ``wanted``; returns the seconds waited. Fails at once if the run
    finishes otherwise, with its error events."""
    wanted = {wanted} if isinstance(wanted, str) else set(wanted)
    started = time.monotonic()
    status = None
    while time.monotonic() - started < timeout_s:
        server.assert_alive()
        status = run_status(server, run_id)
        if status in wanted:
            return time.monotonic() - started
        if status in FINISHED_STATUSES:
            pytest.fail(
                f"run {run_id} ended {status}, waiting for {wanted}:\n{run_errors(server, run_id)}", pytrace=False
            )
        time.sleep(POLL_S)
    pytest.fail(
        f"run {run_id} still {status} after {timeout_s}s, waiting for {wanted}:\n{run_errors(server, run_id)}",
        pytrace=False,
    )


def runs_tagged(server: Server, tags: dict[str, str]) -> list[dict]:
    """Runs carrying every one of ``tags``, as {runId, status, tags: {key: value}}."""
    answer = graphql(server, RUNS, {"filter": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}})[
        "runsOrError"
    ]
    if answer["__typename"] != "Runs":
        pytest.fail(f"runsOrError: {answer}", pytrace=False)
    return [{**run, "tags": {t["key"]: t["value"] for t in run["tags"]}} for run in answer["results"]]


def run_messages(server: Server, run_id: str) -> list[str]:
    """The messages of a run's events (engine events, failures, logs), oldest first."""
    logs = graphql(server, RUN_MESSAGES, {"runId": run_id})["logsForRun"]
    if logs["__typename"] != "EventConnection":
        pytest.fail(f"logsForRun {run_id}: {logs}", pytrace=False)
    return [event["message"] for event in logs["events"] if event.get("message") is not None]


def daemon_statuses(server: Server) -> dict[str, dict]:
    """daemon type -> {required, healthy, lastHeartbeatTime, lastHeartbeatErrors}, as the UI's Daemons tab."""
    statuses = graphql(server, DAEMON_HEALTH)["instance"]["daemonHealth"]["allDaemonStatuses"]
    return {status["daemonType"]: status for status in statuses}


MAILBOX_PARTITION_KEYS = """
query MailboxKeys($asset: AssetKeyInput!) {
  assetNodeOrError(assetKey: $asset) {
    __typename
    ... on AssetNode { partitionKeysByDimension { name partitionKeys } }
  }
}
"""


def wait_for_mailboxes(server: Server, mailboxes: set[str], asset: str = "outlook_messages") -> float:
    """Wait until the daemon's register_mailboxes sensor has added every one of ``mailboxes`` as a partition;
    returns the seconds waited."""
    started = time.monotonic()
    registered: set[str] = set()
    while time.monotonic() - started < SENSOR_TIMEOUT_S:
        server.assert_alive()
        node = graphql(server, MAILBOX_PARTITION_KEYS, {"asset": {"path": [asset]}})["assetNodeOrError"]
        if node["__typename"] == "AssetNode":
            # The mailbox partitions are the asset's one dimension.
            registered = {key for d in node["partitionKeysByDimension"] for key in d["partitionKeys"]}
            if mailboxes <= registered:
                return time.monotonic() - started
        time.sleep(POLL_S)
    pytest.fail(f"mailboxes {sorted(mailboxes - registered)} not registered within {SENSOR_TIMEOUT_S}s", pytrace=False)


# -- Backfills, as the UI's partitions dialog launches them and the daemon carries them out -------------------

#: The backfill daemon ticks every 30 s: one tick to plan the runs, runs, one more tick to read them finished.
BACKFILL_TIMEOUT_S = 240

BACKFILL = """
query Backfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id
      status
      isAssetBackfill
      partitionNames
      assetSelection { path }
      error { message stack causes { message stack } }
    }
    ... on BackfillNotFoundError { message }
    ... on PythonError { message stack }
  }
}
"""

BACKFILL_FINISHED_STATUSES = frozenset({"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"})


def backfill(server: Server, backfill_id: str) -> dict:
    """The backfill as the UI's backfill page reads it: status, partitions, assets, error."""
    answer = graphql(server, BACKFILL, {"backfillId": backfill_id})["partitionBackfillOrError"]
    if answer["__typename"] != "PartitionBackfill":
        pytest.fail(f"backfill {backfill_id}: {answer}", pytrace=False)
    return answer


def wait_for_backfill(server: Server, backfill_id: str, timeout_s: float = BACKFILL_TIMEOUT_S) -> dict:
    """Wait until the daemon has finished the backfill with every partition materialized; returns it. Fails
    at once if it finishes otherwise, with its error and the error events of each of its runs that failed."""
    started = time.monotonic()
    answer: dict = {}
    while time.monotonic() - started < timeout_s:
        server.assert_alive()
        answer = backfill(server, backfill_id)
        if answer["status"] in ("COMPLETED", "COMPLETED_SUCCESS"):
            return answer
        if answer["status"] in BACKFILL_FINISHED_STATUSES:
            break
        time.sleep(POLL_S)
    else:
        pytest.fail(f"backfill {backfill_id} still {answer.get('status')} after {timeout_s}s", pytrace=False)
    details = [f"backfill {backfill_id} ended {answer['status']}"]
    if answer.get("error"):
        details.append(python_error(answer["error"]))
    for run in runs_tagged(server, {"dagster/backfill": backfill_id}):
        if run["status"] != "SUCCESS":
            details.append(f"run {run['runId']} {run['status']}:\n{run_errors(server, run['runId'])}")
    pytest.fail("\n".join(details), pytrace=False)


LAUNCH_PARTITION_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionKeysNotFoundError { message }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on PartitionSetNotFoundError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PresetNotFoundError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def launch_asset_backfill(
    server: Server, assets: list[str], partitions: list[str], tags: dict[str, str] | None = None
) -> str:
    """The UI's "Materialize" of ``assets`` over these mailbox partitions (an asset backfill the daemon
    carries out); returns the backfill id. Unpartitioned assets among ``assets`` run once, after their
    upstream partitions."""
    params = {
        "assetSelection": [{"path": [asset]} for asset in assets],
        "partitionNames": partitions,
        "fromFailure": False,
        "tags": [{"key": k, "value": v} for k, v in {"dagster/from_ui": "true", **(tags or {})}.items()],
    }
    answer = graphql(server, LAUNCH_PARTITION_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
    if answer["__typename"] != "LaunchBackfillSuccess":
        pytest.fail(f"launchPartitionBackfill answered {answer}", pytrace=False)
    return answer["backfillId"]
