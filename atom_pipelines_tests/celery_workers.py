"""Real Celery workers for the server tests (issue 12): a throwaway RabbitMQ vhost per test, worker process
groups started the way docs/runbook/celery.md tells operators to, and a TCP proxy in front of RabbitMQ that
a test can stop and start to take "the broker" away without touching the RabbitMQ others use.

RabbitMQ is the real server on 127.0.0.1:5672 (ATOM_TEST_RABBITMQ_HOST/_PORT). A vhost per test keeps each
test's queues, exchanges and reply queues apart from every other test's and from a deployment's; it is
created and deleted with ``rabbitmqctl`` (run as root or the rabbitmq user, as on CI). Under CI=true a
missing broker fails the test; elsewhere it is skipped.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from atom_pipelines_tests.conftest import IN_CI, REPO_ROOT
from atom_pipelines_tests.dagster_dev import (
    Daemon,
    Server,
    console_script,
    graphql,
    group_members,
    launch_asset_backfill,
    launch_run,
    process_group,
    run_messages,
)

RABBITMQ_HOST = os.environ.get("ATOM_TEST_RABBITMQ_HOST", "127.0.0.1")
RABBITMQ_PORT = int(os.environ.get("ATOM_TEST_RABBITMQ_PORT", "5672"))
WORKER_READY_TIMEOUT_S = 90  # loading the settings and Celery on 2 busy cores
WORKER_READY = re.compile(r"\S+@\S+ ready\.")


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message} (CI=true: Celery tests may not be skipped)", pytrace=False)
    pytest.skip(message)


def _rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Vhost:
    """A throwaway vhost and a user of its own, whose password is a secret no log or UI may show."""

    name: str
    user: str
    password: str

    def broker_url(self, port: int = RABBITMQ_PORT) -> str:
        return f"amqp://{self.user}:{self.password}@{RABBITMQ_HOST}:{port}/{self.name}"


@contextmanager
def rabbitmq_vhost(prefix: str = "atom_test") -> Iterator[Vhost]:
    """A fresh vhost on the RabbitMQ server and a user allowed on it alone; both deleted afterwards."""
    if shutil.which("rabbitmqctl") is None:
        _unavailable("rabbitmqctl not found: cannot create a throwaway RabbitMQ vhost")
    with socket.socket() as sock:
        sock.settimeout(2)
        if sock.connect_ex((RABBITMQ_HOST, RABBITMQ_PORT)) != 0:
            _unavailable(f"RabbitMQ at {RABBITMQ_HOST}:{RABBITMQ_PORT} unreachable")
    token = uuid.uuid4().hex[:12]
    vhost = Vhost(name=f"{prefix}_{token}", user=f"{prefix}_{token}", password=f"brokersecret{uuid.uuid4().hex}")
    _rabbitmqctl("add_vhost", vhost.name)
    try:
        _rabbitmqctl("add_user", vhost.user, vhost.password)
        try:
            _rabbitmqctl("set_permissions", "-p", vhost.name, vhost.user, ".*", ".*", ".*")
            yield vhost
        finally:
            _rabbitmqctl("delete_user", vhost.user)
    finally:
        _rabbitmqctl("delete_vhost", vhost.name)


def queue_depths(vhost: Vhost) -> dict[str, int]:
    """Ready + unacknowledged messages per queue of the vhost."""
    out = _rabbitmqctl("list_queues", "-p", vhost.name, "name", "messages", "--no-table-headers")
    depths = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            depths[parts[0]] = int(parts[1])
    return depths


# -- A TCP proxy standing in for the broker's network -------------------------------------------------------


@dataclass
class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``. ``stop()`` closes the listener and every forwarded
    connection (clients see the broker go away: connection refused, or reset mid-conversation); ``start()``
    listens on the same port again."""

    target: tuple[str, int]
    port: int = 0
    _listener: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _pairs: list[tuple[socket.socket, socket.socket]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    connections: int = 0

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for client, upstream in self._pairs:
                for sock in (client, upstream):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()
            self._pairs.clear()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def _serve(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        # Inside the try: stop() may close a pair just accepted before this thread set it up, and a closed
        # socket ends its pump as any other closed connection does (that is the broker "going away").
        try:
            client.setblocking(False)
            upstream.setblocking(False)
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            with self._lock:
                if (client, upstream) in self._pairs:
                    self._pairs.remove((client, upstream))
            for sock in (client, upstream):
                try:
                    sock.close()
                except OSError:
                    pass


@contextmanager
def tcp_proxy(target: tuple[str, int] = (RABBITMQ_HOST, RABBITMQ_PORT)) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target).start()
    try:
        yield proxy
    finally:
        proxy.stop()


# -- Celery worker process groups ---------------------------------------------------------------------------


def worker_command(name: str, concurrency: int = 1) -> list[str]:
    """The operator's command (docs/runbook/celery.md): our app, the dagster queue, one process per slot."""
    return [
        *console_script("celery", "celery"),
        "-A",
        "atom_pipelines.deployment.celery_worker",
        "worker",
        "--loglevel",
        "INFO",
        "-Q",
        "dagster",
        "-n",
        f"{name}@%h",
        "--concurrency",
        str(concurrency),
        # No gossip/mingle between workers: they find nothing to share and slow a start down by seconds.
        "--without-gossip",
        "--without-mingle",
    ]


@dataclass
class CeleryWorker:
    name: str
    process: subprocess.Popen
    log_path: Path

    # A worker is a process group with a log, as the daemon is: the same tail and the same SIGKILL of the
    # whole group (main process and pool), as a machine that dies takes them.
    log_tail = Daemon.log_tail
    kill = Daemon.kill

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def pool_pids(self) -> list[int]:
        """The pids of the worker's pool processes (the prefork children that run the steps)."""
        members = [line.split()[0] for line in group_members(self.process.pid)]
        return [int(pid) for pid in members if int(pid) != self.process.pid]

    def received(self) -> list[str]:
        """The ids of the tasks (steps) the worker received, in order; a redelivered task again each time."""
        return re.findall(r"Task execute_plan\[([0-9a-f-]+)\] received", self.log())

    def tasks_received(self) -> int:
        return len(self.received())

    def tasks_succeeded(self) -> int:
        return len(re.findall(r"Task execute_plan\[[0-9a-f-]+\] succeeded", self.log()))

    def tasks_ended(self) -> int:
        return len(re.findall(r"Task execute_plan\[[0-9a-f-]+\] (?:succeeded|failed|raised)", self.log()))


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """A worker's environment: the deployment's (ATOM_*, DAGSTER_HOME, DAGSTER_PG_*), with this checkout
    first on the path (the console script's own directory is not the repo root)."""
    path = os.pathsep.join(p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p)
    return {**env, "PYTHONPATH": path}


@contextmanager
def celery_worker(env: dict[str, str], tmp_path: Path, name: str, concurrency: int = 1) -> Iterator[CeleryWorker]:
    """A worker as its own process group, ready (connected, consuming) when the block starts; stopped (warm
    shutdown, then SIGKILL) on the way out unless the block killed it."""
    log_path = tmp_path / f"celery_{name}.log"
    with process_group(worker_command(name, concurrency), worker_env(env), log_path) as process:
        worker = CeleryWorker(name=name, process=process, log_path=log_path)
        try:
            wait_until_ready(worker)
            yield worker
        except BaseException:
            print(worker.log_tail())
            raise


def wait_until_ready(worker: CeleryWorker, timeout_s: float = WORKER_READY_TIMEOUT_S) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if worker.process.poll() is not None:
            pytest.fail(f"celery worker {worker.name} exited ({worker.process.returncode})\n{worker.log_tail()}")
        if WORKER_READY.search(worker.log()):
            return time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"celery worker {worker.name} not ready within {timeout_s}s\n{worker.log_tail()}")


