"""The production instance's run launcher: Dagster's ``DefaultRunLauncher`` plus the run worker health check
that run monitoring needs to fail a run whose worker died together with its code server.

Why. ``DefaultRunLauncher.supports_check_run_worker_health`` is False, so Dagster's monitoring daemon never
asks whether a STARTED run's worker is alive (it only enforces start and run-time limits). On this
deployment (measured by ``atom_pipelines_tests/test_run_recovery.py``):

- only the run worker's process tree dies (SIGKILL, an OOM kill): the code server that spawned the worker
  notices within about a second and fails the run itself; no monitoring needed;
- the code server dies with its workers (a machine or container restart, a killed ``dagster-daemon``
  whose managed code server ran the workers, a deploy that kills the server): nothing is left to notice,
  and under ``DefaultRunLauncher`` the run stays STARTED for ever while monitoring ticks every
  ``poll_interval_seconds`` (production bug #3: jobs "pending" for ever after a worker restart).

How. Dagster's run worker reports its pid in the run's event log ("Started process for run (pid: N).").
When the run's code server is on this machine (a unix socket or a loopback address, as Dagster records in
the run's ``.dagster/grpc_info`` tag), ``launch_run`` tags the run with this machine (host name, boot id,
pid namespace). The monitoring daemon's check then answers NOT_FOUND when the machine has rebooted since,
or when that pid is gone, a zombie, or held by a process that started after the worker reported itself
(pid reuse). Monitoring fails the run (``max_resume_run_attempts: 0``) and run retries re-execute it from
failure.

Limits. The daemon that checks must be the one that launched (same host and pid namespace), as with the
queued run coordinator in ``dagster.yaml``, where the daemon launches every run. A run whose code server
is elsewhere cannot be checked from here: its event log says so at launch, and monitoring treats it as
running. Such a deployment needs a launcher that can see its workers (Docker, Kubernetes, ECS).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from dagster import DefaultRunLauncher
from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG

log = logging.getLogger(__name__)

#: Set at launch when the run's worker runs on this machine: the machine (JSON of ``Machine``).
RUN_WORKER_MACHINE_TAG = "atom/run_worker_machine"
#: How Dagster's run worker announces itself (dagster/_grpc/impl.py, dagster/_cli/api.py), with a "pid" entry.
WORKER_STARTED_PREFIX = "Started process for run (pid: "
#: A process that started this long after the worker reported its pid is another process with a reused pid.
#: Generous: /proc's boot time has whole seconds, and the wall clock may have been adjusted since boot.
PID_REUSE_SLACK_S = 60.0
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

_PROC = Path("/proc")


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""  # not Linux: the field stays empty and compares equal everywhere


@dataclass(frozen=True)
class Machine:
    """What gives a pid its meaning: the host, its current boot, and the pid namespace."""

    hostname: str
    boot_id: str
    pid_namespace: str

    @classmethod
    def current(cls) -> Machine:
        try:
            pid_namespace = os.readlink(_PROC / "self" / "ns" / "pid")
        except OSError:
            pid_namespace = ""
        return cls(
            hostname=socket.gethostname(),
            boot_id=_read_text(_PROC / "sys" / "kernel" / "random" / "boot_id"),
            pid_namespace=pid_namespace,
        )

    def to_tag(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_tag(cls, value: str) -> Machine:
        return cls(**json.loads(value))


def _boot_time() -> float:
    for line in (_PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime line")


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")


def worker_gone_reason(pid: int, reported_at: float) -> str | None:
    """Why the process that reported itself as ``pid`` at ``reported_at`` (epoch seconds) no longer runs;
    None while it still does. Linux reads /proc (exited, zombie, pid reused); elsewhere only existence."""
    if not (_PROC / "self" / "stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"no process has pid {pid}"
        except PermissionError:
            pass  # it exists, under another user
        return None
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return f"no process has pid {pid}"
    # Fields after the parenthesized command name (which may hold spaces): state is field 3, starttime 22.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_ticks = fields[0], int(fields[19])
    if state in ("Z", "X"):
        return f"pid {pid} has exited (state {state}, not reaped yet)"
    started_at = _boot_time() + start_ticks / os.sysconf("SC_CLK_TCK")
    if started_at > reported_at + PID_REUSE_SLACK_S:
        return (
            f"pid {pid} now belongs to a process started at {_iso(started_at)}, after the run worker "
            f"reported it at {_iso(reported_at)}"
        )
    return None


def _code_server_is_local(grpc_info: dict) -> bool:
    return bool(grpc_info.get("socket")) or grpc_info.get("host") in LOOPBACK_HOSTS


class LocalRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` (runs start as subprocesses of the code server) whose run workers run
    monitoring can check, when the code server runs on the daemon's machine. See the module docstring."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def launch_run(self, context: LaunchRunContext) -> None:
        super().launch_run(context)  # records where the code server is, in the grpc_info tag
        run_id = context.dagster_run.run_id
        launched = self._instance.get_run_by_id(run_id)
        grpc_info = json.loads(launched.tags.get(GRPC_INFO_TAG) or "{}") if launched else {}
        if _code_server_is_local(grpc_info):
            self._instance.add_run_tags(run_id, {RUN_WORKER_MACHINE_TAG: Machine.current().to_tag()})
        else:
            self._instance.report_engine_event(
                f"Run monitoring cannot check this run's worker: its code server ({grpc_info or 'unknown'}) "
                f"is not on this machine, and {type(self).__name__} checks workers by pid. If the worker dies "
                "with its code server, the run stays STARTED until it is failed by hand.",
                context.dagster_run,
                cls=type(self),
            )

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        tag = run.tags.get(RUN_WORKER_MACHINE_TAG)
        if tag is None:
            # Not launched by this launcher on a local code server (e.g. `dagster asset materialize`).
            return CheckRunHealthResult(WorkerStatus.RUNNING, "worker not checkable from here; assumed running")
        launched_on, here = Machine.from_tag(tag), Machine.current()
        if (launched_on.hostname, launched_on.pid_namespace) != (here.hostname, here.pid_namespace):
            return CheckRunHealthResult(
                WorkerStatus.RUNNING,
                f"launched from {launched_on}, checked from {here}: worker not checkable; assumed running",
            )
        if launched_on.boot_id != here.boot_id:
            return CheckRunHealthResult(
                WorkerStatus.NOT_FOUND,
                f"{here.hostname} has restarted since the run was launched (boot id {launched_on.boot_id}, "
                f"now {here.boot_id}): its run worker is gone",
            )
        reported = self._reported_worker(run.run_id)
        if reported is None:
            # STARTED is reported by the worker after it reports its pid, so this should not happen.
            log.warning("run %s is %s but its worker never reported a pid", run.run_id, run.status.value)
            return CheckRunHealthResult(WorkerStatus.RUNNING, "worker reported no pid; assumed running")
        pid, reported_at = reported
        reason = worker_gone_reason(pid, reported_at)
        if reason is not None:
            return CheckRunHealthResult(
                WorkerStatus.NOT_FOUND, f"run worker (pid {pid}) is gone: {reason}", run_worker_id=str(pid)
            )
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is running", run_worker_id=str(pid))

    def _reported_worker(self, run_id: str) -> tuple[int, float] | None:
        """(pid, when) of the latest "Started process for run" event of the run."""
        latest = None
        connection = self._instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT)
        for record in connection.records:
            entry = record.event_log_entry
            event = entry.dagster_event
            if event is None or not entry.message.startswith(WORKER_STARTED_PREFIX):
                continue
            pid = event.engine_event_data.metadata.get("pid")
            if pid is not None:
                latest = (int(pid.value), entry.timestamp)
        return latest
