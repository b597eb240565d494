"""Dagster partition schemes at N registered mailboxes on a PostgreSQL instance, through the GraphQL the UI sends.

For each scheme and N: a fresh PostgreSQL database as the Dagster instance (the repo's dagster.yaml in a
temporary DAGSTER_HOME), ``dagster-webserver`` and ``dagster-daemon`` as their own process groups (as
``atom_pipelines_tests/dagster_dev.py`` starts them) on a synthetic code location from
``bench/scale_locations/`` (or the real ``atom_pipelines`` with ``--scheme real``), then:

* register: N mailboxes as ``instance.add_dynamic_partitions("mailbox", ...)`` in batches of 1,000 (dynamic
  schemes; the static ``group_day`` and ``day`` schemes register nothing in Dagster: "-");
* status: the asset partitions tab's ``PartitionHealthQuery`` for ``outlook_messages``, first (cold) and
  second (warm) request; again after the backfill's first run finished ("after run") and after one more
  mailbox was registered ("+1 mb", dynamic schemes: it invalidates the status cache);
* launch: the partitions dialog's ``LaunchPartitionBackfill`` for the history sync of one mailbox (730 days)
  over the three assets, with the dialog's parameters (``assetSelection``, ``partitionNames``,
  ``fromFailure: false``, tags ``dagster/from_ui=true``); seconds until the mutation answers, and until the
  daemon has created the backfill's first run (the backfill daemon ticks every 30 s); the backfill is
  cancelled (``CancelBackfill``) once its first run finished;
* schedule: the "Test schedule" dialog's ``ScheduleDryRunMutation`` of ``mail_to_links_daily``: seconds and
  run requests; with ``--tick``, a real tick: the daemon is restarted with the schedule RUNNING and due at the
  next minute (its runs stay QUEUED: ``max_concurrent_runs: 0`` in a copy of dagster.yaml, unless
  ``--tick-with-runs``), and the tick's time and end are read from ``instance.get_ticks`` ("> T (k made)": not
  ended within ``--tick-timeout``, k runs created by then);
* RSS: peak resident memory of the webserver's and the daemon's process (alone and with their process
  trees: code servers, run workers), sampled every 0.5 s over the whole measurement.

Targets at 10,000 mailboxes x 730 days: launch < 5 s, status < 2 s, webserver and daemon < 1 GB each,
register < 60 s, daily tick < 30 s.

    python bench/partition_scale.py --scheme mailbox --scheme group_day --n 100 --n 1000 --n 10000 [--tick]
    python bench/partition_scale.py --scheme real --n 10000 --tick   # the real atom_pipelines location

``--env KEY=VALUE`` sets a variable for every process started (e.g.
``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1``: one planned event per asset and run instead of one per asset and partition; ``ATOM_DAILY_MAILBOXES_PER_RUN``
for ``real``). The machine's load average is printed per row: on a shared machine, compare rows of equal load.

Throwaway databases ``scale_<random>`` on 127.0.0.1:5432 (``ATOM_TEST_POSTGRES_URL``), dropped afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zlib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests
import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from atom_pipelines_tests.dagster_dev import (  # noqa: E402
    LOCATION_QUERY,
    console_script,
    free_port,
    port_answers,
    process_group,
)

ADMIN_URL = os.environ.get("ATOM_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
LOCATIONS = REPO_ROOT / "bench" / "scale_locations"
SCHEMES = ("mailbox_day", "mailbox", "group_day", "day", "real")
DYNAMIC = {"mailbox_day", "mailbox", "real"}
REPOSITORY = "__repository__"
JOB = "mail_to_links"
SCHEDULE = "mail_to_links_daily"
ASSETS = ("outlook_messages", "email_entities", "entity_links")
DAYS = 730
REGISTER_BATCH = 1_000
SAMPLE_S = 0.5

# -- The UI's operations, copied from the webserver's bundle (dagster_webserver/webapp/build, source maps:
# ui-core/src/assets/usePartitionHealthData.tsx, instance/backfill/BackfillUtils.tsx,
# assets/LaunchAssetChoosePartitionsDialog.tsx, ticks/EvaluateScheduleDialog.tsx, ticks/RunRequestFragment.tsx,
# app/PythonErrorFragment.tsx).

PYTHON_ERROR_FRAGMENT = """
fragment PythonErrorFragment on PythonError { message stack errorChain { ...PythonErrorChain } }
fragment PythonErrorChain on ErrorChainLink { isExplicitLink error { message stack } }
"""

PARTITION_HEALTH_QUERY = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
        ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey primaryDimStartTime primaryDimEndTime
            secondaryDim {
              ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
              ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
            }
          }
        }
      }
    }
  }
}
"""

