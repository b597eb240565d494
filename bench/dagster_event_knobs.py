"""Benchmark: what Dagster's own event writes cost a backfill, and what its two batching variables buy.

One mailbox's span (default sally.beck@enron.com: 735 messages, 300 mailbox-days, 10 runs of <= 31 days) is
materialized again and again in ONE process, on one Dagster instance and one store, alternating settings of
* DAGSTER_EVENT_BATCH_SIZE (materialization events of a step written as one batch; only dagster-postgres
  implements batch writes, elsewhere it falls back to one write per event), and
* DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS (one ASSET_MATERIALIZATION_PLANNED event per asset per run
  instead of one per partition; Dagster's source says that partitions of a failed run are then not marked
  failed),
both read by Dagster at run time, so the settings can alternate inside one process (docs/architecture.md: ratios
against a baseline in the same process are what we trust on a shared machine). Rounds interleave the settings
so drift in the machine's load hits each alike; the best round of each counts.

How to read the output: seconds and messages/s per setting, and the speed-up over "none" (no variable set).

    python bench/dagster_event_knobs.py [--instance postgres|sqlite] [--db postgres|sqlite] [--rounds N]
"""

from __future__ import annotations

import os

os.environ["ATOM_START_DATE"] = "2000-12-01"
os.environ["ATOM_END_DATE"] = "2002-07-01"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import corpus_backfill as cb  # noqa: E402

from atom_pipelines import config  # noqa: E402
from atom_pipelines.partitions import MAILBOX_DIMENSION  # noqa: E402

SETTINGS = {
    "none": {},
    "batch size 1000": {"DAGSTER_EVENT_BATCH_SIZE": "1000"},
    "planned subset": {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"},
    "both": {"DAGSTER_EVENT_BATCH_SIZE": "1000", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"},
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instance", choices=["postgres", "sqlite", "memory"], default="postgres")
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--mailbox", default="sally.beck@enron.com")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cb.INSTANCE_KIND = args.instance
    for name in cb.DAGSTER_KNOBS:
        os.environ.pop(name, None)

    def body(url: str) -> int:
        spans, per_mailbox, _ = cb.corpus_spans()
        first, last = spans[args.mailbox]
        plan = cb.chunks(first, last, config.load_settings().max_partitions_per_run)
        messages, partitions = per_mailbox[args.mailbox], (last - first).days + 1
        resources = cb.make_resources(url)
        best: dict[str, float] = {}
        problems: list[str] = []
        with cb.dagster_instance() as instance:
            instance.add_dynamic_partitions(MAILBOX_DIMENSION, [args.mailbox])
            cb.run_chain(instance, resources, args.mailbox, *plan[0])  # warm-up
            for number in range(args.rounds):
                for label, env in SETTINGS.items():
                    for name in cb.DAGSTER_KNOBS:
                        os.environ.pop(name, None)
                    os.environ.update(env)
                    started = time.perf_counter()
                    for a, b in plan:
                        result = cb.run_chain(instance, resources, args.mailbox, a, b)
                        problems += cb.verify_run(result, f"{label} {a}..{b}", (b - a).days + 1, cb.Counter())
                    seconds = time.perf_counter() - started
                    best[label] = min(best.get(label, seconds), seconds)
                    print(f"  round {number + 1} {label:<16} {seconds:6.1f} s", flush=True)
        for name in cb.DAGSTER_KNOBS:
            os.environ.pop(name, None)
        print()
        print(
            f"{args.mailbox}: {messages} messages, {partitions} partitions, {len(plan)} runs; Dagster instance "
            f"{args.instance}, store {args.db}; best of {args.rounds}; {cb.machine()}"
        )
        print("| Dagster event setting | seconds | msg/s | speed-up |")
        print("|---|---|---|---|")
        for label in SETTINGS:
            print(f"| {label} | {best[label]:.1f} | {messages / best[label]:.1f} | x{best['none'] / best[label]:.2f} |")
        for problem in problems[:10]:
            print(f"PROBLEM: {problem}")
        return 1 if problems else 0

    return (cb.with_sqlite if args.db == "sqlite" else cb.with_postgres)(body)


if __name__ == "__main__":
    sys.exit(main())
