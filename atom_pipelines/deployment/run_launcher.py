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
the run's ``.dagster/grpc_info`` tag), ``launch_run`` tags the run with this machine (host name, pid
namespace, boot id and boot time). A worker is that machine's boot plus its pid and start time (psutil reads both), so
the monitoring daemon's check answers NOT_FOUND when the machine has rebooted since, or when no process has
that pid, the process is a zombie, or it started after the worker reported itself (pid reuse). Monitoring
fails the run (``max_resume_run_attempts: 0``) and run retries re-execute it from failure.

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
import sys
from dataclasses import asdict, dataclass
from typing import Any

import psutil
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
#: Generous: a process's start time is the boot time (whole seconds) plus clock ticks since boot, and the
#: wall clock may have been stepped since boot (psutil documents both times as subject to NTP).
PID_REUSE_SLACK_S = 60.0
#: Where the kernel has no boot id (not Linux), or for a tag written before boot ids: the boot time moves
#: when the wall clock is stepped or a virtual machine is paused and resumed (it is the wall clock minus the
#: time since boot). Measured on this project's CI machine: 10 s, mid-run, which failed two healthy runs
#: under a 5 s slack. A reboot moves it by the old boot's uptime plus the downtime; one within the slack is
#: still caught by the pid check (no such pid, or a pid started after the worker reported itself).
BOOT_TIME_SLACK_S = 60.0
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _pid_namespace() -> str | None:
    """The pid namespace of this process (``pid:[4026531836]``); None where the platform has none.

    On Linux an unreadable namespace raises: a made-up value would compare equal between two namespaces,
    and a pid from one would be looked up in the other."""
    if not sys.platform.startswith("linux"):
        return None
    return os.readlink("/proc/self/ns/pid")  # psutil has no namespace API


def _linux_boot_id() -> str | None:
    """The kernel's id of this boot; None where the platform has none. Unlike the boot time it does not move
    when the clock is stepped or the machine is paused. On Linux an unreadable or empty id raises: a made-up
    value would compare equal across boots (the first version's mistake, below)."""
    if not sys.platform.startswith("linux"):
        return None
    with open(BOOT_ID_PATH, encoding="ascii") as source:
        boot_id = source.read().strip()
    if not boot_id:
        raise OSError(f"{BOOT_ID_PATH} is empty")
    return boot_id


@dataclass(frozen=True)
class Machine:
    """What gives a pid its meaning: the host, its pid namespace, and its current boot.

    The tag is this as JSON. Its first version carried the kernel's ``boot_id`` instead of ``boot_time``,
    read as "" when it could not be read, so an unreadable boot id compared equal after a reboot and a dead
    run stayed STARTED. ``boot_time`` comes from psutil on every platform, and a tag of the first version
    (no ``boot_time``) is still read: its runs are checked by pid, which also catches a reboot (every process
    of a new boot started after the worker reported itself)."""

    hostname: str
    pid_namespace: str | None
    #: ``psutil.boot_time()`` (epoch seconds) at launch; None in a first-version tag.
    boot_time: float | None
    #: The kernel's boot id on Linux (read by this version on); None elsewhere and in older tags, whose
    #: runs are judged by the boot time within BOOT_TIME_SLACK_S. Not the first version's ``boot_id`` field,
    #: which may hold "" and is still not compared.
    linux_boot_id: str | None = None

    @classmethod
    def current(cls) -> Machine:
        """This machine now; raises OSError (or psutil's RuntimeError) when it cannot tell, never guesses."""
        return cls(
            hostname=socket.gethostname(),
            pid_namespace=_pid_namespace(),
            boot_time=psutil.boot_time(),
            linux_boot_id=_linux_boot_id(),
        )

    def to_tag(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_tag(cls, value: str) -> Machine:
        fields: dict[str, Any] = json.loads(value)
        return cls(
            hostname=fields["hostname"],
            pid_namespace=fields.get("pid_namespace"),
            boot_time=fields.get("boot_time"),  # absent in a first-version tag, whose boot_id is not compared
            linux_boot_id=fields.get("linux_boot_id"),
        )

    def reboot_reason(self, launched_on: Machine) -> str | None:
        """Why this machine (now) has booted again since ``launched_on`` was read on it; None if it has not,
        or if a first-version tag cannot say (its runs are left to the pid check). The boot ids decide where
        both sides have one; otherwise the boot times, within BOOT_TIME_SLACK_S."""
        if launched_on.linux_boot_id is not None and self.linux_boot_id is not None:
            if launched_on.linux_boot_id == self.linux_boot_id:
                return None
            return (
                f"{self.hostname} has restarted since the run was launched (boot id {launched_on.linux_boot_id}, "
                f"now {self.linux_boot_id})"
            )
        if launched_on.boot_time is None or self.boot_time is None:
            return None
        if self.boot_time <= launched_on.boot_time + BOOT_TIME_SLACK_S:
            return None
        return (
            f"{self.hostname} has restarted since the run was launched (booted at {_iso(launched_on.boot_time)}, "
            f"now at {_iso(self.boot_time)})"
        )


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")


def worker_gone_reason(pid: int, reported_at: float) -> str | None:
    """Why the run worker that reported itself as ``pid`` at ``reported_at`` (epoch seconds) no longer runs;
    None while it still does.

    A worker is its pid on this machine plus its start time: gone when no process has the pid, when the
    process is a zombie (exited, not reaped), or when the process holding the pid started after the worker
    reported itself (the pid was reused, or the machine rebooted). psutil raises AccessDenied for a process
    it may not read: that is left to raise, since a worker run as another user would look gone."""
    try:
        process = psutil.Process(pid)
        status = process.status()
        started_at = process.create_time()
    except psutil.ZombieProcess:  # before NoSuchProcess, its base class; raised where a zombie hides its fields
        return f"pid {pid} has exited (a zombie, not reaped yet)"
    except psutil.NoSuchProcess:
        return f"no process has pid {pid}"
    if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
        return f"pid {pid} has exited (status {status}, not reaped yet)"
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
        if not _code_server_is_local(grpc_info):
            self._not_checkable(
                context.dagster_run,
                f"its code server ({grpc_info or 'unknown'}) is not on this machine, and {type(self).__name__} "
                "checks workers by pid",
            )
            return
        try:
            machine = Machine.current()
        except (OSError, RuntimeError) as exc:
            # The run is launched already: raising here would have the daemon fail a run whose worker runs.
            self._not_checkable(context.dagster_run, f"this machine cannot be identified ({exc})")
            return
        self._instance.add_run_tags(run_id, {RUN_WORKER_MACHINE_TAG: machine.to_tag()})

    def _not_checkable(self, run: DagsterRun, why: str) -> None:
        self._instance.report_engine_event(
            f"Run monitoring cannot check this run's worker: {why}. If the worker dies with its code server, "
            "the run stays STARTED until it is failed by hand.",
            run,
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
        rebooted = here.reboot_reason(launched_on)
        if rebooted is not None:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, f"{rebooted}: its run worker is gone")
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