LAUNCH_PARTITION_BACKFILL = (
    """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on UnauthorizedError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PresetNotFoundError { message }
    ... on RunConfigValidationInvalid { pipelineName errors { message path reason } }
    ...PythonErrorFragment
  }
}
"""
    + PYTHON_ERROR_FRAGMENT
)

CANCEL_BACKFILL = """
mutation CancelBackfill($backfillId: String!) {
  cancelPartitionBackfill(backfillId: $backfillId) {
    __typename
    ... on CancelBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

SCHEDULE_DRY_RUN = (
    """
mutation ScheduleDryRunMutation($selectorData: ScheduleSelector!, $timestamp: Float) {
  scheduleDryRun(selectorData: $selectorData, timestamp: $timestamp) {
    __typename
    ...PythonErrorFragment
    ... on DryRunInstigationTick {
      timestamp
      evaluationResult {
        runRequests { ...RunRequestFragment }
        skipReason
        error { ...PythonErrorFragment }
      }
    }
    ... on ScheduleNotFoundError { scheduleName }
  }
}
fragment RunRequestFragment on RunRequest {
  runConfigYaml
  tags { key value }
  runKey
  jobName
  assetSelection { path }
  assetChecks { name assetKey { path } }
}
"""
    + PYTHON_ERROR_FRAGMENT
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- PostgreSQL databases -----------------------------------------------------------------------------------


def _admin() -> sa.Engine:
    return sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")


@contextmanager
def throwaway_database(keep: bool = False):
    name = f"scale_{uuid.uuid4().hex[:10]}"
    engine = _admin()
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(ADMIN_URL).set(database=name)
    finally:
        if keep:
            log(f"kept database {name}")
        else:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


# -- Processes and their memory ------------------------------------------------------------------------------


class RssSampler(threading.Thread):
    """Every SAMPLE_S, the resident memory of each watched process alone and with all its descendants."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.watched: dict[str, int] = {}  # name -> pid
        self.peak_self: dict[str, int] = {}
        self.peak_tree: dict[str, int] = {}
        self._halt = threading.Event()
        self.loads: list[float] = []  # the machine's 1-minute load average at each sample (a shared machine)

    def watch(self, name: str, pid: int) -> None:
        self.watched[name] = pid

    def sample(self) -> None:
        self.loads.append(os.getloadavg()[0])
        for name, pid in list(self.watched.items()):
            try:
                proc = psutil.Process(pid)
                own = proc.memory_info().rss
                tree = own
                for child in proc.children(recursive=True):
                    try:
                        tree += child.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                continue
            self.peak_self[name] = max(self.peak_self.get(name, 0), own)
            self.peak_tree[name] = max(self.peak_tree.get(name, 0), tree)

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_S):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


# -- GraphQL ------------------------------------------------------------------------------------------------


class GraphQLError(RuntimeError):
    pass


