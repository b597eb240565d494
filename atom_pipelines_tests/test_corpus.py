"""The whole corpus (corpus/enron_dev.jsonl.gz: 10 mailboxes, 2,853 real messages) through the chain on the real
PostgreSQL server, batched as a UI backfill of every mailbox partition batches it, with extraction going through
the real ``openai`` client to our OpenAI-compatible server (its deterministic model) and the heuristic behind it:
no blocking (ERROR) check may fail, every message must be stored with an extraction outcome, and every mailbox-day
of the corpus's span must be recorded done for each asset of the chain.

How the runs are cut: a UI backfill of mailbox partitions under ``BackfillPolicy.multi_run`` launches runs of
ATOM_MAILBOXES_PER_RUN mailboxes that are consecutive in registration order (a partition range each), without
day tags, so each run is a **catch-up**: every day from ATOM_START_DATE to the latest complete day not yet done.
ATOM_START_DATE and ATOM_END_DATE are set to the corpus's span (its first day, the day after its last), so a
catch-up covers exactly the corpus's days. A second catch-up of the same mailboxes then finds nothing to do.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import AssetCheckSeverity, DagsterInstance, materialize

from atom_pipelines import config
from atom_pipelines.assets import PARTITIONED_CHAIN
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.partitions import CHAIN, MAILBOX_DIMENSION, mailbox_run_tags, mailbox_runs
from atom_pipelines.store import schema
from atom_pipelines_tests.conftest import corpus_records
from atom_pipelines_tests.helpers import resources
from atom_pipelines_tests.servers.openai_server import OpenAICompatibleServer


def _received_day(record: dict) -> dt.date:
    return dt.datetime.fromisoformat(record["receivedDateTime"]).astimezone(dt.timezone.utc).date()


def test_the_whole_corpus_goes_through_on_postgres(
    instance: DagsterInstance, postgres_database_url: str, corpus_export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = corpus_records()
    first, last = min(map(_received_day, records)), max(map(_received_day, records))
    monkeypatch.setenv("ATOM_START_DATE", first.isoformat())
    monkeypatch.setenv("ATOM_END_DATE", (last + dt.timedelta(days=1)).isoformat())  # exclusive
    monkeypatch.setenv("ATOM_CORPUS_TEST_KEY", "sk-corpus")
    with OpenAICompatibleServer(accepted_keys={"sk-corpus"}) as server:
        extractor = EntityExtractor(
            chain="openai:gpt-4o-mini,heuristic", openai_base_url=server.base_url, key_env="ATOM_CORPUS_TEST_KEY"
        )
        run_resources = resources(corpus_export_dir, postgres_database_url, extractor=extractor)
        mailboxes = sorted({record["mailbox"] for record in records})
        batches = _backfill(instance, run_resources, mailboxes)
        assert len(batches) == -(-len(mailboxes) // config.load_settings().mailboxes_per_run)
        # Every message went to the model once; copies of the same mail in two mailboxes were served by the cache.
        assert 2800 <= server.requests <= 2853
        _assert_store(postgres_database_url, records, mailboxes, first, last)

        # The backfill again: every day is done, so each catch-up covers nothing and asks the model nothing.
        asked = server.requests
        assert _backfill(instance, run_resources, mailboxes) == [(batch, 0) for batch, _ in batches]
        assert server.requests == asked
        _assert_store(postgres_database_url, records, mailboxes, first, last)


def _backfill(instance: DagsterInstance, run_resources: dict, mailboxes: list[str]) -> list[tuple[list[str], int]]:
    """Register the mailboxes (in this order, as register_mailboxes does) and run a catch-up of the chain per
    batch of ATOM_MAILBOXES_PER_RUN of them, as the backfill's runs; returns (batch, mailbox-days its
    outlook_messages step covered) per run. Fails naming every run that failed or failed a blocking check."""
    known = set(instance.get_dynamic_partitions(MAILBOX_DIMENSION))
    instance.add_dynamic_partitions(MAILBOX_DIMENSION, [m for m in mailboxes if m not in known])
    registered = list(instance.get_dynamic_partitions(MAILBOX_DIMENSION))
    per_run = config.load_settings().mailboxes_per_run
    covered, failed_runs = [], []
    for batch in mailbox_runs(registered, mailboxes, per_run):
        result = materialize(
            PARTITIONED_CHAIN,
            instance=instance,
            resources=run_resources,
            raise_on_error=False,
            tags=mailbox_run_tags(batch),  # no day tags: a catch-up
        )
        # Blocking (ERROR) checks must pass; the WARN check on the none_found share may flag mailbox-days
        # where the test server's deterministic model finds nothing, which is what it is there to show.
        failed_checks = [
            e.check_name
            for e in result.get_asset_check_evaluations()
            if not e.passed and e.severity == AssetCheckSeverity.ERROR
        ]
        if not result.success or failed_checks:
            failed_runs.append((batch, failed_checks))
            continue
        # One materialization per mailbox partition of the run, each with the step's metadata.
        messages = [m for m in result.get_asset_materialization_events() if m.asset_key.path == ["outlook_messages"]]
        assert sorted(m.partition for m in messages) == sorted(batch)
        [days_covered] = {m.materialization.metadata["mailbox_days_covered"].value for m in messages}
        covered.append((batch, days_covered))
    assert failed_runs == []
    return covered


def _assert_store(database_url: str, records: list[dict], mailboxes: list[str], first: dt.date, last: dt.date) -> None:
    span_days = (last - first).days + 1
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.select(sa.func.count()).select_from(schema.messages)).scalar_one()
            with_outcome = conn.execute(
                sa.select(sa.func.count(sa.distinct(schema.extraction_outcomes.c.message_id)))
            ).scalar_one()
            partitions_with_mail = conn.execute(
                sa.select(sa.func.count()).select_from(
                    sa.select(schema.messages.c.mailbox, schema.messages.c.day).distinct().subquery()
                )
            ).scalar_one()
            providers = set(conn.execute(sa.select(schema.entities.c.provider).distinct()).scalars())
            partitions_with_entities = conn.execute(
                sa.select(sa.func.count()).select_from(
                    sa.select(schema.entities.c.mailbox, schema.entities.c.day).distinct().subquery()
                )
            ).scalar_one()
            days = schema.mailbox_days
            progress = {
                (asset, mailbox, status): (count, low, high, rows)
                for asset, mailbox, status, count, low, high, rows in conn.execute(
                    sa.select(
                        days.c.asset,
                        days.c.mailbox,
                        days.c.status,
                        sa.func.count(),
                        sa.func.min(days.c.day),
                        sa.func.max(days.c.day),
                        sa.func.sum(days.c.rows),
                    ).group_by(days.c.asset, days.c.mailbox, days.c.status)
                )
            }
    finally:
        engine.dispose()
    assert stored == len(records) == 2853
    assert with_outcome == stored
    assert partitions_with_mail == partitions_with_entities == 661
    assert providers == {"openai"}
    # Every day of the span done (none failed, none missing) for each asset and mailbox; outlook_messages'
    # rows per mailbox are its messages.
    assert set(progress) == {(asset, mailbox, "done") for asset in CHAIN for mailbox in mailboxes}, sorted(progress)
    assert {key: value[:3] for key, value in progress.items()} == dict.fromkeys(progress, (span_days, first, last))
    per_mailbox = {mailbox: sum(r["mailbox"] == mailbox for r in records) for mailbox in mailboxes}
    assert {m: progress["outlook_messages", m, "done"][3] for m in mailboxes} == per_mailbox
