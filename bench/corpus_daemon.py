"""Benchmark: the whole corpus through the daemon, launched as the UI launches it (issue 12, item 3).

What it runs, per executor (``--executors``, each from scratch): a throwaway PostgreSQL database holding the
Dagster instance and the store (as production), a fresh DAGSTER_HOME with the repo's dagster.yaml (run queue,
pools, run monitoring), the corpus as the mail export (atom_pipelines_tests/corpus/enron_dev.jsonl.gz: 10
mailboxes, 2,853 messages), ATOM_START_DATE/ATOM_END_DATE set to the corpus's span (552 days), the heuristic
extractor, and ``ATOM_EXECUTOR`` = the executor. Real ``dagster-webserver`` and ``dagster-daemon`` processes
(the test helpers of atom_pipelines_tests/dagster_dev.py). Once the daemon's register_mailboxes sensor has
registered the 10 mailboxes, one asset backfill through the webserver's GraphQL ``launchPartitionBackfill``
(what the UI's "Materialize all" of the mail_to_links group over all mailbox partitions sends): the three
partitioned assets over the 10 mailboxes, cut by their backfill policy into runs of ATOM_MAILBOXES_PER_RUN
(``--mailboxes-per-run``, default 5: 2 runs, one per core, each a catch-up of every day of the span), and
entity_graph once after them. The daemon queues, launches and watches every run; the bench only polls.
That is ``--launches backfill``. ``--launches runs`` is the UI's other way: the launchpad's "Launch run" of
the mail_to_links job once per ATOM_MAILBOXES_PER_RUN mailboxes (the same runs, with the same partition
tags), then entity_graph's "Materialize" once they succeeded: no backfill daemon, whose fixed 30 s loop
otherwise sits between launch and first run, and between the chain and the graph.

What it prints, per executor:
* ``end to end``: launch -> the backfill COMPLETED_SUCCESS as the daemon reports it; msg/s = 2,853 / that.
  The target (>= 50 msg/s) is this figure.
* the phases: launch -> first run started (the backfill daemon's loop is a fixed 30 s, so 0-30 s), the
  chain runs (first start -> last end), chain end -> graph run started (the daemon's next iteration), the
  graph run, graph end -> backfill completed (one more iteration); and the throughput while chain runs run.
* per step: seconds STEP_START -> STEP_SUCCESS, summed over the runs (from the instance's event_logs).
* CPU: the machine's busy share of its cores while the chain runs ran (/proc/stat, every process, PostgreSQL
  included): whether both cores were used.
* events: Dagster's event_logs rows for the backfill's runs, by type, and per message.
* checks: every asset check evaluation; the script exits non-zero after printing if one failed, a run did
  not succeed, a message has no extraction outcome or a mailbox-day of the span is not done for each asset.
* with ``--profile``: one more pass with the in-process executor and cProfile in every run worker (a
  ``sitecustomize`` on the run workers' PYTHONPATH, started in processes that multiprocessing spawned, i.e.
  the code server's run workers; dumped at exit). Self time by package (Dagster, atom_pipelines, SQLAlchemy
  and psycopg2, networkx, ...) and the top functions. Profiling slows what it measures: its wall time is not
  a figure. The multiprocess executor forks its step processes from a forkserver, which exit without running
  atexit, so only the in-process executor can be profiled this way; the steps run the same code.

    python bench/corpus_daemon.py [--executors in_process,multiprocess] [--launches backfill,runs]
        [--mailboxes-per-run 5] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import pstats
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from dagster import DagsterEventType  # noqa: E402
from dagster._core.events.log import EventLogEntry  # noqa: E402
from dagster._serdes import deserialize_value  # noqa: E402

from atom_pipelines.partitions import mailbox_run_tags, mailbox_runs  # noqa: E402
from atom_pipelines_tests import conftest  # noqa: E402
from atom_pipelines_tests.dagster_dev import (  # noqa: E402
    Server,
    dagster_daemon,
    dagster_webserver,
    deployment_env,
    launch_asset_backfill,
    launch_run,
    wait_for_backfill,
    wait_for_location,
    wait_for_mailboxes,
    wait_for_status,
)

EXECUTORS = ("in_process", "multiprocess")
LAUNCHES = ("backfill", "runs")
CHAIN = ("outlook_messages", "email_entities", "entity_links")
GRAPH = "entity_graph"
BACKFILL_TIMEOUT_S = 1_800
TARGET_MSG_S = 50.0

#: Started by Python itself in every process whose PYTHONPATH holds its directory: profiles the processes
#: multiprocessing spawned (the code server's run workers) when ATOM_BENCH_PROFILE_DIR is set.
SITECUSTOMIZE = """
import os, sys
_dir = os.environ.get("ATOM_BENCH_PROFILE_DIR")
if _dir and "--multiprocessing-fork" in sys.argv:
    import atexit, cProfile
    _profile = cProfile.Profile()
    _profile.enable()

    def _dump():
        _profile.disable()
        # Written aside, then renamed: a process stopped while dumping leaves no half file behind.
        path = os.path.join(_dir, f"run_worker_{os.getpid()}.prof")
        _profile.dump_stats(path + ".part")
        os.replace(path + ".part", path)

    atexit.register(_dump)
