"""Benchmark: the corpus backfill through the daemon, by executor: Celery with 1 and 2 workers vs the
multiprocess and in-process executors (issue 12).

What it runs, per configuration, each from scratch: a throwaway PostgreSQL database (instance and store, as
production), a fresh DAGSTER_HOME with the repo's dagster.yaml, the corpus as the export
(atom_pipelines_tests/corpus/enron_dev.jsonl.gz: 10 mailboxes, 2,853 messages), ATOM_START_DATE/ATOM_END_DATE
set to the corpus's span, the heuristic extractor; real ``dagster-webserver`` and ``dagster-daemon`` (the
test helpers of atom_pipelines_tests/dagster_dev.py) and, for Celery, real worker processes
(atom_pipelines_tests/celery_workers.py) in a throwaway RabbitMQ vhost. Once the daemon has registered the
10 mailboxes, one UI backfill of the three partitioned assets over all of them (``launchPartitionBackfill``):
runs of ATOM_MAILBOXES_PER_RUN mailboxes (default 5: 2 runs), each a catch-up of every day of the span.

What it prints: per configuration, the seconds from the backfill's launch to its completion as the backfill
daemon reports it (which ticks every 30 s, for every configuration alike), msg/s = 2,853 / those seconds,
and the sum of the runs' own durations (run start -> end); then a markdown table.

    python bench/celery_throughput.py [--configs celery1,celery2,multiprocess,in_process] [--concurrency 1]

Needs PostgreSQL (ATOM_TEST_POSTGRES_URL), RabbitMQ on 127.0.0.1:5672 and ``rabbitmqctl`` (a vhost per run).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from atom_pipelines_tests import conftest  # noqa: E402
from atom_pipelines_tests.celery_workers import celery_workers, launch_mailbox_backfill, rabbitmq_vhost  # noqa: E402
from atom_pipelines_tests.dagster_dev import (  # noqa: E402
    dagster_daemon,
    dagster_webserver,
    deployment_env,
    graphql,
    runs_tagged,
    wait_for_backfill,
    wait_for_location,
    wait_for_mailboxes,
)

CONFIGS = ("celery1", "celery2", "multiprocess", "in_process")
BACKFILL_TIMEOUT_S = 3_600

RUN_TIMES = """
query RunTimes($runId: ID!) { runOrError(runId: $runId) { ... on Run { startTime endTime } } }
"""


def _day(record: dict) -> dt.date:
    return dt.datetime.fromisoformat(record["receivedDateTime"]).astimezone(dt.timezone.utc).date()


def measure(config: str, records: list[dict], concurrency: int) -> dict[str, float]:
    mailboxes = sorted({r["mailbox"] for r in records})
    first, last = min(map(_day, records)), max(map(_day, records))
    span = {"ATOM_START_DATE": first.isoformat(), "ATOM_END_DATE": (last + dt.timedelta(days=1)).isoformat()}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"atom_bench_celery_{config}_")))
        database_url = stack.enter_context(conftest.fresh_postgres_database("atom_bench"))
        settings = dict(span)
        workers = 0
        if config.startswith("celery"):
            workers = int(config.removeprefix("celery"))
            vhost = stack.enter_context(rabbitmq_vhost("atom_bench"))
            settings.update(ATOM_EXECUTOR="celery", ATOM_CELERY_BROKER_URL=vhost.broker_url())
        else:
            settings.update(ATOM_EXECUTOR=config)
        env = deployment_env(tmp, database_url, records, **settings)
        if workers:
            stack.enter_context(celery_workers(env, tmp, count=workers, concurrency=concurrency))
        web = stack.enter_context(dagster_webserver(env, tmp))
        stack.enter_context(dagster_daemon(env, tmp))
        wait_for_location(web)
        wait_for_mailboxes(web, set(mailboxes))
        launched = time.monotonic()
        backfill_id = launch_mailbox_backfill(web, mailboxes)
        wait_for_backfill(web, backfill_id, timeout_s=BACKFILL_TIMEOUT_S)
        seconds = time.monotonic() - launched
        runs = runs_tagged(web, {"dagster/backfill": backfill_id})
        run_seconds = 0.0
        for run in runs:
            times = graphql(web, RUN_TIMES, {"runId": run["runId"]})["runOrError"]
            run_seconds += times["endTime"] - times["startTime"]
    return {"seconds": seconds, "msg_s": len(records) / seconds, "runs": len(runs), "run_seconds": run_seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--concurrency", type=int, default=1, help="processes per Celery worker")
    args = parser.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    records = conftest.corpus_records()
    results = {}
    for config in configs:
        print(f"== {config}: starting", flush=True)
        results[config] = measure(config, records, args.concurrency)
        r = results[config]
        print(
            f"== {config}: {r['seconds']:.1f} s, {r['msg_s']:.2f} msg/s, {r['runs']} runs "
            f"({r['run_seconds']:.1f} run-seconds)",
            flush=True,
        )
    print(f"\n{len(records):,} messages, {args.concurrency} process(es) per Celery worker, through the daemon\n")
    print("| executor | backfill s (launch -> done) | msg/s | runs | sum of run durations s |")
    print("|---|---|---|---|---|")
    for config, r in results.items():
        print(f"| {config} | {r['seconds']:.1f} | {r['msg_s']:.2f} | {r['runs']} | {r['run_seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
