"""Connecting a mailbox is its historical sync, in a real deployment reading a Graph-compatible server.

``dagster dev`` (webserver, daemon, code server, run workers) runs on a PostgreSQL instance with the Graph
source configured the production way: the three ``ATOM_GRAPH_*`` credentials, ``ATOM_GRAPH_AUTHORITY_HOST``
and ``ATOM_GRAPH_API_URL`` pointing at the test server, TLS verified against its CA through
``REQUESTS_CA_BUNDLE``. Nobody launches anything: the daemon's ``register_mailboxes`` sensor registers the
mailbox named in ``ATOM_GRAPH_MAILBOXES`` and launches its history sync, one catch-up run of the mailbox's
partition (no day tags); it lists the mailbox through msal + requests, stores exactly the messages the corpus
holds, and records every day from ATOM_START_DATE up to ATOM_END_DATE done in ``mailbox_days``.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from atom_pipelines.partitions import CHAIN
from atom_pipelines_tests.conftest import corpus_records
from atom_pipelines_tests.dagster_dev import (
    POLL_S,
    dagster_dev,
    deployment_env,
    graphql,
    run_errors,
    wait_for_location,
)
from atom_pipelines_tests.servers.graph_server import GraphServer
from atom_pipelines_tests.test_graph_sync import received_day

pytestmark = [pytest.mark.server, pytest.mark.postgres]

MAILBOX = "kevin.hyatt@enron.com"
HISTORY_TIMEOUT_S = 300

HISTORY_RUNS = """
query HistoryRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status } }
    ... on PythonError { message }
  }
}
"""


def test_a_mailbox_named_in_the_settings_is_registered_and_its_history_synced_from_graph(
    tmp_path: Path, postgres_database_url: str
) -> None:
    records = corpus_records({MAILBOX})
    days = sorted({received_day(r) for r in records})
    with GraphServer(records) as server:
        env = deployment_env(
            tmp_path,
            postgres_database_url,
            [],
            ATOM_GRAPH_TENANT_ID=server.tenant_id,
            ATOM_GRAPH_CLIENT_ID=server.client_id,
            ATOM_GRAPH_CLIENT_SECRET=server.client_secret,
            ATOM_GRAPH_AUTHORITY_HOST=server.authority_host,
            ATOM_GRAPH_API_URL=server.api_url,
            ATOM_GRAPH_MAILBOXES=MAILBOX.upper(),  # as an admin might type it
            REQUESTS_CA_BUNDLE=str(server.ca_bundle_path),
            ATOM_HISTORY_SYNC_ON_REGISTER="true",
            ATOM_START_DATE="2001-10-01",
            ATOM_END_DATE="2002-04-01",
        )
        with dagster_dev(env, tmp_path) as deployment:
            wait_for_location(deployment)
            deadline = time.monotonic() + HISTORY_TIMEOUT_S
            runs: list[dict] = []
            while time.monotonic() < deadline:
                deployment.assert_alive()
                answer = graphql(
                    deployment, HISTORY_RUNS, {"filter": {"tags": [{"key": "atom/history_sync", "value": MAILBOX}]}}
                )["runsOrError"]
                runs = answer.get("results") or []
                if runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
                    break
                time.sleep(POLL_S * 4)
            failed = [r for r in runs if r["status"] != "SUCCESS"]
            assert runs, f"no history sync run was launched for {MAILBOX} within {HISTORY_TIMEOUT_S}s"
            assert not failed, "\n".join(run_errors(deployment, r["runId"]) for r in failed)

    engine = sa.create_engine(env["ATOM_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            stored = set(
                conn.execute(sa.text("select message_id from messages where mailbox = :m"), {"m": MAILBOX}).scalars()
            )
            stored_days = set(conn.execute(sa.text("select distinct day from messages")).scalars())
            entities = conn.execute(sa.text("select count(*) from entities")).scalar_one()
            partitions = set(conn.execute(sa.text("select partition from dynamic_partitions")).scalars())
            progress = conn.execute(
                sa.text("select asset, status, count(*), min(day), max(day) from mailbox_days group by asset, status")
            ).all()
    finally:
        engine.dispose()
    assert stored == {r["id"] for r in records}
    assert stored_days == set(days)
    assert entities > 0
    assert MAILBOX in partitions  # lowercased: one partition per mailbox however it was typed
    # One catch-up run (one mailbox: one partition), every day from ATOM_START_DATE to the day before
    # ATOM_END_DATE done for each asset of the chain, mail or not.
    assert len(runs) == 1, runs
    span = (dt.date(2001, 10, 1), dt.date(2002, 3, 31))
    every_day = (span[1] - span[0]).days + 1
    assert sorted(tuple(row) for row in progress) == [(asset, "done", every_day, *span) for asset in sorted(CHAIN)], (
        progress
    )
    assert stored_days <= {span[0] + dt.timedelta(days=n) for n in range(every_day)}
    assert server.token_requests >= 1 and all(r.status < 400 for r in server.request_log)