"""


class CpuSampler(threading.Thread):
    """The machine's /proc/stat CPU counters every 0.25 s, to read the busy share of any window afterwards."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int, int]] = []  # (epoch s, busy jiffies, total jiffies)
        self._done = threading.Event()

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.time(), *self._read()))
            self._done.wait(0.25)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def busy_share(self, start: float, end: float) -> float:
        """Busy share of all cores between two epoch times (the nearest samples inside the window)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return float("nan")
        (_, busy0, total0), (_, busy1, total1) = inside[0], inside[-1]
        return (busy1 - busy0) / max(1, total1 - total0)


def _day(record: dict) -> dt.date:
    return dt.datetime.fromisoformat(record["receivedDateTime"]).astimezone(dt.timezone.utc).date()


def backfill_run_ids(engine: sa.Engine, backfill_id: str) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                sa.text("select run_id from run_tags where key = 'dagster/backfill' and value = :b"), {"b": backfill_id}
            )
        )


def run_records(engine: sa.Engine, run_ids: list[str]) -> list[dict[str, Any]]:
    """The runs from the run storage: id, status, start and end (epoch s), seconds per step."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select run_id, status, start_time, end_time from runs where run_id = any(:ids) order by start_time"
            ),
            {"ids": run_ids},
        ).all()
        steps = step_seconds(conn, [r.run_id for r in rows])
    return [
        {
            "run_id": r.run_id,
            "status": r.status,
            "start": r.start_time,
            "end": r.end_time,
            "steps": steps.get(r.run_id, {}),
        }
        for r in rows
    ]


def step_seconds(conn: sa.Connection, run_ids: list[str]) -> dict[str, dict[str, float]]:
    """run id -> step key -> seconds STEP_START -> STEP_SUCCESS (or STEP_FAILURE)."""
    rows = conn.execute(
        sa.text(
            "select run_id, step_key, dagster_event_type, timestamp from event_logs where run_id = any(:ids) "
            "and dagster_event_type in ('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE') order by id"
        ),
        {"ids": run_ids},
    ).all()
    started: dict[tuple[str, str], dt.datetime] = {}
    spent: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for run_id, step_key, event_type, timestamp in rows:
        if event_type == "STEP_START":
            started[(run_id, step_key)] = timestamp
        elif (run_id, step_key) in started:
            spent[run_id][step_key] += (timestamp - started.pop((run_id, step_key))).total_seconds()
    return {run_id: dict(steps) for run_id, steps in spent.items()}


def events_and_checks(engine: sa.Engine, run_ids: list[str]) -> tuple[Counter, list[str], int]:
    """Event log rows of the runs by Dagster event type ("log message" for context.log and the managed
    loggers); the failed check evaluations (named); the number of check evaluations."""
    counts: Counter = Counter()
    failed: list[str] = []
    evaluations = 0
    with engine.connect() as conn:
        for event_type, n in conn.execute(
            sa.text("select dagster_event_type, count(*) from event_logs where run_id = any(:ids) group by 1"),
            {"ids": run_ids},
        ):
            counts[event_type or "log message"] = n
        for (event,) in conn.execute(
            sa.text("select event from event_logs where run_id = any(:ids) and dagster_event_type = :t"),
            {"ids": run_ids, "t": DagsterEventType.ASSET_CHECK_EVALUATION.value},
        ):
            evaluations += 1
            evaluation = deserialize_value(event, EventLogEntry).dagster_event.event_specific_data
            if not evaluation.passed:
                failed.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
    return counts, failed, evaluations


