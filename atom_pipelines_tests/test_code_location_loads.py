"""The code location loads the way the server loads it, and a partition runs through it.

Production bug #6: workers died at start-up with ModuleNotFoundError because nothing loaded the code the
way the server does. This test starts `dagster dev` (webserver, daemon and code server as separate
processes) on PostgreSQL instance storage from the repo's `dagster.yaml`, waits for the code location,
launches one mailbox-day through the GraphQL API the UI uses, waits for success, checks the rows, and
stops every process it started.
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
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from dagster import DagsterInstance

from atom_pipelines.partitions import partition_key
from atom_pipelines_tests.conftest import REPO_ROOT, corpus_records, write_export

MAILBOX = "kevin.hyatt@enron.com"
DAY = "2001-11-27"  # the mailbox's busiest day: 5 messages
LOAD_TIMEOUT_S = 180
RUN_TIMEOUT_S = 240

LOCATION_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message stack } }
      }
    }
    ... on PythonError { message }
  }
}
"""

LAUNCH_RUN = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on UnauthorizedError { message }
  }
}
"""

RUN_STATUS = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status }
    ... on PythonError { message }
  }
}
"""

RUN_FAILURES = """
query Events($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on MessageEvent { message } } }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    response = requests.post(
        f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _pg_env(url: str) -> dict[str, str]:
    parsed = sa.engine.make_url(url)
    return {
        "DAGSTER_PG_USERNAME": parsed.username or "postgres",
        "DAGSTER_PG_PASSWORD": parsed.password or "",
        "DAGSTER_PG_HOST": parsed.host or "127.0.0.1",
        "DAGSTER_PG_DB": parsed.database,
        "DAGSTER_PG_PORT": str(parsed.port or 5432),
    }


@pytest.fixture
def server_env(tmp_path: Path, postgres_database_url: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    export = write_export(tmp_path / "export", corpus_records({MAILBOX}))
    return {
        **os.environ,
        **_pg_env(postgres_database_url),
        "DAGSTER_HOME": str(home),
        "ATOM_DATABASE_URL": postgres_database_url,
        "ATOM_MAIL_EXPORT_DIR": str(export),
        "ATOM_END_DATE": "2002-07-01",
        "ATOM_GRAPH_EXPORT_DIR": str(tmp_path / "exports"),
        "ATOM_LLM_CHAIN": "heuristic",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def dagster_dev(server_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = _free_port()
    log_path = tmp_path / "dagster_dev.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: webserver, daemon and code server stop together
        )
    try:
        yield port, log_path
    finally:
        _stop(process)
        # Nothing it started may outlive the test.
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers after stop"


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    try:  # children that ignored SIGTERM
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_for_location(port: int, log_path: Path) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            data = _graphql(port, LOCATION_QUERY)["workspaceOrError"]
        except requests.ConnectionError:
            time.sleep(1)
            continue
        entries = {e["name"]: e for e in data.get("locationEntries", [])}
        entry = entries.get("atom_pipelines")
        if entry and entry["loadStatus"] == "LOADED":
            error = entry["locationOrLoadError"]
            if error and error["__typename"] == "PythonError":
                pytest.fail(f"code location failed to load: {error['message']}\n{''.join(error['stack'])}")
            return
        last = str(data)
        time.sleep(1)
    pytest.fail(f"code location not loaded in {LOAD_TIMEOUT_S}s: {last}\n{log_path.read_text()[-4000:]}")


def test_the_server_loads_the_code_location_and_runs_a_partition(
    dagster_dev: tuple[int, Path],
    server_env: dict[str, str],
    postgres_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, log_path = dagster_dev
    _wait_for_location(port, log_path)

    # Register the mailbox directly on the instance the server uses; the register_mailboxes sensor would do
    # the same within its 60 s interval (its logic is tested in test_sensors.py), which this test need not wait for.
    for name in ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_PORT"):
        monkeypatch.setenv(name, server_env[name])
    instance = DagsterInstance.from_config(server_env["DAGSTER_HOME"])
    try:
        instance.add_dynamic_partitions("mailbox", [MAILBOX])
    finally:
        instance.dispose()

    key = partition_key(MAILBOX, dt.date.fromisoformat(DAY))
    launched = _graphql(
        port,
        LAUNCH_RUN,
        {
            "executionParams": {
                "selector": {
                    "repositoryLocationName": "atom_pipelines",
                    "repositoryName": "__repository__",
                    "jobName": "mail_to_links",
                },
                "runConfigData": {},
                "executionMetadata": {
                    "tags": [
                        {"key": "dagster/partition", "value": key},
                        {"key": "dagster/partition/mailbox", "value": MAILBOX},
                        {"key": "dagster/partition/date", "value": DAY},
                    ]
                },
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = None
    while time.monotonic() < deadline:
        status = _graphql(port, RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    if status != "SUCCESS":
        events = _graphql(port, RUN_FAILURES, {"runId": run_id})["logsForRun"].get("events", [])
        messages = [e.get("message", "") for e in events if "Failure" in e["__typename"] or "Error" in e["__typename"]]
        pytest.fail(f"run {run_id} ended {status}: {messages}\n{log_path.read_text()[-4000:]}")

    expected = {r["id"] for r in corpus_records({MAILBOX}) if r["receivedDateTime"].startswith(DAY)}
    engine = sa.create_engine(postgres_database_url)
    try:
        with engine.connect() as conn:
            stored = set(conn.execute(sa.text("select message_id from messages")).scalars())
            entities = conn.execute(sa.text("select count(*) from entities")).scalar_one()
            links = conn.execute(sa.text("select count(*) from entity_links")).scalar_one()
    finally:
        engine.dispose()
    assert stored == expected and len(expected) == 5
    assert entities > 0 and links > 0