@contextmanager
def celery_workers(
    env: dict[str, str], tmp_path: Path, count: int, concurrency: int = 1
) -> Iterator[list[CeleryWorker]]:
    """``count`` workers started one after the other (each its own group)."""
    with ExitStack() as stack:
        yield [stack.enter_context(celery_worker(env, tmp_path, f"w{i}", concurrency)) for i in range(count)]


# -- Runs of any job, and what a run's events say about where its steps ran ---------------------------------

RUN_CONFIG = """
query RunConfig($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { runConfigYaml tags { key value } } }
}
"""


def run_config_yaml(server: Server, run_id: str) -> str:
    return graphql(server, RUN_CONFIG, {"runId": run_id})["runOrError"]["runConfigYaml"]


CELERY_STEP = re.compile(r"Executing steps (\S+) in celery worker$")


def celery_steps(server: Server, run_id: str) -> list[str]:
    """The step keys a Celery worker reported executing for the run (dagster-celery's engine event)."""
    return [m.group(1) for message in run_messages(server, run_id) if (m := CELERY_STEP.search(message))]


def launch_mailbox_days(
    server: Server, mailbox: str, first: object, last: object, tags: dict[str, str] | None = None
) -> str:
    """Launch ``mail_to_links`` for one mailbox's days [first, last], as a date-range re-sync in the launchpad."""
    from atom_pipelines.tags import FIRST_DAY_TAG, LAST_DAY_TAG

    run_tags = {"dagster/partition": mailbox, FIRST_DAY_TAG: str(first), LAST_DAY_TAG: str(last), **(tags or {})}
    return launch_run(server, "mail_to_links", run_tags)


