"""Benchmark: the whole corpus as a backfill of its mailbox partitions, in one process, on SQLite and PostgreSQL.

What it runs. The 10 mailboxes of atom_pipelines_tests/corpus/enron_dev.jsonl.gz (2,853 messages), decompressed
into a temporary directory (ATOM_BENCH_CORPUS_DIR names a directory of plain ``*.jsonl`` to use instead).
ATOM_START_DATE is set to the corpus's first message day and ATOM_END_DATE to the day after its last, so a
catch-up run covers exactly the corpus's span (552 days, 10 x 552 = 5,520 mailbox-days, empty days included).
The mailboxes are registered as ``mailbox`` partitions (sorted: registration order) and run through
outlook_messages -> email_entities -> entity_links as a UI backfill's ``BackfillPolicy.multi_run`` cuts them:
runs of ATOM_MAILBOXES_PER_RUN (default 5, ``--mailboxes-per-run``) mailboxes consecutive in registration
order (``partitions.mailbox_runs``), each tagged with Dagster's partition (one mailbox) or partition range
tags (``partitions.mailbox_run_tags``) and no day tags, i.e. a catch-up of every day not done yet; then
entity_graph once. Real resources: ExportMailSource on the corpus directory, MailStore on a fresh SQLite file
or a throwaway PostgreSQL database ``atom_bench_<random>`` on 127.0.0.1:5432 (dropped afterwards),
EntityExtractor(chain="heuristic"). Dagster side: in-process ``dagster.materialize`` on the instance
``--instance`` names:
* ``sqlite`` (default): ``instance_for_test()``, a temporary DAGSTER_HOME with Dagster's SQLite run/event storage,
  which is what ``dagster dev`` uses without a dagster.yaml;
* ``postgres``: the same with dagster-postgres storage in a second throwaway database (the production setup);
* ``memory``: ``DagsterInstance.ephemeral()``, in-memory storage: an upper bound with Dagster's storage cost removed.
``--dagster-batching`` sets DAGSTER_EVENT_BATCH_SIZE=1000 (materialization events of a step written in one batch;
only dagster-postgres implements batches) and DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1 (one "planned"
event per asset per run instead of one per partition). Both are read by Dagster at run time; the output names
the instance and the two variables.

Then the baseline, in the same process and on the same store: the message days of kevin.hyatt@enron.com (its
first to its last message day) once as one run per day (explicit ``atom/first_day`` = ``atom/last_day``, what
the delta sensor and a one-day re-sync launch) and once as one run of the whole range (a date-range re-sync).
docs/architecture.md trusts ratios against a baseline in the same process more than absolute figures on a
shared machine.

How to read the output.
* ``stage`` rows: seconds spent inside each asset's step, summed over all runs, and messages/s = corpus
  messages / those seconds. Step time is STEP_START -> STEP_SUCCESS from the run's event log
  (``instance.all_logs(run_id)``), so it includes the asset's checks (evaluated in the same step), the store
  writes and the step's own materialization/check events, and excludes Dagster's per-run work (planning, run
  storage, run start/end events).
* ``dagster overhead``: the sum of every ``materialize`` call's wall time minus the step time inside it.
* ``wall``: first run start -> entity_graph done (not counting creating the database, reading the event logs
  or the verification queries afterwards). ``end-to-end`` = messages / wall; the target is >= 50 msg/s.
* ``events``: the Dagster events the instance holds for the backfill's runs, per message (``all_logs``).
* ``peak RSS``: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the process that did the backfill, read right
  after it (before the baseline). With ``--db both`` each store runs in its own child process, so each peak
  is its own; within one process ru_maxrss never goes down.
* ``checks``: every check evaluation of every run; the script exits non-zero (after printing) if a run failed,
  a check failed, a run lacked one of its assets' checks, a mailbox partition was not materialized, a message
  lacks an extraction outcome, or a mailbox-day of the span is not recorded done for each asset.

    python bench/corpus_backfill.py [--db sqlite|postgres|both] [--instance sqlite|postgres|memory]
                                    [--mailboxes-per-run N] [--dagster-batching] [--no-baseline]
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS_GZ = REPO / "atom_pipelines_tests" / "corpus" / "enron_dev.jsonl.gz"


def _corpus_day_span() -> tuple[dt.date, dt.date]:
    """The first and last UTC message day of the corpus (the gzipped one, or ATOM_BENCH_CORPUS_DIR's files),
    read before anything imports atom_pipelines."""
    bench_dir = os.environ.get("ATOM_BENCH_CORPUS_DIR")
    handles = (
        [p.open(encoding="utf-8") for p in sorted(Path(bench_dir).glob("*.jsonl"))]
        if bench_dir
        else [gzip.open(CORPUS_GZ, "rt", encoding="utf-8")]
    )
    days = set()
    for handle in handles:
        with handle:
            for line in handle:
                if line.strip():
                    try:
                        received = json.loads(line)["receivedDateTime"]
                        days.add(dt.datetime.fromisoformat(received).astimezone(dt.timezone.utc).date())
                    except (ValueError, KeyError, TypeError):
                        continue  # the pipeline quarantines it; it has no day here
    return min(days), max(days)


# Catch-up runs cover ATOM_START_DATE .. the day before ATOM_END_DATE: exactly the corpus's span. Set before
# anything imports atom_pipelines (the settings are read per call, the backfill policy at import).
FIRST_DAY, LAST_DAY = _corpus_day_span()
os.environ["ATOM_START_DATE"] = FIRST_DAY.isoformat()
os.environ["ATOM_END_DATE"] = (LAST_DAY + dt.timedelta(days=1)).isoformat()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from typing import Any  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

import sqlalchemy as sa  # noqa: E402
from dagster import (  # noqa: E402
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    ExecuteInProcessResult,
    instance_for_test,
    materialize,
)

from atom_pipelines import config  # noqa: E402
from atom_pipelines.assets import email_entities, entity_graph, entity_links, outlook_messages  # noqa: E402
from atom_pipelines.extraction.extractor import EntityExtractor  # noqa: E402
from atom_pipelines.mail.source import ExportMailSource, SourcedMessage, parse_export_line  # noqa: E402
from atom_pipelines.partitions import MAILBOX_DIMENSION, mailbox_run_tags, mailbox_runs  # noqa: E402
from atom_pipelines.store.resource import MailStore, dispose_engine  # noqa: E402
from atom_pipelines.tags import FIRST_DAY_TAG, LAST_DAY_TAG  # noqa: E402

try:  # Dagster's own warnings about beta/preview APIs are not what this measures.
    from dagster import BetaWarning, PreviewWarning

    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
except ImportError:  # pragma: no cover
    pass

sys.path.insert(0, str(REPO))  # atom_pipelines_tests is not installed: its corpus helper is imported from the checkout
from atom_pipelines_tests.conftest import ADMIN_URL, fresh_postgres_database, plain_corpus_tempdir  # noqa: E402

# The export source reads plain *.jsonl files of a directory, and the corpus ships gzipped.
CORPUS_DIR = Path(os.environ.get("ATOM_BENCH_CORPUS_DIR") or plain_corpus_tempdir())
CHAIN = [outlook_messages, email_entities, entity_links]
STAGES = ["outlook_messages", "email_entities", "entity_links", "entity_graph"]
#: Check evaluations every run of the chain must produce: every check declared on the three assets.
EXPECTED_CHECKS = {spec.name for asset_def in CHAIN for spec in asset_def.check_specs}
BASELINE_MAILBOX = "kevin.hyatt@enron.com"
#: Only the console logger's level: the event log (which the step timings come from) still gets every event.
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
DAGSTER_KNOBS = ("DAGSTER_EVENT_BATCH_SIZE", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS")
INSTANCE_KIND = "sqlite"  # set by main() from --instance
SPAN_DAYS = (LAST_DAY - FIRST_DAY).days + 1


# -- corpus -------------------------------------------------------------------------------------------


def corpus_spans() -> tuple[dict[str, tuple[dt.date, dt.date]], dict[str, int], int]:
    """Per mailbox: (first, last) message day, messages; and the number of corpus messages.

    Days come from the source's own parser, so they are the UTC days the runs use."""
    days: dict[str, list[dt.date]] = defaultdict(list)
    total = 0
    for path in sorted(CORPUS_DIR.glob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                parsed = parse_export_line(line, f"{path.name}:{number}")
                if not isinstance(parsed, SourcedMessage):
                    continue  # the pipeline must reject it too: its no_quarantined_records check fails the run
                days[parsed.mailbox].append(parsed.message.received_day)
                total += 1
    spans = {m: (min(d), max(d)) for m, d in sorted(days.items())}
    return spans, {m: len(d) for m, d in days.items()}, total


def run_plan(instance: DagsterInstance, mailboxes: Sequence[str], per_run: int) -> list[list[str]]:
    """Register ``mailboxes`` (in this order, as register_mailboxes does) and cut them into the runs a UI
    backfill of their partitions launches: ``per_run`` mailboxes consecutive in registration order."""
    known = set(instance.get_dynamic_partitions(MAILBOX_DIMENSION))
    instance.add_dynamic_partitions(MAILBOX_DIMENSION, [m for m in mailboxes if m not in known])
    registered = list(instance.get_dynamic_partitions(MAILBOX_DIMENSION))
    return list(mailbox_runs(registered, mailboxes, per_run))


# -- running ------------------------------------------------------------------------------------------


def run_chain(
    instance: DagsterInstance,
    resources: dict[str, Any],
    mailboxes: Sequence[str],
    days: tuple[dt.date, dt.date] | None = None,
) -> ExecuteInProcessResult:
    """One run of the chain over ``mailboxes`` (consecutive in registration order): a catch-up without
    ``days``, else the explicit days (first, last) as a date-range re-sync sets them."""
    tags = mailbox_run_tags(list(mailboxes))
    if days is not None:
        tags |= {FIRST_DAY_TAG: days[0].isoformat(), LAST_DAY_TAG: days[1].isoformat()}
    return materialize(CHAIN, instance=instance, resources=resources, raise_on_error=False, run_config=QUIET, tags=tags)


def verify_run(result: ExecuteInProcessResult, what: str, mailboxes: Sequence[str], tally: Counter) -> list[str]:
    """Problems with one run of the chain (empty when it is a correct run); counts into ``tally``."""
    problems = []
    if not result.success:
        failure = next((e.message for e in result.all_events if e.is_step_failure), "")
        problems.append(f"{what}: run failed ({failure})")
    evaluations = result.get_asset_check_evaluations()
    seen = Counter(e.check_name for e in evaluations)
    for name in sorted(EXPECTED_CHECKS - set(seen)):
        problems.append(f"{what}: check {name} was not evaluated")
    for evaluation in evaluations:
        tally["check_evaluations"] += 1
        if evaluation.passed:
            tally["checks_passed"] += 1
            continue
        tally["checks_failed"] += 1
        meta = {k: v.value for k, v in evaluation.metadata.items()}
        problems.append(
            f"{what}: check {evaluation.check_name} FAILED ({evaluation.severity.value}): "
            f"{evaluation.description} {json.dumps(meta.get('failures'), default=str)[:400]}"
        )
    materialized: dict[str, set[str]] = defaultdict(set)
    covered = set()
    for event in result.get_asset_materialization_events():
        if event.asset_key:
            materialized[event.asset_key.to_user_string()].add(event.partition)
            if event.asset_key.path == ["outlook_messages"]:
                # The step's metadata, repeated on the materialization of each mailbox partition of the run.
                covered.add(event.materialization.metadata["mailbox_days_covered"].value)
    tally["mailbox_days_covered"] += sum(covered)
    for asset_name in STAGES[:3]:
        tally[f"materialized_{asset_name}"] += len(materialized[asset_name])
        if materialized[asset_name] != set(mailboxes) and result.success:
            problems.append(f"{what}: {asset_name} materialized {sorted(materialized[asset_name])}, not {mailboxes}")
    return problems


def step_seconds(instance: DagsterInstance, run_id: str) -> dict[str, float]:
    """Seconds from STEP_START to STEP_SUCCESS (or STEP_FAILURE) per step, from the run's event log."""
    started: dict[str, float] = {}
    spent: dict[str, float] = defaultdict(float)
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or record.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[record.step_key] = record.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            spent[record.step_key] += record.timestamp - started.pop(record.step_key)
    return dict(spent)


def event_counts(instance: DagsterInstance, run_ids: Sequence[str]) -> Counter:
    """The instance's event log records of these runs, by Dagster event type ("log message" for the records
    without one: context.log and the managed atom_pipelines loggers)."""
    counts: Counter = Counter()
    for run_id in run_ids:
        for record in instance.all_logs(run_id):
            counts[record.dagster_event.event_type_value if record.dagster_event else "log message"] += 1
    return counts


@contextlib.contextmanager
def dagster_instance() -> Iterator[DagsterInstance]:
    """A fresh Dagster instance of the kind --instance names (see the module docstring)."""
    if INSTANCE_KIND == "memory":
        instance = DagsterInstance.ephemeral()
        try:
            yield instance
        finally:
            instance.dispose()
    elif INSTANCE_KIND == "postgres":
        admin = sa.engine.make_url(ADMIN_URL)
        with postgres_database("dagster") as url:
            storage = {
                "postgres_db": {
                    "username": admin.username or "postgres",
                    "password": admin.password or "",
                    "hostname": admin.host or "127.0.0.1",
                    "port": admin.port or 5432,
                    "db_name": sa.engine.make_url(url).database,
                    "scheme": "postgresql+psycopg2",  # SQLAlchemy 2.1 reads postgresql:// as psycopg 3
                }
            }
            with instance_for_test(overrides={"storage": {"postgres": storage}}) as instance:
                yield instance
    else:
        with instance_for_test() as instance:
            yield instance


def dagster_setup() -> str:
    knobs = ", ".join(f"{k}={os.environ[k]}" for k in DAGSTER_KNOBS if os.environ.get(k)) or "no event batching"
    return f"Dagster instance: {INSTANCE_KIND}; {knobs}"


def make_resources(url: str) -> dict[str, Any]:
    return {
        "mail_source": ExportMailSource(export_dir=str(CORPUS_DIR)),
        "store": MailStore(database_url=url),
        "extractor": EntityExtractor(chain="heuristic"),
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def backfill_corpus(label: str, url: str) -> dict[str, Any]:
    spans, per_mailbox, messages = corpus_spans()
    per_run = config.load_settings().mailboxes_per_run
    mailbox_days = len(spans) * SPAN_DAYS
    resources = make_resources(url)
    tally: Counter = Counter()
    problems: list[str] = []
    run_ids: list[str] = []
    run_wall = 0.0

    with dagster_instance() as instance, tempfile.TemporaryDirectory() as exports:
        os.environ["ATOM_GRAPH_EXPORT_DIR"] = exports
        plan = run_plan(instance, list(spans), per_run)
        print(
            f"[{label}] {messages} messages, {len(spans)} mailboxes, {FIRST_DAY}..{LAST_DAY} ({SPAN_DAYS} days, "
            f"{mailbox_days} mailbox-days), {len(plan)} catch-up runs of <= {per_run} mailboxes + entity_graph",
            flush=True,
        )
        started = time.perf_counter()
        for number, chunk in enumerate(plan, start=1):
            run_started = time.perf_counter()
            result = run_chain(instance, resources, chunk)
            run_wall += time.perf_counter() - run_started
            run_ids.append(result.run_id)
            tally["runs"] += 1
            problems += verify_run(result, f"run {number} {chunk[0]}..{chunk[-1]}", chunk, tally)
        run_started = time.perf_counter()
        graph = materialize(
            [entity_graph], instance=instance, resources=resources, raise_on_error=False, run_config=QUIET
        )
        run_wall += time.perf_counter() - run_started
        wall = time.perf_counter() - started
        peak = peak_rss_mb()
        run_ids.append(graph.run_id)
        if not graph.success:
            problems.append("entity_graph run failed")
        graph_meta = (
            {k: v.value for k, v in graph.get_asset_materialization_events()[0].materialization.metadata.items()}
            if graph.success
            else {}
        )

        stage_s: dict[str, float] = defaultdict(float)
        for run_id in run_ids:
            for step, seconds in step_seconds(instance, run_id).items():
                stage_s[step] += seconds
        events = event_counts(instance, run_ids[:-1])
        # What the instance recorded, not only what the runs returned: every mailbox partition materialized.
        stored_partitions = {a: len(instance.get_materialized_partitions(AssetKey(a))) for a in STAGES[:3]}
        for asset_name, count in stored_partitions.items():
            if count != len(spans):
                problems.append(f"the instance records {count} materialized {asset_name} partitions of {len(spans)}")

    counts = table_counts(url)
    problems += store_problems(counts, messages, len(spans))
    if tally["mailbox_days_covered"] != mailbox_days:
        problems.append(f"outlook_messages covered {tally['mailbox_days_covered']} mailbox-days of {mailbox_days}")
    return {
        "store": label,
        "dagster": dagster_setup(),
        "messages": messages,
        "mailboxes": len(spans),
        "mailbox_days": tally["mailbox_days_covered"],
        "materialized": {a: tally[f"materialized_{a}"] for a in STAGES[:3]},
        "materialized_in_instance": stored_partitions,
        "runs": tally["runs"] + 1,
        "chain_runs": tally["runs"],
        "per_run": per_run,
        "wall_s": wall,
        "run_wall_s": run_wall,
        "stage_s": dict(stage_s),
        "events": dict(events),
        "peak_rss_mb": peak,
        "check_evaluations": tally["check_evaluations"],
        "checks_passed": tally["checks_passed"],
        "checks_failed": tally["checks_failed"],
        "counts": counts,
        "graph": {k: graph_meta.get(k) for k in ("nodes", "edges", "components")},
        "problems": problems,
    }


def table_counts(url: str) -> dict[str, Any]:
    """Row counts of the store, messages without an extraction outcome, and mailbox_days per (asset, status)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            counts: dict[str, Any] = {
                t: conn.execute(sa.text(f"select count(*) from {t}")).scalar_one()
                for t in ("messages", "extraction_outcomes", "entities", "entity_links")
            }
            counts["mailbox_days_with_mail"] = conn.execute(
                sa.text("select count(*) from (select distinct mailbox, day from messages) p")
            ).scalar_one()
            counts["messages_without_outcome"] = conn.execute(
                sa.text(
                    "select count(*) from messages m where not exists (select 1 from extraction_outcomes o "
                    "where o.mailbox = m.mailbox and o.message_id = m.message_id)"
                )
            ).scalar_one()
            counts["progress"] = {
                f"{asset}/{status}": n
                for asset, status, n in conn.execute(
                    sa.text(
                        "select asset, status, count(*) from mailbox_days where day between :a and :b "
                        "group by asset, status order by asset, status"
                    ),
                    {"a": FIRST_DAY, "b": LAST_DAY},
                )
            }
            return counts
    finally:
        engine.dispose()


def store_problems(counts: dict[str, Any], messages: int, mailboxes: int) -> list[str]:
    """What the store must hold after the corpus went through: every message, each with an extraction outcome,
    and every mailbox-day of the span done (none failed) for each asset of the chain."""
    problems = []
    if counts["messages"] != messages:
        problems.append(f"{counts['messages']} messages stored of {messages}")
    if counts["messages_without_outcome"]:
        problems.append(f"{counts['messages_without_outcome']} stored messages have no extraction outcome")
    expected = {f"{asset}/done": mailboxes * SPAN_DAYS for asset in STAGES[:3]}
    if counts["progress"] != expected:
        problems.append(f"mailbox_days {counts['progress']}, expected {expected}")
    return problems


def baseline(url: str) -> dict[str, Any]:
    """One mailbox's message days again: one run per day vs one run of the range, same process, same store."""
    spans, per_mailbox, _ = corpus_spans()
    first, last = spans[BASELINE_MAILBOX]
    days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    resources = make_resources(url)
    tally: Counter = Counter()
    problems: list[str] = []
    with dagster_instance() as instance, tempfile.TemporaryDirectory() as exports:
        os.environ["ATOM_GRAPH_EXPORT_DIR"] = exports
        run_plan(instance, [BASELINE_MAILBOX], 1)
        # Both modes replace rows that exist (the store already holds this mailbox after the corpus run).
        started = time.perf_counter()
        for day in days:
            result = run_chain(instance, resources, [BASELINE_MAILBOX], (day, day))
            problems += verify_run(result, f"baseline {day}", [BASELINE_MAILBOX], tally)
        per_day = time.perf_counter() - started
        started = time.perf_counter()
        result = run_chain(instance, resources, [BASELINE_MAILBOX], (first, last))
        problems += verify_run(result, f"baseline {first}..{last}", [BASELINE_MAILBOX], tally)
        one_run = time.perf_counter() - started
    return {
        "mailbox": BASELINE_MAILBOX,
        "messages": per_mailbox[BASELINE_MAILBOX],
        "days": len(days),
        "per_day_runs": len(days),
        "per_day_s": per_day,
        "one_run_s": one_run,
        "speedup": per_day / one_run,
        "check_evaluations": tally["check_evaluations"],
        "checks_failed": tally["checks_failed"],
        "problems": problems,
    }


# -- stores -------------------------------------------------------------------------------------------


def with_sqlite(fn: Callable[[str], Any]) -> Any:
    with tempfile.TemporaryDirectory(prefix="atom_bench_") as tmp:
        url = f"sqlite:///{tmp}/store.sqlite"
        try:
            return fn(url)
        finally:
            dispose_engine(url)


@contextlib.contextmanager
def postgres_database(purpose: str) -> Iterator[str]:
    """A fresh database ``atom_bench_<random>`` on the server of ADMIN_URL (the tests' helper), dropped afterwards."""
    name = None
    try:
        with fresh_postgres_database("atom_bench") as url:
            name = sa.engine.make_url(url).database
            print(f"[{purpose}] created PostgreSQL database {name}", flush=True)
            yield url
    finally:
        if name is not None:
            print(f"[{purpose}] dropped PostgreSQL database {name}", flush=True)


def with_postgres(fn: Callable[[str], Any]) -> Any:
    with postgres_database("store") as url:
        return fn(url)


def bench_one(db: str, with_baseline: bool) -> dict[str, Any]:
    def body(url: str) -> dict[str, Any]:
        result = backfill_corpus("SQLite" if db == "sqlite" else "PostgreSQL", url)
        print_store(result)
        if with_baseline:
            result["baseline"] = baseline(url)
            print_baseline(result["store"], result["baseline"])
        return result

    return with_sqlite(body) if db == "sqlite" else with_postgres(body)


# -- output -------------------------------------------------------------------------------------------


def rate(messages: int, seconds: float | None) -> str:
    return f"{messages / seconds:,.0f}" if seconds else "-"


def events_line(events: dict[str, int], messages: int) -> str:
    total = sum(events.values())
    top = ", ".join(f"{name} {n}" for name, n in sorted(events.items(), key=lambda kv: -kv[1]))
    return f"{total} events, {total / messages:.3f} per message ({top})"


def print_store(r: dict[str, Any]) -> None:
    steps = sum(r["stage_s"].values())
    print(f"[{r['store']}] {r['dagster']}")
    print(f"[{r['store']}] stage timings: STEP_START -> STEP_SUCCESS from instance.all_logs(run_id), summed over runs")
    for stage in STAGES:
        seconds = r["stage_s"].get(stage)
        print(f"  {stage:<17} {seconds or 0:8.2f} s  {rate(r['messages'], seconds):>8} msg/s")
    print(
        f"  {'dagster overhead':<17} {r['run_wall_s'] - steps:8.2f} s  "
        f"({(r['run_wall_s'] - steps) / r['runs']:.3f} s/run over {r['runs']} runs)"
    )
    print(
        f"  wall {r['wall_s']:.2f} s, end to end {r['messages'] / r['wall_s']:.1f} msg/s "
        f"(target >= 50), peak RSS {r['peak_rss_mb']:.0f} MB"
    )
    print(
        f"  runs {r['runs']} ({r['chain_runs']} catch-up runs of <= {r['per_run']} mailboxes + 1 entity_graph); "
        f"mailbox-days {r['mailbox_days']} ({r['counts']['mailbox_days_with_mail']} with mail); mailbox partitions "
        f"materialized per asset {r['materialized']} (instance records {r['materialized_in_instance']})"
    )
    print(f"  Dagster events of the chain's runs: {events_line(r['events'], r['messages'])}")
    print(
        f"  checks: {r['checks_passed']}/{r['check_evaluations']} evaluations passed, {r['checks_failed']} failed; "
        f"rows: {r['counts']}; graph {r['graph']}"
    )
    for problem in r["problems"][:20]:
        print(f"  PROBLEM: {problem}")
    sys.stdout.flush()


def print_baseline(store: str, b: dict[str, Any]) -> None:
    print(
        f"[{store}] baseline {b['mailbox']} ({b['messages']} messages, {b['days']} days): "
        f"one run per day {b['per_day_s']:.1f} s ({b['per_day_runs']} runs, "
        f"{b['per_day_s'] / b['per_day_runs']:.3f} s/run, {b['messages'] / b['per_day_s']:.1f} msg/s); "
        f"one run of the range {b['one_run_s']:.1f} s ({b['messages'] / b['one_run_s']:.1f} msg/s); "
        f"speed-up x{b['speedup']:.1f}; {b['checks_failed']} of {b['check_evaluations']} check evaluations failed"
    )
    for problem in b["problems"][:20]:
        print(f"  PROBLEM: {problem}")
    sys.stdout.flush()


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    mem_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return f"{os.cpu_count()} cores ({model}), {mem_kb / 1024 / 1024:.1f} GiB RAM, Python {platform.python_version()}"


def load_average() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def print_table(results: list[dict[str, Any]]) -> None:
    print()
    print(f"Machine: {machine()}; {load_average()} at the end.")
    print("Stage msg/s from STEP_START -> STEP_SUCCESS event timestamps; end-to-end over the whole backfill.")
    print()
    header = [
        "store",
        "Dagster instance",
        "mailboxes/run",
        "runs",
        "mailbox-days",
        "messages",
        *(f"{s} msg/s" for s in STAGES),
        "wall s",
        "end-to-end msg/s",
        "events/msg",
        "peak RSS MB",
        "checks passed",
        "1 run/day -> 1 run",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        b = r.get("baseline")
        speed = f"x{b['speedup']:.1f} ({b['per_day_s']:.0f} s -> {b['one_run_s']:.1f} s)" if b else "-"
        cells = [
            r["store"],
            r["dagster"].removeprefix("Dagster instance: "),
            r["per_run"],
            r["runs"],
            r["mailbox_days"],
            r["messages"],
            *(rate(r["messages"], r["stage_s"].get(s)) for s in STAGES),
            f"{r['wall_s']:.1f}",
            f"{r['messages'] / r['wall_s']:.1f}",
            f"{sum(r['events'].values()) / r['messages']:.2f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['checks_passed']}/{r['check_evaluations']}",
            speed,
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")


# -- main ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--instance",
        choices=["sqlite", "postgres", "memory"],
        default="sqlite",
        help="Dagster instance storage (default: instance_for_test, SQLite in a temp dir)",
    )
    parser.add_argument(
        "--mailboxes-per-run", type=int, default=None, help="ATOM_MAILBOXES_PER_RUN for this run (default: 5)"
    )
    parser.add_argument(
        "--dagster-batching",
        action="store_true",
        help="set DAGSTER_EVENT_BATCH_SIZE=1000 and DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-run-per-day baseline")
    parser.add_argument("--result-file", help=argparse.SUPPRESS)  # child mode: write the result as JSON here
    args = parser.parse_args()
    global INSTANCE_KIND
    INSTANCE_KIND = args.instance
    if args.mailboxes_per_run is not None:
        os.environ["ATOM_MAILBOXES_PER_RUN"] = str(args.mailboxes_per_run)
    if args.dagster_batching:
        os.environ["DAGSTER_EVENT_BATCH_SIZE"] = "1000"
        os.environ["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] = "1"

    if args.db == "both":
        # One child process per store, so that each peak RSS and each warm-up is that store's own.
        results = []
        for db in ("sqlite", "postgres"):
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                command = [sys.executable, __file__, "--db", db, "--instance", args.instance, "--result-file", out.name]
                if args.mailboxes_per_run is not None:
                    command += ["--mailboxes-per-run", str(args.mailboxes_per_run)]
                if args.dagster_batching:
                    command.append("--dagster-batching")
                if args.no_baseline:
                    command.append("--no-baseline")
                code = subprocess.run(command, check=False).returncode
                text = Path(out.name).read_text()
                if text:
                    results.append(json.loads(text))
                if code:
                    print(f"FAILED: the {db} benchmark exited {code}", file=sys.stderr)
                    if results:
                        print_table(results)
                    return code
        print_table(results)
        return 0

    print(f"{load_average()} at the start", flush=True)
    result = bench_one(args.db, not args.no_baseline)
    if args.result_file:
        Path(args.result_file).write_text(json.dumps(result, default=str))
    else:
        print_table([result])
    problems = result["problems"] + result.get("baseline", {}).get("problems", [])
    if problems:
        print(f"FAILED: {len(problems)} problem(s); first: {problems[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
