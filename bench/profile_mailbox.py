"""Profile one mailbox's batched backfill (the chain over its whole span, in runs of ATOM_MAX_PARTITIONS_PER_RUN days).

    python bench/profile_mailbox.py [--db sqlite|postgres] [--instance sqlite|postgres|memory] [--dagster-batching]
                                    [--mailbox ADDRESS] [--top N] [--out FILE.prof]

Runs one mailbox's span (first to last message day) as corpus_backfill.py does, under cProfile, after one
untimed warm-up run of its first chunk (so imports, the export index scan and table creation are not in the
profile), and prints a summary (the share of time in the asset bodies, in Dagster's run creation with its
"planned" events, in its materialization events and in all event writes), then the top functions by
cumulative time and by own time. ``--instance``/``--dagster-batching`` as in corpus_backfill.py.
cProfile sees only the main thread: the extractor's worker threads show as the main thread waiting.
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

from atom_pipelines import config  # noqa: E402
from atom_pipelines.partitions import MAILBOX_DIMENSION  # noqa: E402

SUMMARY = [
    (
        "asset bodies (the three partitioned assets)",
        lambda f, name: (
            # assets/ is a package since the assets split into one module per family.
            "/atom_pipelines/assets/" in f and name in ("outlook_messages", "email_entities", "entity_links")
        ),
    ),
    (
        "Dagster create_run (incl. 'planned' events)",
        lambda f, name: f.endswith("runs/run_domain.py") and name == "create_run",
    ),
    (
        "Dagster ASSET_MATERIALIZATION events",
        lambda f, name: f.endswith("dagster/_core/events/__init__.py") and name == "asset_materialization",
    ),
    (
        "Dagster event writes, all (handle_new_event)",
        lambda f, name: f.endswith("methods/event_methods.py") and name == "handle_new_event",
    ),
]


def summary(stats: pstats.Stats) -> None:
    total = stats.total_tt
    for label, match in SUMMARY:
        seconds = sum(v[3] for (f, _line, name), v in stats.stats.items() if match(f, name))
        print(f"  {label:<48} {seconds:7.1f} s {100 * seconds / total:5.0f}%")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--mailbox", default="sally.beck@enron.com")
    parser.add_argument("--instance", choices=["sqlite", "postgres", "memory"], default="sqlite")
    parser.add_argument("--dagster-batching", action="store_true")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cb.INSTANCE_KIND = args.instance
    if args.dagster_batching:
        os.environ["DAGSTER_EVENT_BATCH_SIZE"] = "1000"
        os.environ["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] = "1"

    def body(url: str) -> None:
        spans, per_mailbox, _ = cb.corpus_spans()
        first, last = spans[args.mailbox]
        plan = cb.chunks(first, last, config.load_settings().max_partitions_per_run)
        resources = cb.make_resources(url)
        with cb.dagster_instance() as instance:
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
        print(
            f"{args.mailbox}: {per_mailbox[args.mailbox]} messages, {(last - first).days + 1} partitions, "
            f"{len(plan)} runs, {wall:.1f} s under cProfile; store {args.db}; {cb.dagster_setup()}"
        )
        stats = pstats.Stats(profiler)
        summary(stats)
        if args.out:
            stats.dump_stats(args.out)
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)

    (cb.with_sqlite if args.db == "sqlite" else cb.with_postgres)(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