@dataclass
class Webserver:
    port: int
    process: subprocess.Popen
    log_path: Path

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 600) -> dict:
        if self.process.poll() is not None:
            raise GraphQLError(f"webserver exited with {self.process.returncode}: {self.tail()}")
        response = requests.post(
            f"http://127.0.0.1:{self.port}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=timeout,
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(str(body["errors"])[:2000])
        return body["data"]

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def wait_for_location(server: Webserver, location: str, timeout_s: float) -> float:
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout_s:
        try:
            data = server.graphql(LOCATION_QUERY, timeout=30)["workspaceOrError"]
        except (requests.ConnectionError, requests.Timeout) as exc:
            last = type(exc).__name__
            time.sleep(SAMPLE_S)
            continue
        entry = next((e for e in data.get("locationEntries", []) if e["name"] == location), None)
        if entry is not None:
            loaded = entry["locationOrLoadError"]
            if loaded and loaded["__typename"] == "PythonError":
                raise GraphQLError(f"location {location} failed to load: {loaded['message']}")
            if entry["loadStatus"] == "LOADED" and loaded and loaded["__typename"] == "RepositoryLocation":
                return time.monotonic() - started
        last = str(data)[:500]
        time.sleep(SAMPLE_S)
    raise TimeoutError(f"location {location} not loaded in {timeout_s}s: {last}\n{server.tail()}")


# -- One measurement ----------------------------------------------------------------------------------------


@dataclass
class Row:
    scheme: str
    n: int
    keys: str = "-"
    register_s: str = "-"
    launch_s: str = "-"
    first_run_s: str = "-"
    status_cold_s: str = "-"
    status_warm_s: str = "-"
    status_after_run_s: str = "-"
    status_plus_one_s: str = "-"
    webserver_mb: str = "-"
    daemon_mb: str = "-"
    dry_run_s: str = "-"
    run_requests: str = "-"
    tick_s: str = "-"
    tick_runs: str = "-"
    notes: list[str] = field(default_factory=list)


def fmt(seconds: float) -> str:
    return f"{seconds:.2f}" if seconds < 10 else f"{seconds:.1f}"


def mailbox_keys(n: int) -> list[str]:
    return [f"user{i:05d}@example.com" for i in range(n)]


def group_of(mailbox: str) -> str:
    return f"g{zlib.crc32(mailbox.encode()) % 100:02d}"


def days(start: dt.date) -> list[str]:
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(DAYS)]


def history_backfill(scheme: str, mailbox: str, start: dt.date) -> tuple[list[str], list[dict]]:
    """The partition names and extra tags of one mailbox's history sync (730 days) under ``scheme``."""
    all_days = days(start)
    if scheme == "mailbox_day":  # multi-partition keys: dimensions sorted by name, date|mailbox
        return [f"{d}|{mailbox}" for d in all_days], []
    if scheme == "group_day":
        return [f"{d}|{group_of(mailbox)}" for d in all_days], [{"key": "atom/mailbox", "value": mailbox}]
    if scheme == "day":
        return all_days, [{"key": "atom/mailbox", "value": mailbox}]
    # mailbox, real: one partition, the days as run tags
    last = (start + dt.timedelta(days=DAYS - 1)).isoformat()
    return [mailbox], [{"key": "atom/first_day", "value": all_days[0]}, {"key": "atom/last_day", "value": last}]


def partition_status(server: Webserver) -> tuple[float, int]:
    """One PartitionHealthQuery of outlook_messages: seconds, and the keys of the asset (product of dimensions)."""
    started = time.monotonic()
    node = server.graphql(PARTITION_HEALTH_QUERY, {"assetKey": {"path": ["outlook_messages"]}})["assetNodeOrError"]
    elapsed = time.monotonic() - started
    keys = 1
    for dim in node.get("partitionKeysByDimension") or []:
        keys *= len(dim["partitionKeys"])
    return elapsed, keys


def schedule_state(instance, name: str):
    from dagster._core.definitions.run_request import InstigatorType as Kind

    for state in instance.all_instigator_state(instigator_type=Kind.SCHEDULE):
        if state.instigator_name == name:
            return state
    return None


def next_tick_time(lead_s: float) -> dt.datetime:
    """The first whole minute at least ``lead_s`` from now (UTC)."""
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lead_s)
    return (at + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)