def store_problems(engine: sa.Engine, messages: int, mailboxes: int, span: tuple[dt.date, dt.date]) -> list[str]:
    """What the store lacks after a correct backfill of the whole corpus (empty when nothing)."""
    problems = []
    with engine.connect() as conn:
        stored = conn.execute(sa.text("select count(*) from messages")).scalar_one()
        if stored != messages:
            problems.append(f"{stored} messages stored of {messages}")
        missing = conn.execute(
            sa.text(
                "select count(*) from messages m where not exists (select 1 from extraction_outcomes o "
                "where o.mailbox = m.mailbox and o.message_id = m.message_id)"
            )
        ).scalar_one()
        if missing:
            problems.append(f"{missing} messages without an extraction outcome")
        days = (span[1] - span[0]).days + 1
        for asset in CHAIN:
            done = conn.execute(
                sa.text(
                    "select count(*) from mailbox_days where asset = :a and status = 'done' and day between :f and :l"
                ),
                {"a": asset, "f": span[0], "l": span[1]},
            ).scalar_one()
            if done != mailboxes * days:
                problems.append(f"{asset}: {done} mailbox-days done of {mailboxes * days}")
        for table in ("entities", "entity_links", "graph_nodes", "graph_edges"):
            if not conn.execute(sa.text(f"select count(*) from {table}")).scalar_one():
                problems.append(f"{table} is empty")
    return problems


