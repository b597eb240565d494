"""Runs' steps go to Celery workers (issue 12, items 4 and 5), on the real deployment.

``dagster-webserver`` and ``dagster-daemon`` run on a PostgreSQL instance with ``ATOM_EXECUTOR=celery``;
real Celery worker processes (``celery -A atom_pipelines.deployment.celery_worker worker``, as
docs/runbook/celery.md tells operators) take the steps from RabbitMQ on 127.0.0.1, in a throwaway vhost
with a user of its own per test, so tests never see each other's tasks. What these tests protect:

- the broker URL's password is never shown: not in the run's config, its events, or any process's log;
- a broker that goes away fails the run loudly, naming the broker (password masked), within seconds rather
  than hanging, whether it is gone when the run sends a step or lost while a worker runs one; the next run
  (or run_retries' retry of the failed one) succeeds once it is back (a TCP proxy in front of RabbitMQ stands
  in for the broker, so RabbitMQ itself, which others use, is never stopped);
- a corpus backfill through two workers stores exactly the rows of an in-process run (no hash seed pinned:
  each process hashes strings its own way, as in production);
- a worker SIGKILLed mid-step: the broker hands the unacknowledged step to the other worker (late
  acknowledgement, ``executors.CELERY_CONFIG_SOURCE``) and the run ends with the same rows;
- Graph's 4 concurrent requests per mailbox and the ``openai`` pool hold across workers.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from dagster import (
    instance_for_test,
    materialize,
)

from atom_pipelines.assets import PARTITIONED_CHAIN
from atom_pipelines.deployment.executors import BROKER_VARIABLE, BROKER_WAIT_S
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.partitions import MAILBOX_DIMENSION, mailbox_run_tags, mailbox_runs
from atom_pipelines.tags import FIRST_DAY_TAG, LAST_DAY_TAG, PARTITION_TAG
from atom_pipelines_tests import conftest
from atom_pipelines_tests.celery_workers import (
    RABBITMQ_HOST,
    RABBITMQ_PORT,
    VOLATILE_COLUMNS,
    CeleryWorker,
    Vhost,
    busy_workers,
    celery_steps,
    celery_workers,
    launch_mailbox_backfill,
    launch_mailbox_days,
    max_overlap,
    queue_depths,
    rabbitmq_vhost,
    run_config_yaml,
    step_intervals,
    steps_succeeded,
    store_rows,
    tcp_proxy,
)
from atom_pipelines_tests.conftest import corpus_records
from atom_pipelines_tests.dagster_dev import (
    Server,
    dagster_daemon,
    dagster_webserver,
    deployment_env,
    launch_run,
    run_errors,
    run_messages,
    run_status,
    runs_tagged,
    wait_for_backfill,
    wait_for_location,
    wait_for_mailboxes,
    wait_for_status,
)
from atom_pipelines_tests.helpers import resources
from atom_pipelines_tests.servers.graph_server import GraphServer
from atom_pipelines_tests.servers.openai_server import Behaviour, OpenAICompatibleServer

#: An unpartitioned one-step job: what the broker tests run, whatever the partition scheme.
KEY_STATUS_JOB = "llm_key_status_refresh"
KEY_STATUS_STEP = "llm_key_status"
#: A run whose broker is gone fails within this: its worker's start, then BROKER_WAIT_S of connection attempts.
BROKER_GONE_FAILS_WITHIN_S = BROKER_WAIT_S + 60
#: Workers reconnect with Celery's backoff (2 s, 4 s, ... capped); a run launched after the broker is
#: back must succeed within this.
BROKER_BACK_BOUND_S = 120
#: The whole corpus through the daemon's backfill and two workers on 2 shared cores.
CORPUS_TIMEOUT_S = 900


@pytest.fixture
def vhost() -> Iterator[Vhost]:
    with rabbitmq_vhost() as made:
        yield made


def _celery_env(tmp_path: Path, postgres_database_url: str, broker_url: str, records: list[dict], **settings: str):
    return deployment_env(
        tmp_path,
        postgres_database_url,
        records,
        ATOM_EXECUTOR="celery",
        ATOM_CELERY_BROKER_URL=broker_url,
        **settings,
    )


def _logs(tmp_path: Path) -> dict[str, str]:
    return {path.name: path.read_text(errors="replace") for path in tmp_path.glob("*.log")}


def _assert_password_never_shown(vhost: Vhost, tmp_path: Path, web, run_ids: list[str]) -> None:  # noqa: ANN001
    for run_id in run_ids:
        assert vhost.password not in run_config_yaml(web, run_id)
        shown = [m for m in run_messages(web, run_id) if vhost.password in m]
        assert not shown, f"run {run_id} shows the broker password: {shown}"
    for name, text in _logs(tmp_path).items():
        assert vhost.password not in text, f"{name} shows the broker password"


# -- The deployment ---------------------------------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.postgres
def test_a_broker_that_goes_away_fails_the_run_loudly_and_the_next_run_succeeds_once_it_is_back(
    tmp_path: Path, postgres_database_url: str, vhost: Vhost
) -> None:
    timings: dict[str, float] = {}
    with tcp_proxy((RABBITMQ_HOST, RABBITMQ_PORT)) as proxy:
        env = _celery_env(tmp_path, postgres_database_url, vhost.broker_url(proxy.port), [])
        masked = f"amqp://{vhost.user}:**@{RABBITMQ_HOST}:{proxy.port}/{vhost.name}"
        with (
            celery_workers(env, tmp_path, count=2),
            dagster_webserver(env, tmp_path) as web,
            dagster_daemon(env, tmp_path),
        ):
            wait_for_location(web)
            healthy = launch_run(web, KEY_STATUS_JOB)
            wait_for_status(web, healthy, "SUCCESS")
            assert celery_steps(web, healthy) == [KEY_STATUS_STEP], "the step did not run in a Celery worker"

            proxy.stop()
            gone_at = time.monotonic()
            failed = launch_run(web, KEY_STATUS_JOB)
            timings["broker gone -> run FAILURE"] = wait_for_status(
                web, failed, "FAILURE", timeout_s=BROKER_GONE_FAILS_WITHIN_S
            )
            # It kept trying for BROKER_WAIT_S before it gave up: a broker restart does not fail it.
            assert timings["broker gone -> run FAILURE"] >= BROKER_WAIT_S, timings
            errors = run_errors(web, failed)
            assert f"Celery broker {masked} ({BROKER_VARIABLE}) unreachable" in errors, errors
            assert celery_steps(web, failed) == []

            proxy.start()
            back_at = time.monotonic()
            recovered = launch_run(web, KEY_STATUS_JOB)
            wait_for_status(web, recovered, "SUCCESS", timeout_s=BROKER_BACK_BOUND_S)
            timings["broker back -> next run SUCCESS"] = time.monotonic() - back_at
            timings["broker gone for"] = back_at - gone_at
            assert celery_steps(web, recovered) == [KEY_STATUS_STEP]
            _assert_password_never_shown(vhost, tmp_path, web, [healthy, failed, recovered])
    print({name: round(seconds, 1) for name, seconds in timings.items()})


@pytest.mark.server
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_a_broker_lost_mid_step_fails_the_run_naming_the_broker_and_its_automatic_retry_ends_with_the_clean_rows(
    tmp_path: Path, postgres_database_url: str, clean_database_url: str, vhost: Vhost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker goes away for a few seconds while a worker runs a step: the run worker's result reply queue
    and the worker's unacknowledged task both live on the broker. What happens (measured here): the run
    worker's wait on the result fails at once (amqp's ``OSError``), so the run ends FAILURE naming the broker
    (password masked) instead of waiting for a result that can no longer come. It failed in the executor,
    not in a step, so run_retries (dagster.yaml) re-executes it from failure, and that retry succeeds once the
    broker is back. Meanwhile the broker, back, hands the unacknowledged step to a worker again; if its run
    has ended by then the step refuses to run (``refuse_if_run_ended``), since run after the retry's later
    steps it would clear their progress (it once left 45 mailbox-days of entity_links missing in CI). Either
    way the store ends with exactly the rows of a clean in-process run, progress included."""
    records = corpus_records({KILLED_MAILBOX})
    with tcp_proxy((RABBITMQ_HOST, RABBITMQ_PORT)) as proxy, OpenAICompatibleServer(accepted_keys={LLM_KEY}) as llm:
        env = _celery_env(
            tmp_path,
            postgres_database_url,
            vhost.broker_url(proxy.port),
            records,
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY=LLM_KEY,
            ATOM_LLM_CHAIN=LLM_CHAIN,
        )
        masked = f"amqp://{vhost.user}:**@{RABBITMQ_HOST}:{proxy.port}/{vhost.name}"
        with _extraction_step_in_a_worker(env, tmp_path, llm) as (workers, web, run_id):
            assert len(busy_workers(workers)) == 1  # the extraction step runs in a worker now
            proxy.stop()
            lost_at = time.monotonic()
            time.sleep(BROKER_BLIP_S)
            llm.set_default(Behaviour("deterministic"))
            proxy.start()
            wait_for_status(web, run_id, "FAILURE", timeout_s=BROKER_GONE_FAILS_WITHIN_S)
            failed_after = time.monotonic() - lost_at
            errors = run_errors(web, run_id)
            assert f"Celery broker {masked} ({BROKER_VARIABLE}) unreachable" in errors, errors
            retry = _retry_of(web, run_id)
            wait_for_status(web, retry, "SUCCESS", timeout_s=BROKER_BACK_BOUND_S)
            retried_after = time.monotonic() - lost_at
            _wait_until_no_task_held(vhost)
            deliveries = _deliveries(workers)
            assert [r["runId"] for r in runs_tagged(web, {"dagster/root_run_id": run_id})] == [retry]
            _assert_password_never_shown(vhost, tmp_path, web, [run_id, retry])
        print(
            f"broker lost {BROKER_BLIP_S}s mid-step: run FAILURE {failed_after:.1f}s after the loss, its automatic "
            f"retry SUCCESS {retried_after:.1f}s after it; tasks delivered more than once: "
            f"{sum(1 for n in deliveries.values() if n > 1)}"
        )
        expected = _clean_killed_mailbox_rows(env, clean_database_url, llm, monkeypatch)
    got = store_rows(env["ATOM_DATABASE_URL"], COMPARED_TABLES)
    assert sum(got["extraction_outcomes"].values()) > 0
    # The failed run's redelivered step and its retry extracted the same days at about the same time: for a
    # message whose answer one of them had cached first, the other's outcome row says "cached" with no tokens
    # spent. Which one wrote last is a race; what was extracted is not, so the outcomes are compared on it.
    differences = _differences(_answers(expected), _answers(got))
    assert not differences, differences