CHAIN_ASSETS = ("outlook_messages", "email_entities", "entity_links")


def launch_mailbox_backfill(server: Server, mailboxes: list[str]) -> str:
    """The UI's "Materialize" of the chain over these mailbox partitions (an asset backfill); its id."""
    return launch_asset_backfill(server, list(CHAIN_ASSETS), mailboxes)


STEP_EVENTS = """
query StepEvents($runId: ID!) {
  logsForRun(runId: $runId, limit: 5000) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { stepKey timestamp } } }
  }
}
"""


def step_intervals(server: Server, run_id: str, step_key: str) -> list[tuple[float, float]]:
    """(start, end) in epoch seconds of each execution of ``step_key`` in the run, from its event log: from
    STEP_START to STEP_SUCCESS / STEP_FAILURE, as the worker that ran it wrote them."""
    events = graphql(server, STEP_EVENTS, {"runId": run_id})["logsForRun"]["events"]
    intervals, start = [], None
    for event in events:
        if event.get("stepKey") != step_key:
            continue
        if event["__typename"] == "ExecutionStepStartEvent":
            start = float(event["timestamp"]) / 1000
        elif event["__typename"] in ("ExecutionStepSuccessEvent", "ExecutionStepFailureEvent") and start is not None:
            intervals.append((start, float(event["timestamp"]) / 1000))
            start = None
    return intervals


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end at the same instant as a start does not overlap it)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = most = 0
    for _, change in edges:
        open_now += change
        most = max(most, open_now)
    return most


#: Columns that say when or by which run something happened, not what was found: left out of comparisons.
VOLATILE_COLUMNS = frozenset({"latency_ms", "run_id", "root_run_id", "recorded_at", "updated_at", "noted_at"})


def store_rows(database_url: str, tables: tuple[str, ...] | None = None) -> dict[str, Counter]:
    """Each table of the store as a multiset of rows, volatile columns left out."""
    import json

    import sqlalchemy as sa

    from atom_pipelines.store.schema import metadata

    def hashable(value: object) -> object:
        return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value

    engine = sa.create_engine(database_url)
    try:
        rows: dict[str, Counter] = {}
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                if tables is not None and table.name not in tables:
                    continue
                columns = [c for c in table.columns if c.name not in VOLATILE_COLUMNS]
                rows[table.name] = Counter(tuple(map(hashable, r)) for r in conn.execute(sa.select(*columns)))
        return rows
    finally:
        engine.dispose()


def busy_workers(workers: list[CeleryWorker]) -> list[CeleryWorker]:
    """The workers holding a step now: a task received and not yet reported succeeded or failed. (Only while
    the broker stays: a task received just as the connection drops is never reported either way.)"""
    return [worker for worker in workers if worker.tasks_received() > worker.tasks_ended()]


RUN_STATS = """
query RunStats($runId: ID!) {
  runOrError(runId: $runId) { ... on Run { stats { ... on RunStatsSnapshot { stepsSucceeded stepsFailed } } } }
}
"""


def steps_succeeded(server: Server, run_id: str) -> int:
    return graphql(server, RUN_STATS, {"runId": run_id})["runOrError"]["stats"]["stepsSucceeded"]