def profile_summary(profile_dir: Path, top: int = 25) -> str:
    """Self time of every profiled run worker, by package and by function."""
    files = sorted(profile_dir.glob("run_worker_*.prof"))
    if not files:
        return "no profiles were written (did the run workers exit normally?)"
    stats = pstats.Stats()
    for file in files:
        stats.add(str(file))
    by_package: Counter = Counter()
    total = 0.0
    rows = []
    for (filename, line, name), (_cc, _nc, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        by_package[_package(filename, name)] += tottime
        rows.append((tottime, cumtime, f"{_short(filename)}:{line}({name})"))
    lines = [f"{len(files)} run workers, {total:.1f} s of self time profiled", "", "| package | self s | share |"]
    lines.append("|---|---|---|")
    for package, seconds in by_package.most_common():
        lines.append(f"| {package} | {seconds:.1f} | {seconds / total:.0%} |")
    lines += ["", f"top {top} functions by self time:", "| self s | cumulative s | function |", "|---|---|---|"]
    for tottime, cumtime, where in sorted(rows, reverse=True)[:top]:
        lines.append(f"| {tottime:.2f} | {cumtime:.2f} | {where} |")
    ours = sorted((r for r in rows if "atom_pipelines" in r[2]), key=lambda r: -r[1])[:15]
    lines += ["", "atom_pipelines functions by cumulative time:", "| cumulative s | function |", "|---|---|"]
    lines += [f"| {cumtime:.2f} | {where} |" for _t, cumtime, where in ours]
    return "\n".join(lines)


PACKAGES = (
    ("atom_pipelines", "atom_pipelines"),
    ("/dagster", "dagster (+ dagster_postgres, dagster_shared, ...)"),
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/psycopg2/", "psycopg2"),
    ("/networkx/", "networkx"),
    ("/pandas/", "pandas"),
    ("/PIL/", "Pillow"),
    ("/matplotlib/", "matplotlib"),
    ("/pydantic", "pydantic"),
    ("/grpc/", "grpc"),
    ("site-packages", "other libraries"),
)


def _package(filename: str, name: str) -> str:
    if filename == "~":  # a C function: name it by what it is
        for marker, package in (("psycopg2", "psycopg2"), ("_pickle", "stdlib"), ("select", "waiting (select/poll)")):
            if marker in name:
                return package
        return "builtins (C)"
    for marker, package in PACKAGES:
        if marker in filename:
            return package
    return "stdlib"


def _short(filename: str) -> str:
    for marker in ("site-packages/", "atom_pipelines/"):
        if marker in filename:
            return (
                filename.split(marker, 1)[1]
                if marker == "site-packages/"
                else "atom_pipelines/" + filename.split(marker, 1)[1]
            )
    return filename.rsplit("/", 2)[-1] if "/" in filename else filename


def registered_mailboxes(engine: sa.Engine) -> list[str]:
    """The mailbox partitions in registration order (the order Dagster's partition ranges follow)."""
    with engine.connect() as conn:
        return list(
            conn.scalars(
                sa.text("select partition from dynamic_partitions where partitions_def_name = 'mailbox' order by id")
            )
        )


def launch_and_wait(launch: str, web: Server, engine: sa.Engine, mailboxes: list[str], per_run: int) -> list[str]:
    """Launch the corpus one way or the other and wait until it is done; the run ids.

    ``backfill``: one asset backfill of the chain and entity_graph over every mailbox (the daemon's backfill
    loop plans the runs, then the graph's run once the chain's are done). ``runs``: one launchpad run of
    mail_to_links per ``per_run`` mailboxes consecutive in registration order (the partition range tags a
    backfill run carries), and entity_graph's "Materialize" as soon as they all succeeded; only the daemon's
    run queue is between a click and a run."""
    if launch == "backfill":
        backfill_id = launch_asset_backfill(web, [*CHAIN, GRAPH], mailboxes)
        wait_for_backfill(web, backfill_id, timeout_s=BACKFILL_TIMEOUT_S)
        return backfill_run_ids(engine, backfill_id)
    chunks = list(mailbox_runs(registered_mailboxes(engine), mailboxes, per_run))
    chain = [launch_run(web, "mail_to_links", mailbox_run_tags(chunk)) for chunk in chunks]
    for run_id in chain:
        wait_for_status(web, run_id, "SUCCESS", timeout_s=BACKFILL_TIMEOUT_S)
    graph = launch_run(web, "__ASSET_JOB", {}, assets=[GRAPH])
    wait_for_status(web, graph, "SUCCESS", timeout_s=BACKFILL_TIMEOUT_S)
    return [*chain, graph]


def measure(executor: str, launch: str, records: list[dict], per_run: int, profile_dir: Path | None) -> dict[str, Any]:
    mailboxes = sorted({r["mailbox"] for r in records})
    span = (min(map(_day, records)), max(map(_day, records)))
    settings = {
        "ATOM_START_DATE": span[0].isoformat(),
        "ATOM_END_DATE": (span[1] + dt.timedelta(days=1)).isoformat(),
        "ATOM_EXECUTOR": executor,
        "ATOM_MAILBOXES_PER_RUN": str(per_run),
    }
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"atom_bench_daemon_{executor}_")))
        database_url = stack.enter_context(conftest.fresh_postgres_database("atom_bench"))
        env = deployment_env(tmp, database_url, records, **settings)
        if profile_dir is not None:
            (tmp / "profile_hook").mkdir()
            (tmp / "profile_hook" / "sitecustomize.py").write_text(SITECUSTOMIZE)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp / "profile_hook"), env.get("PYTHONPATH")]))
            env["ATOM_BENCH_PROFILE_DIR"] = str(profile_dir)
        web = stack.enter_context(dagster_webserver(env, tmp))
        stack.enter_context(dagster_daemon(env, tmp))
        wait_for_location(web)
        wait_for_mailboxes(web, set(mailboxes))
        engine = sa.create_engine(
            sa.engine.make_url(database_url).set(drivername="postgresql+psycopg2"), poolclass=sa.pool.NullPool
        )
        stack.callback(engine.dispose)
        sampler = CpuSampler()
        sampler.start()
        launched = time.time()
        try:
            run_ids = launch_and_wait(launch, web, engine, mailboxes, per_run)
        finally:
            completed = time.time()
            sampler.stop()
        runs = run_records(engine, run_ids)
        counts, failed_checks, evaluations = events_and_checks(engine, run_ids)
        problems = store_problems(engine, len(records), len(mailboxes), span)
    problems += [f"run {r['run_id']} ended {r['status']}" for r in runs if r["status"] != "SUCCESS"]
    problems += [f"check {name} failed" for name in failed_checks]
    graph_runs = [r for r in runs if GRAPH in r["steps"]]
    chain_runs = [r for r in runs if GRAPH not in r["steps"]]
    if len(graph_runs) != 1:
        problems.append(f"{len(graph_runs)} entity_graph runs, not 1")
    chain_start = min(r["start"] for r in chain_runs)
    chain_end = max(r["end"] for r in chain_runs)
    graph = graph_runs[0] if graph_runs else {"start": chain_end, "end": chain_end}
    steps: Counter = Counter()
    for run in runs:
        steps.update(run["steps"])
    seconds = completed - launched
    return {
        "executor": executor,
        "launch": launch,
        "messages": len(records),
        "mailboxes": len(mailboxes),
        "span": span,
        "runs": len(runs),
        "chain_runs": len(chain_runs),
        "seconds": seconds,
        "msg_s": len(records) / seconds,
        "phases": {
            "launch -> first run started": chain_start - launched,
            "chain runs (first start -> last end)": chain_end - chain_start,
            "chain end -> graph run started": graph["start"] - chain_end,
            "graph run": graph["end"] - graph["start"],
            "graph end -> done as the UI shows it": completed - graph["end"],
        },
        "chain_msg_s": len(records) / (chain_end - chain_start),
        "chain_and_graph_msg_s": len(records) / (graph["end"] - chain_start),
        "run_seconds": {r["run_id"][:8]: r["end"] - r["start"] for r in runs},
        "steps": dict(steps),
        "cpu_busy_chain": sampler.busy_share(chain_start, chain_end),
        "cpu_busy_all": sampler.busy_share(launched, completed),
        "cores": os.cpu_count(),
        "events": dict(counts),
        "events_per_message": sum(counts.values()) / len(records),
        "check_evaluations": evaluations,
        "problems": problems,
    }