BROKER_BLIP_S = 5
#: Columns of an outcome row that say what an attempt cost, not what it found.
ATTEMPT_COST_COLUMNS = frozenset(
    {"reason", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens", "cost_usd", "cache_hit"}
    | {"raw_preview"}
)


def _answers(rows: dict[str, Counter]) -> dict[str, Counter]:
    """``rows`` with each extraction outcome reduced to what the attempt found (its cost columns left out)."""
    from atom_pipelines.store.schema import metadata

    names = [c.name for c in metadata.tables["extraction_outcomes"].columns if c.name not in VOLATILE_COLUMNS]
    kept = [i for i, name in enumerate(names) if name not in ATTEMPT_COST_COLUMNS]
    assert len(kept) == len(names) - len(ATTEMPT_COST_COLUMNS), names
    outcomes: Counter = Counter()
    for row, count in rows["extraction_outcomes"].items():
        outcomes[tuple(row[i] for i in kept)] += count
    return {**rows, "extraction_outcomes": outcomes}


def _wait_for_llm(llm: OpenAICompatibleServer, web, run_id: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + 180
    while llm.requests == 0:
        status = run_status(web, run_id)
        assert time.monotonic() < deadline and status in ("QUEUED", "STARTING", "STARTED"), status
        time.sleep(0.2)


def _retry_of(web, run_id: str, timeout_s: float = 120) -> str:  # noqa: ANN001
    """The id of the run the daemon's run_retries launched for the failed ``run_id``."""
    deadline = time.monotonic() + timeout_s
    while not (retries := runs_tagged(web, {"dagster/parent_run_id": run_id})):
        assert time.monotonic() < deadline, f"run_retries launched no retry of {run_id} within {timeout_s}s"
        time.sleep(0.5)
    [retry] = retries
    assert retry["tags"].get("dagster/retry_number") == "1", retry["tags"]
    return retry["runId"]


def _wait_until_no_task_held(vhost: Vhost, timeout_s: float = 120) -> None:
    """Until the vhost's queues hold no message, ready or unacknowledged: with late acks a step a worker
    runs is unacknowledged until it ends, and a redelivered step of the failed run writes too, so it must
    have finished before the store is compared."""
    deadline = time.monotonic() + timeout_s
    while held := queue_depths(vhost).get("dagster", 0):
        assert time.monotonic() < deadline, f"{held} step(s) still on the dagster queue after {timeout_s}s"
        time.sleep(1)


def _deliveries(workers: list) -> Counter:  # noqa: ANN001 - CeleryWorker
    """Task id -> how many times a worker received it, over all workers."""
    return Counter(task for worker in workers for task in worker.received())


@contextmanager
def _extraction_step_in_a_worker(
    env: dict[str, str], tmp_path: Path, llm: OpenAICompatibleServer
) -> Iterator[tuple[list[CeleryWorker], Server, str]]:
    """Two workers, the webserver and the daemon; KILLED_MAILBOX's days launched while the LLM answers
    slowly. Yields (workers, webserver, run id) once the extraction step, in one of the workers, has sent its
    first request: whatever the test breaks then breaks mid-step."""
    with (
        celery_workers(env, tmp_path, count=2) as workers,
        dagster_webserver(env, tmp_path) as web,
        dagster_daemon(env, tmp_path),
    ):
        wait_for_location(web)
        wait_for_mailboxes(web, {KILLED_MAILBOX})
        llm.set_default(Behaviour("latency", latency_ms=SLOW_LLM_MS))
        run_id = launch_mailbox_days(web, KILLED_MAILBOX, *KILLED_DAYS)
        _wait_for_llm(llm, web, run_id)
        yield workers, web, run_id


def _clean_killed_mailbox_rows(
    env: dict[str, str], clean_database_url: str, llm: OpenAICompatibleServer, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Counter]:
    """What a clean in-process run of KILLED_MAILBOX's days stores, extracting through the same LLM."""
    return _in_process_rows(
        Path(env["ATOM_MAIL_EXPORT_DIR"]),
        clean_database_url,
        [([KILLED_MAILBOX], _days_tags(KILLED_MAILBOX, *KILLED_DAYS))],
        monkeypatch,
        {},
        _llm_extractor(llm, monkeypatch),
    )


def _days_tags(mailbox: str, first: dt.date, last: dt.date) -> dict[str, str]:
    return {PARTITION_TAG: mailbox, FIRST_DAY_TAG: str(first), LAST_DAY_TAG: str(last)}


def _llm_extractor(llm: OpenAICompatibleServer, monkeypatch: pytest.MonkeyPatch) -> EntityExtractor:
    """The extractor the deployment's settings make, for the in-process reference run."""
    monkeypatch.setenv("OPENAI_API_KEY", LLM_KEY)
    return EntityExtractor(chain=LLM_CHAIN, openai_base_url=llm.base_url, max_concurrency=4)


# -- The corpus through two workers -------------------------------------------------------------------------


def _received_day(record: dict) -> dt.date:
    return dt.datetime.fromisoformat(record["receivedDateTime"]).astimezone(dt.timezone.utc).date()


def _corpus_span(records: list[dict]) -> dict[str, str]:
    """ATOM_START_DATE / ATOM_END_DATE (exclusive) = the records' span: a catch-up covers exactly their days."""
    first, last = min(map(_received_day, records)), max(map(_received_day, records))
    return {"ATOM_START_DATE": first.isoformat(), "ATOM_END_DATE": (last + dt.timedelta(days=1)).isoformat()}


def _in_process_rows(
    export_dir: Path,
    database_url: str,
    runs: list[tuple[list[str], dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
    span: dict[str, str],
    extractor: EntityExtractor | None = None,
) -> dict[str, Counter]:
    """What the same runs (each: its mailboxes, registered in this order, and its tags) write in this process,
    no Celery, into a fresh database. No hash seed is pinned anywhere: this process and each worker hash
    strings differently, so the comparison also holds the extraction to not depending on set order."""
    for name, value in span.items():
        monkeypatch.setenv(name, value)
    run_resources = resources(export_dir, database_url, extractor)
    with instance_for_test() as instance:
        for mailboxes, tags in runs:
            known = set(instance.get_dynamic_partitions(MAILBOX_DIMENSION))
            instance.add_dynamic_partitions(MAILBOX_DIMENSION, [m for m in mailboxes if m not in known])
            result = materialize(PARTITIONED_CHAIN, instance=instance, resources=run_resources, tags=tags)
            assert result.success
    return store_rows(database_url, COMPARED_TABLES)


#: The store's tables a run of the chain writes (the graph's tables are entity_graph's, not run here).
COMPARED_TABLES = (
    "messages",
    "entities",
    "entity_links",
    "entity_relations",
    "extraction_outcomes",
    "extraction_cache",
    "identity_decisions",
    "mailbox_days",
    "model_quiet_counts",
    "quarantined_records",
)


def _differences(expected: dict[str, Counter], got: dict[str, Counter]) -> str:
    """Per table that differs: how many rows are missing and extra, and the first few of each, in full."""
    lines = []
    for table in expected:
        missing, extra = expected[table] - got[table], got[table] - expected[table]
        if missing or extra:
            lines.append(f"{table}: {sum(missing.values())} row(s) missing, {sum(extra.values())} extra")
            lines += [f"  missing {row}" for row in list(missing)[:5]] + [f"  extra   {row}" for row in list(extra)[:5]]
    return "\n".join(lines)


@pytest.fixture
def clean_database_url() -> Iterator[str]:
    """A second fresh PostgreSQL database, for the in-process run the Celery run is compared with."""
    with conftest.fresh_postgres_database("atom_test_clean") as url:
        yield url


@pytest.mark.server
@pytest.mark.postgres
@pytest.mark.timeout(1500)
def test_a_corpus_backfill_through_two_celery_workers_stores_exactly_the_rows_of_an_in_process_run(
    tmp_path: Path, postgres_database_url: str, clean_database_url: str, vhost: Vhost, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = corpus_records()
    mailboxes = sorted({record["mailbox"] for record in records})
    span = _corpus_span(records)
    env = _celery_env(tmp_path, postgres_database_url, vhost.broker_url(), records, **span)
    started = time.monotonic()
    with (
        celery_workers(env, tmp_path, count=2) as workers,
        dagster_webserver(env, tmp_path) as web,
        dagster_daemon(env, tmp_path),
    ):
        wait_for_location(web)
        wait_for_mailboxes(web, set(mailboxes))
        registered_at = time.monotonic()
        backfill_id = launch_mailbox_backfill(web, mailboxes)
        wait_for_backfill(web, backfill_id, timeout_s=CORPUS_TIMEOUT_S)
        took = time.monotonic() - registered_at
        runs = runs_tagged(web, {"dagster/backfill": backfill_id})
        per_run = -(-len(mailboxes) // 5)  # ATOM_MAILBOXES_PER_RUN's default
        assert len(runs) == per_run and all(r["status"] == "SUCCESS" for r in runs), runs
        # Every step of every run ran as a Celery task (a run's own log is too long to search: its steps log
        # every mailbox-day), and both workers took some: the chain's three steps and the standalone freshness
        # check the backfill's asset selection brings, plus the steps of any scheduled run that ticked
        # meanwhile (mailbox_freshness_hourly at minute 30), which run in the workers too.
        assert sum(worker.tasks_succeeded() for worker in workers) == sum(
            steps_succeeded(web, r["runId"]) for r in runs_tagged(web, {})
        )
        assert all(worker.tasks_received() > 0 for worker in workers), "a worker took no step"
        registered = [m for m in _registration_order(env["ATOM_DATABASE_URL"]) if m in mailboxes]
    print(
        f"corpus backfill through 2 celery workers: {took:.1f}s, {len(records) / took:.1f} msg/s "
        f"({time.monotonic() - started:.1f}s with start-up)"
    )
    celery_rows = store_rows(env["ATOM_DATABASE_URL"], COMPARED_TABLES)
    assert sum(celery_rows["messages"].values()) == len(records)
    expected = _in_process_rows(
        Path(env["ATOM_MAIL_EXPORT_DIR"]),
        clean_database_url,
        [(batch, mailbox_run_tags(batch)) for batch in mailbox_runs(registered, mailboxes, 5)],
        monkeypatch,
        span,
    )
    differences = _differences(expected, celery_rows)
    assert not differences, differences


def _registration_order(database_url: str) -> list[str]:
    """The mailbox partitions in the order register_mailboxes added them (the instance's own table)."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.text("select partition from dynamic_partitions where partitions_def_name = :n order by id"),
                    {"n": MAILBOX_DIMENSION},
                ).scalars()
            )
    finally:
        engine.dispose()


# -- A worker killed mid-step --------------------------------------------------------------------------------

KILLED_MAILBOX = "kevin.hyatt@enron.com"
KILLED_DAYS = (dt.date(2001, 10, 17), dt.date(2001, 11, 30))
LLM_CHAIN = "openai:gpt-4o-mini,heuristic"
LLM_KEY = "sk-test-key"
#: Each extraction request waits this long while the kill lands: no answer of the killed attempt exists.
SLOW_LLM_MS = 8_000
#: The broker redelivers the step once the dead worker's connection is closed; the step then runs whole.
REDELIVERED_WITHIN_S = 180


@pytest.mark.server
@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_a_worker_killed_mid_step_hands_its_step_to_the_other_worker_and_the_run_ends_with_the_clean_rows(
    tmp_path: Path, postgres_database_url: str, clean_database_url: str, vhost: Vhost, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = corpus_records({KILLED_MAILBOX})
    with OpenAICompatibleServer(accepted_keys={LLM_KEY}) as llm:
        env = _celery_env(
            tmp_path,
            postgres_database_url,
            vhost.broker_url(),
            records,
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY=LLM_KEY,
            ATOM_LLM_CHAIN=LLM_CHAIN,
        )
        with _extraction_step_in_a_worker(env, tmp_path, llm) as (workers, web, run_id):
            [victim] = busy_workers(workers)
            step_task = victim.received()[-1]
            victim.kill()
            killed_at = time.monotonic()
            llm.set_default(Behaviour("deterministic"))
            [survivor] = [w for w in workers if w is not victim]
            took = wait_for_status(web, run_id, "SUCCESS", timeout_s=REDELIVERED_WITHIN_S)
            steps = celery_steps(web, run_id)
            # email_entities ran twice: in the killed worker, then whole in the survivor; one run, no retry.
            assert steps.count("email_entities") == 2, steps
            assert runs_tagged(web, {"dagster/parent_run_id": run_id}) == []
            # The broker redelivered the very task the victim held (late acks), not a new one dagster sent.
            assert step_task in survivor.received(), (step_task, survivor.received())
            print(f"worker killed -> run SUCCESS: {took:.1f}s ({time.monotonic() - killed_at:.1f}s)")
        expected = _clean_killed_mailbox_rows(env, clean_database_url, llm, monkeypatch)
    got = store_rows(env["ATOM_DATABASE_URL"], COMPARED_TABLES)
    assert sum(got["messages"].values()) > 0 and sum(got["extraction_outcomes"].values()) > 0
    differences = _differences(expected, got)
    assert not differences, differences


# -- Graph's per-mailbox gate and the openai pool, across workers -------------------------------------------

GATED_MAILBOX = "sally.beck@enron.com"
GATED_RUNS = 6
GRAPH_REQUESTS_PER_MAILBOX = 4  # Graph's limit, held by atom_pipelines/mail/gate.py
OPENAI_POOL_LIMIT = 2  # dagster.yaml concurrency.pools.default_limit
#: With 5 messages a page, a run's listing of ~120 messages takes ~50 s: runs that start seconds apart (a run
#: worker's start on 2 busy cores) overlap by more than Graph's 4, so the gate has something to hold.
GRAPH_PAGE_DELAY_S = 2.0


def _allow_concurrent_runs(dagster_home: Path, runs: int) -> None:
    """The copied dagster.yaml with room for ``runs`` runs of one mailbox at once: the run queue's per-mailbox
    limit would otherwise keep the gate from being tested at all (3 runs send at most 3 requests)."""
    path = dagster_home / "dagster.yaml"
    settings = yaml.safe_load(path.read_text())
    assert settings["concurrency"]["pools"]["default_limit"] == OPENAI_POOL_LIMIT
    settings["concurrency"]["runs"]["max_concurrent_runs"] = runs
    settings["concurrency"]["runs"].pop("tag_concurrency_limits", None)
    path.write_text(yaml.safe_dump(settings, sort_keys=False))


def _day_windows(records: list[dict], count: int) -> list[tuple[dt.date, dt.date]]:
    """``count`` disjoint windows of days holding about as many messages each (concurrent runs of one
    mailbox write different days, as a re-sync of several ranges would)."""
    days = sorted(_received_day(r) for r in records)
    size = -(-len(days) // count)
    windows, start = [], days[0]
    for n in range(count):
        chunk = days[n * size : (n + 1) * size]
        last = chunk[-1] if n < count - 1 else days[-1]
        windows.append((start, last))
        start = last + dt.timedelta(days=1)
    return windows


@pytest.mark.server
@pytest.mark.postgres
@pytest.mark.timeout(1200)
def test_the_graph_gate_and_the_openai_pool_hold_across_celery_workers(
    tmp_path: Path, postgres_database_url: str, vhost: Vhost
) -> None:
    records = corpus_records({GATED_MAILBOX})
    with (
        GraphServer(records, page_delay_s=GRAPH_PAGE_DELAY_S, mailbox_concurrency_limit=None) as graph,
        OpenAICompatibleServer(accepted_keys={LLM_KEY}, latency_ms=50) as llm,
    ):
        env = _celery_env(
            tmp_path,
            postgres_database_url,
            vhost.broker_url(),
            [],
            ATOM_GRAPH_TENANT_ID=graph.tenant_id,
            ATOM_GRAPH_CLIENT_ID=graph.client_id,
            ATOM_GRAPH_CLIENT_SECRET=graph.client_secret,
            ATOM_GRAPH_AUTHORITY_HOST=graph.authority_host,
            ATOM_GRAPH_API_URL=graph.api_url,
            ATOM_GRAPH_MAILBOXES=GATED_MAILBOX,
            ATOM_GRAPH_PAGE_SIZE="5",
            REQUESTS_CA_BUNDLE=str(graph.ca_bundle_path),
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY=LLM_KEY,
            ATOM_LLM_CHAIN=LLM_CHAIN,
            ATOM_LLM_CONCURRENCY="2",
        )
        _allow_concurrent_runs(Path(env["DAGSTER_HOME"]), GATED_RUNS)
        with (
            celery_workers(env, tmp_path, count=2, concurrency=GATED_RUNS // 2) as workers,
            dagster_webserver(env, tmp_path) as web,
            dagster_daemon(env, tmp_path),
        ):
            wait_for_location(web)
            wait_for_mailboxes(web, {GATED_MAILBOX})
            run_ids = [launch_mailbox_days(web, GATED_MAILBOX, *w) for w in _day_windows(records, GATED_RUNS)]
            for run_id in run_ids:
                wait_for_status(web, run_id, "SUCCESS", timeout_s=600)
            extraction = [i for run_id in run_ids for i in step_intervals(web, run_id, "email_entities")]
            listing = [i for run_id in run_ids for i in step_intervals(web, run_id, "outlook_messages")]
            assert all(worker.tasks_received() > 0 for worker in workers), "a worker took no step"
        graph_max = graph.max_concurrent_by_mailbox[GATED_MAILBOX]
        pool_max = max_overlap(extraction)
        print(
            f"Graph requests in flight for {GATED_MAILBOX}: at most {graph_max} (listing steps at once: "
            f"{max_overlap(listing)}); extraction steps at once: at most {pool_max}"
        )
        assert len(extraction) == GATED_RUNS
        # More listing steps ran at once than Graph allows requests: the gate, not the queue, held the limit.
        assert max_overlap(listing) > GRAPH_REQUESTS_PER_MAILBOX
        assert graph_max == GRAPH_REQUESTS_PER_MAILBOX  # reached, never exceeded
        assert all(r.status < 400 for r in graph.request_log)
        assert pool_max == OPENAI_POOL_LIMIT  # reached, never exceeded
