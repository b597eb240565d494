"""Profile one mailbox's batched backfill (the chain over its whole span, in runs of ATOM_MAX_PARTITIONS_PER_RUN days).

    python bench/profile_mailbox.py [--db sqlite|postgres] [--mailbox ADDRESS] [--top N] [--out FILE.prof]

Runs the whole corpus backfill's first steps for one mailbox under cProfile, after one untimed warm-up run
of the same mailbox (so the export index scan and imports are not in the profile), and prints the top
functions by cumulative time, then by own time.
"""

from __future__ import annotations

import os

os.environ["ATOM_START_DATE"] = "2000-12-01"
os.environ["ATOM_END_DATE"] = "2002-07-01"

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import corpus_backfill as cb  # noqa: E402
from dagster import instance_for_test  # noqa: E402

from atom_pipelines import config  # noqa: E402
from atom_pipelines.partitions import MAILBOX_DIMENSION  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--mailbox", default="sally.beck@enron.com")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    def body(url: str) -> None:
        spans, per_mailbox, _ = cb.corpus_spans()
        first, last = spans[args.mailbox]
        plan = cb.chunks(first, last, config.max_partitions_per_run())
        resources = cb.make_resources(url)
        with instance_for_test() as instance:
            instance.add_dynamic_partitions(MAILBOX_DIMENSION, [args.mailbox])
            cb.run_chain(instance, resources, args.mailbox, *plan[0])  # warm-up: imports, export index, tables
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            for a, b in plan:
                result = cb.run_chain(instance, resources, args.mailbox, a, b)
                assert result.success
            profiler.disable()
            wall = time.perf_counter() - started
        print(f"{args.mailbox}: {per_mailbox[args.mailbox]} messages, {len(plan)} runs, {wall:.1f} s under cProfile "
              f"on {args.db}")
        stats = pstats.Stats(profiler)
        if args.out:
            stats.dump_stats(args.out)
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)

    (cb.with_sqlite if args.db == "sqlite" else cb.with_postgres)(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