def report(r: dict[str, Any]) -> str:
    lines = [
        f"== {r['launch']}, executor {r['executor']}: {r['messages']:,} messages, {r['mailboxes']} mailboxes, "
        f"{r['span'][0]}..{r['span'][1]}, {r['chain_runs']} chain runs + 1 entity_graph run",
        f"   end to end (launch -> done): {r['seconds']:.1f} s = {r['msg_s']:.1f} msg/s "
        f"(target >= {TARGET_MSG_S:.0f}: {'met' if r['msg_s'] >= TARGET_MSG_S else 'MISSED'})",
    ]
    lines += [f"   {phase}: {seconds:.1f} s" for phase, seconds in r["phases"].items()]
    lines.append(
        f"   while the chain runs ran: {r['chain_msg_s']:.1f} msg/s; first chain start -> graph done: "
        f"{r['chain_and_graph_msg_s']:.1f} msg/s"
    )
    lines.append(
        f"   CPU busy ({r['cores']} cores, whole machine): {r['cpu_busy_chain']:.0%} while the chain runs ran, "
        f"{r['cpu_busy_all']:.0%} launch -> completed"
    )
    lines.append("   runs (start -> end): " + ", ".join(f"{k} {v:.1f} s" for k, v in r["run_seconds"].items()))
    lines.append("   steps (summed over runs): " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(r["steps"].items())))
    events = sum(r["events"].values())
    lines.append(
        f"   Dagster events: {events} = {r['events_per_message']:.3f} per message; "
        + json.dumps(dict(sorted(r["events"].items(), key=lambda kv: -kv[1])))
    )
    lines.append(f"   check evaluations: {r['check_evaluations']}, failed: {sum('check' in p for p in r['problems'])}")
    lines.append("   problems: " + ("; ".join(r["problems"]) if r["problems"] else "none (store verified)"))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executors", default=",".join(EXECUTORS), help=f"comma-separated, of {', '.join(EXECUTORS)}")
    parser.add_argument("--launches", default=",".join(LAUNCHES), help=f"comma-separated, of {', '.join(LAUNCHES)}")
    parser.add_argument("--mailboxes-per-run", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="one more pass (runs, in-process) with cProfile")
    args = parser.parse_args()
    executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    launches = [e.strip() for e in args.launches.split(",") if e.strip()]
    if unknown := [e for e in executors if e not in EXECUTORS] + [e for e in launches if e not in LAUNCHES]:
        parser.error(f"unknown {unknown}; executors: {', '.join(EXECUTORS)}; launches: {', '.join(LAUNCHES)}")
    print(f"{platform.node()}: {os.cpu_count()} cores, {platform.python_version()}, load {os.getloadavg()}", flush=True)
    records = conftest.corpus_records()
    results = []
    for launch in launches:
        for executor in executors:
            results.append(measure(executor, launch, records, args.mailboxes_per_run, None))
            print(report(results[-1]), flush=True)
    timed = list(results)
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="atom_bench_profile_") as profile_dir:
            profiled = measure("in_process", "runs", records, args.mailboxes_per_run, Path(profile_dir))
            print(f"\n== cProfile pass (runs, in_process; its wall time {profiled['seconds']:.1f} s is not a figure)")
            print(profile_summary(Path(profile_dir)), flush=True)
            results.append(profiled)
    print(f"\nload after: {os.getloadavg()}")
    print(
        "\n| launch | executor | end to end s | msg/s | launch -> first run s | chain s | chain -> graph start s "
        "| graph s | CPU busy (chain) | events/msg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in timed:
        p = r["phases"]
        print(
            f"| {r['launch']} | {r['executor']} | {r['seconds']:.1f} | {r['msg_s']:.1f} | "
            f"{p['launch -> first run started']:.1f} | {p['chain runs (first start -> last end)']:.1f} | "
            f"{p['chain end -> graph run started']:.1f} | {p['graph run']:.1f} | {r['cpu_busy_chain']:.0%} | "
            f"{r['events_per_message']:.3f} |"
        )
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