def measure(scheme: str, n: int, args: argparse.Namespace) -> Row:
    row = Row(scheme=scheme, n=n)
    start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=DAYS)
    location = "atom_pipelines" if scheme == "real" else f"scale_{scheme}"
    sampler = RssSampler()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"scale_{scheme}_{n}_")))
        if args.log_dir:
            # Runs after the processes stopped (registered before them), before the temporary directory goes.
            def keep_logs() -> None:
                target = Path(args.log_dir) / f"{scheme}_{n}"
                target.mkdir(parents=True, exist_ok=True)
                for path in tmp.glob("*.log"):
                    shutil.copy(path, target / path.name)

            stack.callback(keep_logs)
        instance_url = stack.enter_context(throwaway_database(args.keep_db))
        home = tmp / "dagster_home"
        home.mkdir()
        shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
        pg = {
            "DAGSTER_PG_USERNAME": instance_url.username or "postgres",
            "DAGSTER_PG_PASSWORD": instance_url.password or "",
            "DAGSTER_PG_HOST": instance_url.host or "127.0.0.1",
            "DAGSTER_PG_DB": instance_url.database,
            "DAGSTER_PG_PORT": str(instance_url.port or 5432),
        }
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith(("ATOM_", "DAGSTER_", "OPENAI_", "SCALE_"))
        }
        env = {**inherited, **pg, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1", **dict(args.env or [])}
        workspace = tmp / "workspace.yaml"
        if scheme == "real":
            store_url = stack.enter_context(throwaway_database(args.keep_db))
            export = tmp / "export"
            export.mkdir()
            env |= {
                "ATOM_DATABASE_URL": store_url.set(drivername="postgresql+psycopg2").render_as_string(
                    hide_password=False
                ),
                "ATOM_MAIL_EXPORT_DIR": str(export),
                "ATOM_START_DATE": start.isoformat(),
                "ATOM_GRAPH_EXPORT_DIR": str(tmp / "graph_exports"),
                "ATOM_LLM_CHAIN": "heuristic",
                "ATOM_HISTORY_SYNC_ON_REGISTER": "false",
                "ATOM_GRAPH_AUTO_REFRESH": "false",
            }
            # The store's schema before the two code servers load (each creates an empty store at head).
            from atom_pipelines.store.migrate import ensure_schema

            ensure_schema(env["ATOM_DATABASE_URL"])
            workspace.write_text(
                "load_from:\n  - python_module:\n      module_name: atom_pipelines\n      attribute: defs\n"
                f"      working_directory: {REPO_ROOT}\n      location_name: {location}\n"
            )
        else:
            env["SCALE_START_DATE"] = start.isoformat()
            workspace.write_text(
                "load_from:\n  - python_file:\n"
                f"      relative_path: {LOCATIONS / (scheme + '.py')}\n      attribute: defs\n"
                f"      working_directory: {REPO_ROOT}\n      location_name: {location}\n"
            )
        # The bench's own instance object (registration, runs, ticks): same storage, created first so the
        # schema exists before the servers start.
        os.environ.update({k: v for k, v in env.items() if k.startswith("DAGSTER_PG_")})
        from dagster import DagsterInstance
        from dagster._core.storage.dagster_run import RunsFilter

        instance = stack.enter_context(DagsterInstance.from_config(str(home)))

        sampler.start()
        stack.callback(sampler.stop)
        port = free_port()
        ws_log = tmp / "webserver.log"
        ws_proc = stack.enter_context(
            process_group(
                [
                    *console_script("dagster-webserver", "dagster_webserver"),
                    "-w",
                    str(workspace),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                ],
                env,
                ws_log,
            )
        )
        sampler.watch("webserver", ws_proc.pid)
        server = Webserver(port=port, process=ws_proc, log_path=ws_log)
        daemon_cmd = [*console_script("dagster-daemon", "dagster._daemon"), "run", "-w", str(workspace)]
        daemon_stack = ExitStack()
        stack.callback(daemon_stack.close)
        daemon_proc = daemon_stack.enter_context(process_group(daemon_cmd, env, tmp / "daemon.log"))
        sampler.watch("daemon", daemon_proc.pid)

        def phase(name: str, fn) -> None:
            try:
                fn()
            except Exception as exc:  # one failed phase leaves the others' figures
                row.notes.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
                log(f"{scheme} N={n} {name} failed:\n{traceback.format_exc()}")

        try:
            loaded = wait_for_location(server, location, args.load_timeout)
            log(f"{scheme} N={n}: location loaded in {loaded:.1f}s")
            keys = mailbox_keys(n)

            def register() -> None:
                if scheme not in DYNAMIC:
                    row.register_s = "- (none)"
                    return
                started = time.monotonic()
                for i in range(0, n, REGISTER_BATCH):
                    instance.add_dynamic_partitions("mailbox", keys[i : i + REGISTER_BATCH])
                row.register_s = fmt(time.monotonic() - started)
                log(f"{scheme} N={n}: registered in {row.register_s}s")

            phase("register", register)

            def status() -> None:
                cold, count = partition_status(server)
                warm, _ = partition_status(server)
                row.keys = f"{count:,}"
                row.status_cold_s, row.status_warm_s = fmt(cold), fmt(warm)
                log(f"{scheme} N={n}: status cold {cold:.2f}s warm {warm:.2f}s ({count:,} keys)")

            phase("status", status)

            def launch() -> None:
                mailbox = keys[n // 2]
                names, tags = history_backfill(scheme, mailbox, start)
                params = {
                    "tags": [*tags, {"key": "dagster/from_ui", "value": "true"}],
                    "assetSelection": [{"path": [a]} for a in ASSETS],
                    "partitionNames": names,
                    "fromFailure": False,
                }
                sent = time.monotonic()
                answer = server.graphql(
                    LAUNCH_PARTITION_BACKFILL, {"backfillParams": params}, timeout=args.launch_timeout
                )["launchPartitionBackfill"]
                accepted = time.monotonic() - sent
                if answer["__typename"] != "LaunchBackfillSuccess":
                    raise GraphQLError(f"launchPartitionBackfill answered {str(answer)[:1000]}")
                row.launch_s = fmt(accepted)
                backfill_id = answer["backfillId"]
                log(f"{scheme} N={n}: backfill {backfill_id} accepted in {accepted:.2f}s")
                run = None
                while time.monotonic() - sent < args.launch_timeout:
                    runs = instance.get_runs(filters=RunsFilter(tags={"dagster/backfill": backfill_id}), limit=1)
                    if runs:
                        run = runs[0]
                        break
                    time.sleep(SAMPLE_S)
                if run is None:
                    row.first_run_s = f"> {args.launch_timeout}"
                    server.graphql(CANCEL_BACKFILL, {"backfillId": backfill_id})
                    return
                row.first_run_s = fmt(time.monotonic() - sent)
                log(f"{scheme} N={n}: first run {run.run_id} after {row.first_run_s}s")
                # Let it finish, so that the status has a materialization to fold in; then stop the backfill.
                deadline = time.monotonic() + args.run_timeout
                while time.monotonic() < deadline:
                    current = instance.get_run_by_id(run.run_id)
                    if current.is_finished:
                        if current.status.value != "SUCCESS":
                            row.notes.append(f"first backfill run {current.status.value}")
                        break
                    time.sleep(SAMPLE_S)
                server.graphql(CANCEL_BACKFILL, {"backfillId": backfill_id})
                after, _ = partition_status(server)
                row.status_after_run_s = fmt(after)
                log(f"{scheme} N={n}: status after the first run {after:.2f}s")
                # The daemon terminates the backfill's other runs on its next pass: wait, so that they do not
                # share the CPUs with what comes next.
                deadline = time.monotonic() + args.cancel_timeout
                while time.monotonic() < deadline:
                    if instance.get_backfill(backfill_id).status.value not in ("REQUESTED", "CANCELING"):
                        break
                    time.sleep(SAMPLE_S)

            phase("launch", launch)

            def plus_one() -> None:
                if scheme not in DYNAMIC:
                    return
                late = f"late{n:05d}@example.com"
                instance.add_dynamic_partitions("mailbox", [late])
                elapsed, _ = partition_status(server)
                instance.delete_dynamic_partition("mailbox", late)  # N again for the schedule
                row.status_plus_one_s = fmt(elapsed)
                log(f"{scheme} N={n}: status after one more mailbox {elapsed:.2f}s")

            phase("plus_one", plus_one)

            def dry_run() -> None:
                selector = {"repositoryLocationName": location, "repositoryName": REPOSITORY, "scheduleName": SCHEDULE}
                # The dialog's default: the schedule's next tick; the next 06:00 UTC is the same for every scheme.
                at = dt.datetime.now(dt.UTC).replace(hour=6, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
                started = time.monotonic()
                answer = server.graphql(
                    SCHEDULE_DRY_RUN,
                    {"selectorData": selector, "timestamp": at.timestamp()},
                    timeout=args.dry_run_timeout,
                )["scheduleDryRun"]
                elapsed = time.monotonic() - started
                if answer["__typename"] != "DryRunInstigationTick":
                    raise GraphQLError(f"scheduleDryRun answered {str(answer)[:1000]}")
                result = answer["evaluationResult"]
                if result.get("error"):
                    raise GraphQLError(f"schedule evaluation failed: {result['error']['message'][:1000]}")
                row.dry_run_s = fmt(elapsed)
                row.run_requests = f"{len(result['runRequests'] or []):,}"
                log(f"{scheme} N={n}: dry run {elapsed:.2f}s, {row.run_requests} run requests")

            phase("dry_run", dry_run)

            def real_tick() -> None:
                nonlocal daemon_proc
                if not args.tick:
                    return
                daemon_stack.close()  # the daemon again, with the schedule due at the next minute
                at = next_tick_time(args.tick_lead)
                tick_env = {**env}
                if not args.tick_with_runs:
                    # The tick alone: its runs stay QUEUED (max_concurrent_runs 0), so that run workers
                    # starting on the same 2 cores do not slow the tick down.
                    tick_home = tmp / "dagster_home_tick"
                    tick_home.mkdir()
                    text = (home / "dagster.yaml").read_text()
                    assert "max_concurrent_runs: 4" in text, "dagster.yaml's run queue changed"
                    (tick_home / "dagster.yaml").write_text(
                        text.replace("max_concurrent_runs: 4", "max_concurrent_runs: 0")
                    )
                    tick_env["DAGSTER_HOME"] = str(tick_home)
                if scheme == "real":
                    tick_env |= {"ATOM_DAILY_SYNC_HOUR": str(at.hour), "ATOM_DAILY_SYNC_MINUTE": str(at.minute)}
                else:
                    tick_env |= {
                        "SCALE_TICK_HOUR": str(at.hour),
                        "SCALE_TICK_MINUTE": str(at.minute),
                        "SCALE_SCHEDULE_RUNNING": "1",
                    }
                daemon_proc = daemon_stack.enter_context(process_group(daemon_cmd, tick_env, tmp / "daemon_tick.log"))
                sampler.watch("daemon", daemon_proc.pid)
                log(f"{scheme} N={n}: daemon restarted, tick due {at:%H:%M:%S}")
                deadline = at.timestamp() + args.tick_timeout
                tick = None
                seen_started = None  # when this process first saw the tick in progress
                while time.time() < deadline:
                    state = schedule_state(instance, SCHEDULE)
                    if state is not None:
                        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
                        if ticks and ticks[0].end_timestamp:
                            tick = ticks[0]
                            break
                        if ticks and seen_started is None:
                            seen_started = time.time()
                    time.sleep(SAMPLE_S)
                if tick is None:
                    made = instance.get_runs_count(RunsFilter(tags={"dagster/schedule_name": SCHEDULE}))
                    row.tick_s = f"> {args.tick_timeout:.0f}"
                    row.tick_runs = f"{made:,} made"
                    return
                row.tick_s = fmt(tick.end_timestamp - tick.timestamp)
                if seen_started is not None:
                    row.notes.append(
                        f"tick seen in progress {seen_started - tick.timestamp:.1f}s after its time, "
                        f"ended {tick.end_timestamp - seen_started:.1f}s later"
                    )
                row.tick_runs = f"{len(tick.run_ids):,}"
                if tick.status.value != "SUCCESS":
                    row.notes.append(f"tick {tick.status.value}: {tick.error.message[:300] if tick.error else ''}")
                log(f"{scheme} N={n}: tick {tick.status.value} in {row.tick_s}s, {row.tick_runs} runs")

            phase("tick", real_tick)
        finally:
            sampler.sample()
            if sampler.loads:
                loads = sorted(sampler.loads)
                row.notes.append(f"load average (1 min) median {loads[len(loads) // 2]:.1f}, max {loads[-1]:.1f}")
            for name, attr in (("webserver", "webserver_mb"), ("daemon", "daemon_mb")):
                own, tree = sampler.peak_self.get(name, 0), sampler.peak_tree.get(name, 0)
                setattr(row, attr, f"{own / 2**20:,.0f} / {tree / 2**20:,.0f}")
            if port_answers(port) and ws_proc.poll() is not None:
                row.notes.append("port still answers")
    return row


COLUMNS = [
    ("scheme", "scheme"),
    ("N", "n"),
    ("keys/asset", "keys"),
    ("register s", "register_s"),
    ("launch accepted s", "launch_s"),
    ("first run s", "first_run_s"),
    ("status cold / warm s", None),
    ("status after run s", "status_after_run_s"),
    ("status +1 mailbox s", "status_plus_one_s"),
    ("webserver MB own / tree", "webserver_mb"),
    ("daemon MB own / tree", "daemon_mb"),
    ("dry-run s", "dry_run_s"),
    ("run requests", "run_requests"),
    ("real tick s (runs)", None),
]


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = []
        for title, attr in COLUMNS:
            if title.startswith("status cold"):
                cells.append(f"{row.status_cold_s} / {row.status_warm_s}")
            elif title.startswith("real tick"):
                cells.append(row.tick_s if row.tick_runs == "-" else f"{row.tick_s} ({row.tick_runs})")
            elif attr == "n":
                cells.append(f"{row.n:,}")
            else:
                cells.append(str(getattr(row, attr)))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r.scheme} N={r.n:,}: {note}" for r in rows for note in r.notes]
    return "\n".join(lines + ([""] + notes if notes else []))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheme", action="append", choices=SCHEMES, help="repeatable (default: mailbox, group_day)")
    parser.add_argument("--n", action="append", type=int, help="mailboxes, repeatable (default: 100, 1000, 10000)")
    parser.add_argument("--tick", action="store_true", help="also a real daemon tick of the daily schedule")
    parser.add_argument("--load-timeout", type=float, default=180)
    parser.add_argument("--launch-timeout", type=float, default=300, help="launch mutation and first run, s")
    parser.add_argument("--run-timeout", type=float, default=120, help="the first backfill run to finish, s")
    parser.add_argument("--dry-run-timeout", type=float, default=300)
    parser.add_argument("--tick-lead", type=float, default=30, help="s from the daemon's start to its tick")
    parser.add_argument("--tick-timeout", type=float, default=180, help="s after the tick's time to its end")
    parser.add_argument(
        "--tick-with-runs", action="store_true", help="let the tick's runs execute during the tick (default: queued)"
    )
    parser.add_argument("--cancel-timeout", type=float, default=60, help="s for the cancelled backfill to stop")
    parser.add_argument(
        "--env",
        action="append",
        type=lambda text: tuple(text.split("=", 1)),
        metavar="KEY=VALUE",
        help="set for the webserver, the daemon and their code servers and runs (repeatable)",
    )
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--log-dir", help="copy the webserver's and daemons' logs here")
    args = parser.parse_args()
    rows = []
    for scheme in args.scheme or ["mailbox", "group_day"]:
        for n in args.n or [100, 1_000, 10_000]:
            log(f"== {scheme} N={n}")
            row = measure(scheme, n, args)
            if args.env:
                row.scheme += " (" + ", ".join(f"{k}={v}" for k, v in args.env) + ")"
            rows.append(row)
            print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    uname = platform.uname()
    import dagster

    print(table(rows))
    print(
        f"\nMachine: {uname.system} {uname.release} {uname.machine}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; Dagster {dagster.__version__}, "
        f"PostgreSQL instance; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
