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
