"""The store upgrades itself only when told to: Alembic revisions in atom_pipelines/store/migrations/.

What this protects, and why. Deployed stores hold months of synced mail and paid-for LLM answers; before
migrations, ``metadata.create_all`` created missing tables but never altered one, so the release that
renamed ``extraction_cache.content_hash`` to ``prompt_hash`` broke every deployed database on its first
cache write. These tests hold, on SQLite and on PostgreSQL:
* rows written by the previous release (revision 0001) survive the upgrade to head, the cache's hash
  under its new name;
* after the migrations, the database equals schema.py exactly (Alembic's autogenerate comparison): a change
  to schema.py without a migration fails here, before it reaches a deployed database;
* a database behind head (or made before migrations, or by a newer release) is refused with the command
  that fixes it, and nothing is written to it; ``python -m atom_pipelines.store upgrade`` fixes it;
* an empty database is created at head, once, even by several processes at the same moment;
* a PostgreSQL password never appears in the errors or the command's output.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.pool import NullPool

from atom_pipelines.entity_graph.analysis import GraphOptions, build_entity_graph
from atom_pipelines.entity_graph.links import link_entities
from atom_pipelines.extraction.cache import prompt_hash
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.extraction.providers import MessageText
from atom_pipelines.extraction.run import extract_entities
from atom_pipelines.mail.source import ExportMailSource
from atom_pipelines.mail.sync import sync_messages
from atom_pipelines.partitions import MailboxWindow
from atom_pipelines.store import migrate, schema
from atom_pipelines.store.engine import store_url
from atom_pipelines.store.migrate import (
    UPGRADE_COMMAND,
    VERSION_TABLE,
    StoreSchemaError,
    StoreSchemaOutOfDate,
    StoreSchemaTooNew,
    ensure_schema,
)
from atom_pipelines.store.resource import MailStore, dispose_engine
from atom_pipelines_tests.conftest import REPO_ROOT, corpus_records, fresh_postgres_database, write_export
from atom_pipelines_tests.servers.openai_server import OpenAICompatibleServer

MAILBOX = "kevin.hyatt@enron.com"
DAY = dt.date(2001, 11, 27)  # 5 messages in the corpus
WINDOWS = [MailboxWindow(MAILBOX, (DAY,))]
KEY = "sk-test-key"
KEY_ENV = "ATOM_TEST_OPENAI_KEY"
PASSWORD = "Pw-n0t-for-logs"

# extraction_cache as revision 0001 (the releases before the rename) made it: what those releases wrote.
CACHE_0001 = sa.Table(
    "extraction_cache",
    sa.MetaData(),
    *(
        sa.Column("content_hash" if c.name == "prompt_hash" else c.name, c.type, primary_key=c.primary_key)
        for c in schema.extraction_cache.columns
    ),
)
TABLES_HEAD = dict(schema.metadata.tables)
#: Tables later revisions created: a 0001 release never wrote them (0003: model_quiet_counts; 0004: the graph;
#: 0005: mailbox_days).
ADDED_AFTER_0001 = frozenset(
    {"model_quiet_counts", *(t.name for t in schema.GRAPH_TABLES), schema.graph_builds.name, schema.mailbox_days.name}
)
TABLES_0001 = {
    **{name: t for name, t in TABLES_HEAD.items() if name not in ADDED_AFTER_0001},
    "extraction_cache": CACHE_0001,
}
HEAD = "0005"


# -- helpers ------------------------------------------------------------------------------------------


def scratch_engine(url: str) -> sa.Engine:
    """An engine outside the store's cache, so looking at a database never triggers the store's check."""
    return sa.create_engine(store_url(url), poolclass=NullPool)


def read_all(url: str, tables: dict[str, sa.Table]) -> dict[str, list[dict[str, Any]]]:
    engine = scratch_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
                for name, t in tables.items()
            }
    finally:
        engine.dispose()


def write_all(url: str, tables: dict[str, sa.Table], rows: dict[str, list[dict[str, Any]]]) -> None:
    engine = scratch_engine(url)
    try:
        with engine.begin() as conn:
            for name, table_rows in rows.items():
                conn.execute(tables[name].insert(), table_rows)
    finally:
        engine.dispose()


def fingerprint(url: str) -> dict[str, Any]:
    """Everything an implicit write could change: tables, their columns, the revision and row counts."""
    engine = scratch_engine(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            tables = sorted(inspector.get_table_names())
            return {
                "columns": {t: [c["name"] for c in inspector.get_columns(t)] for t in tables},
                "rows": {t: conn.execute(sa.text(f'select count(*) from "{t}"')).scalar_one() for t in tables},
                "state": migrate.read_state(conn),
            }
    finally:
        engine.dispose()


def run_command(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The documented command, run from outside the checkout: it needs no alembic.ini in the directory."""
    env = {**os.environ, "ATOM_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "atom_pipelines.store", *args],
        env=env,
        cwd=Path(REPO_ROOT.anchor),
        capture_output=True,
        text=True,
        timeout=120,
    )


def with_password(url: str) -> str:
    return sa.engine.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


def the_0001_release_wrote(url: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    """The database as the last release before migrations left it, the way 0001 describes it."""
    migrate.upgrade(url, "0001")
    write_all(url, TABLES_0001, as_0001(rows))


def as_0001(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    renamed = [
        {("content_hash" if k == "prompt_hash" else k): v for k, v in row.items()} for row in rows["extraction_cache"]
    ]
    return {**{n: r for n, r in rows.items() if n not in ADDED_AFTER_0001}, "extraction_cache": renamed}


# -- realistic rows: the real pipeline over a day of the corpus -------------------------------------------


@pytest.fixture(scope="module")
def pipeline_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """A row set for every table, made by the pipeline's own functions on a scratch SQLite store: a day of
    kevin.hyatt's mail synced (plus one record the source must quarantine), extracted through the
    OpenAI-compatible test server (so the cache holds real prompt hashes), linked, the entity graph built, and
    a Graph delta round noted. Only ``entity_relations`` is written by hand (the test server answers no relations), between
    two entities the extraction really stored."""
    tmp = tmp_path_factory.mktemp("pipeline")
    records = [r for r in corpus_records({MAILBOX}) if r["receivedDateTime"].startswith(DAY.isoformat())]
    broken = {k: v for k, v in records[0].items() if k != "id"}
    export = write_export(tmp / "export", [*records, json.dumps(broken)])
    url = f"sqlite:///{tmp / 'scratch.sqlite'}"
    store = MailStore(database_url=url)
    with pytest.MonkeyPatch.context() as patch, OpenAICompatibleServer(accepted_keys={KEY}) as server:
        patch.setenv(KEY_ENV, KEY)
        sync_messages(ExportMailSource(export_dir=str(export)), store, WINDOWS)
        extractor = EntityExtractor(
            chain="openai:gpt-4o-mini", openai_base_url=server.base_url, key_env=KEY_ENV, max_retries=0
        )
        extract_entities(extractor, store, WINDOWS)
    entities = store.rows(schema.entities, WINDOWS)
    first, second = entities[0], next(e for e in entities[1:] if e["message_id"] == entities[0]["message_id"])
    relation = {
        "mailbox": MAILBOX,
        "message_id": first["message_id"],
        "source_key": first["entity_key"],
        "target_key": second["entity_key"],
        "relation": "works_with",
        "day": DAY,
        "evidence": second["evidence"],
        "provider": "openai",
        "model": "gpt-4o-mini",
    }
    store.replace_partitions(WINDOWS, {schema.entity_relations: [relation]})
    link_entities(store, WINDOWS)
    build_entity_graph(store, GraphOptions(export_dir=tmp / "exports"))
    noted = dt.datetime(2001, 11, 28, 6, 0, tzinfo=dt.timezone.utc)
    delta_link = f"https://graph.microsoft.com/v1.0/users/{MAILBOX}/mailFolders/inbox/messages/delta?$deltatoken=a1b2"
    store.note_delta_round(MAILBOX, "inbox", delta_link, {DAY: f"inbox: {records[1]['id']} changed"}, noted)
    keys = [key for window in WINDOWS for key in window.mailbox_day_keys()]
    store.record_days("outlook_messages", WINDOWS, rows={keys[0]: 5}, failed={}, run_id="r1", root_run_id="r1")

    rows = read_all(url, TABLES_HEAD)
    dispose_engine(url)
    # SQLite hands timestamps back naive (their UTC wall time); the pipeline writes them aware.
    for name, table_rows in rows.items():
        stamps = [c.name for c in TABLES_HEAD[name].columns if isinstance(c.type, sa.DateTime)]
        for row in table_rows:
            row.update({c: row[c].replace(tzinfo=dt.timezone.utc) for c in stamps if row[c] is not None})
    assert all(rows.values()), {name: len(r) for name, r in rows.items()}  # every table holds rows
    return rows


# -- (a) rows survive the upgrade ------------------------------------------------------------------------


def test_rows_written_at_0001_are_all_there_at_head_the_cache_hash_renamed(
    database_url: str, pipeline_rows: dict[str, list[dict[str, Any]]]
) -> None:
    the_0001_release_wrote(database_url, pipeline_rows)
    before = read_all(database_url, TABLES_0001)
    assert {name: len(rows) for name, rows in before.items()} == {n: len(r) for n, r in as_0001(pipeline_rows).items()}

    migrate.upgrade(database_url)

    after = read_all(database_url, TABLES_HEAD)
    renamed = [
        {("prompt_hash" if k == "content_hash" else k): v for k, v in row.items()} for row in before["extraction_cache"]
    ]
    # The tables created since start empty; every row written at 0001 is there.
    assert {name: after.pop(name) for name in ADDED_AFTER_0001} == {name: [] for name in ADDED_AFTER_0001}
    assert after == {**before, "extraction_cache": renamed}
    # The values under the new name are what the name says: hashes of the prompts of the stored messages.
    prompts = {prompt_hash(MessageText.from_stored(m)) for m in after["messages"]}
    assert {row["prompt_hash"] for row in after["extraction_cache"]} == prompts
    engine = scratch_engine(database_url)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("extraction_cache")}
    engine.dispose()
    assert "prompt_hash" in columns and "content_hash" not in columns

    # And the store serves the old release's cached answers under the new column.
    cached = MailStore(database_url=database_url).cache_get([r["cache_key"] for r in renamed])
    assert {key: row["prompt_hash"] for key, row in cached.items()} == {
        r["cache_key"]: r["prompt_hash"] for r in renamed
    }


# -- (b) the migrations make exactly schema.py -----------------------------------------------------------


def _differences(url: str, metadata: sa.MetaData) -> list[Any]:
    engine = scratch_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


@pytest.mark.parametrize("made_by", ["the store opening an empty database", "upgrade 0001 then upgrade head"])
def test_after_the_migrations_autogenerate_finds_no_difference_from_schema_py(database_url: str, made_by: str) -> None:
    if made_by.startswith("the store"):
        MailStore(database_url=database_url).check_schema()
    else:
        migrate.upgrade(database_url, "0001")
        assert _differences(database_url, schema.metadata)  # 0001 is not head: the comparison sees the rename
        migrate.upgrade(database_url, "head")

    assert _differences(database_url, schema.metadata) == []

    # The comparison would catch a schema.py change that has no migration.
    changed = sa.MetaData()
    for table in schema.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["messages"].append_column(sa.Column("importance", sa.String(16)))
    assert [d[0] for d in _differences(database_url, changed)] == ["add_column"]


# -- (c) a database behind head is refused and left alone --------------------------------------------------


def test_a_database_at_0001_is_refused_naming_the_command_and_nothing_is_written(
    database_url: str, pipeline_rows: dict[str, list[dict[str, Any]]]
) -> None:
    the_0001_release_wrote(database_url, pipeline_rows)
    untouched = fingerprint(database_url)
    store = MailStore(database_url=database_url)

    with pytest.raises(StoreSchemaOutOfDate) as refused:
        store.check_schema()
    message = str(refused.value)
    assert UPGRADE_COMMAND in message and "revision 0001" in message and f"revision {HEAD} (head)" in message
    assert sa.engine.make_url(database_url).database in message
    with pytest.raises(StoreSchemaOutOfDate):
        ensure_schema(database_url)  # the load-time check
    with pytest.raises(StoreSchemaOutOfDate):
        store.replace_partitions(WINDOWS, {schema.messages: pipeline_rows["messages"]})
    with pytest.raises(StoreSchemaOutOfDate):
        store.cache_put(pipeline_rows["extraction_cache"][0])

    assert fingerprint(database_url) == untouched


def test_loading_the_code_location_on_a_database_at_0001_fails_with_the_command(
    database_url: str, pipeline_rows: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    the_0001_release_wrote(database_url, pipeline_rows)
    untouched = fingerprint(database_url)
    env = {**os.environ, "ATOM_DATABASE_URL": with_password(database_url), "DAGSTER_HOME": str(tmp_path)}
    loaded = subprocess.run(
        [sys.executable, "-c", "import atom_pipelines.definitions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode != 0
    assert "StoreSchemaOutOfDate" in loaded.stderr and UPGRADE_COMMAND in loaded.stderr
    assert PASSWORD not in loaded.stderr + loaded.stdout
    assert fingerprint(database_url) == untouched


# -- (d) the documented command fixes it ---------------------------------------------------------------------


def test_the_upgrade_command_brings_it_to_head_and_the_store_then_works(
    database_url: str, pipeline_rows: dict[str, list[dict[str, Any]]]
) -> None:
    the_0001_release_wrote(database_url, pipeline_rows)
    store = MailStore(database_url=database_url)
    with pytest.raises(StoreSchemaOutOfDate):
        store.check_schema()

    done = run_command(database_url, "upgrade")
    assert done.returncode == 0, done.stderr
    assert f"before: revision 0001 (head is {HEAD})" in done.stdout and f"after:  revision {HEAD} (head)" in done.stdout
    # Alembic's own report of what it ran.
    ran = ["0001 -> 0002", "0002 -> 0003", "0003 -> 0004", f"0004 -> {HEAD}"]
    assert all(f"Running upgrade {step}" in done.stderr for step in ran), done.stderr

    current = run_command(database_url, "current")
    assert current.returncode == 0 and f"revision {HEAD} (head)" in current.stdout

    # This process refused the database a moment ago; it looks again and now writes to it.
    messages = pipeline_rows["messages"]
    edited = [{**m, "subject": f"RE: {m['subject']}"} for m in messages]
    store.replace_partitions(WINDOWS, {schema.messages: edited})
    assert [m["subject"] for m in store.rows(schema.messages, WINDOWS)] == [m["subject"] for m in edited]
    assert store.count(schema.extraction_cache) == len(pipeline_rows["extraction_cache"])


# -- (e) a database made before migrations ---------------------------------------------------------------------


@pytest.mark.parametrize("release", ["df9073a (content_hash)", "30c9c02 (prompt_hash)"])
def test_store_tables_without_a_revision_are_refused_then_recognised_by_the_upgrade(
    database_url: str, pipeline_rows: dict[str, list[dict[str, Any]]], release: str
) -> None:
    # What those releases' create_all left: the store's tables, no version table.
    if release.startswith("df9073a"):
        the_0001_release_wrote(database_url, pipeline_rows)
        engine = scratch_engine(database_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop table "{VERSION_TABLE}"'))
        engine.dispose()
    else:
        # That release's create_all: the tables of schema.py as it was then (none added since).
        engine = scratch_engine(database_url)
        schema.metadata.create_all(engine, tables=[t for n, t in TABLES_HEAD.items() if n not in ADDED_AFTER_0001])
        engine.dispose()
        write_all(
            database_url,
            {n: t for n, t in TABLES_HEAD.items() if n not in ADDED_AFTER_0001},
            {n: r for n, r in pipeline_rows.items() if n not in ADDED_AFTER_0001},
        )
    untouched = fingerprint(database_url)
    assert untouched["state"].revisions == ()
    assert untouched["state"].store_tables == migrate.STORE_TABLES - ADDED_AFTER_0001

    with pytest.raises(StoreSchemaOutOfDate) as refused:
        MailStore(database_url=database_url).check_schema()
    message = str(refused.value)
    assert UPGRADE_COMMAND in message and "revision none" in message
    assert "created before the store had migrations" in message
    assert fingerprint(database_url) == untouched

    before, after = migrate.upgrade(database_url)
    assert before.revisions == () and after.revisions == (HEAD,)
    expected = {n: r for n, r in pipeline_rows.items() if n not in ADDED_AFTER_0001}
    assert read_all(database_url, TABLES_HEAD) == {
        **read_all_expected(expected, database_url),
        **{n: [] for n in ADDED_AFTER_0001},
    }
    assert _differences(database_url, schema.metadata) == []


def read_all_expected(rows: dict[str, list[dict[str, Any]]], url: str) -> dict[str, list[dict[str, Any]]]:
    """The pipeline's rows as this database hands them back (SQLite drops the timezone of timestamps)."""
    if sa.engine.make_url(url).get_backend_name() != "sqlite":
        return rows
    naive = {}
    for name, table_rows in rows.items():
        stamps = [c.name for c in TABLES_HEAD[name].columns if isinstance(c.type, sa.DateTime)]
        naive[name] = [{**r, **{c: r[c].replace(tzinfo=None) for c in stamps}} for r in table_rows]
    return naive


def test_store_tables_matching_no_release_are_not_touched_by_the_upgrade(database_url: str) -> None:
    engine = scratch_engine(database_url)
    schema.messages.create(engine)  # half a store: no release ever made this
    engine.dispose()
    untouched = fingerprint(database_url)

    with pytest.raises(StoreSchemaOutOfDate):
        MailStore(database_url=database_url).check_schema()
    with pytest.raises(StoreSchemaError) as refused:
        migrate.upgrade(database_url)
    assert "not the schema of any release before migrations" in str(refused.value)
    assert fingerprint(database_url) == untouched


# -- a newer release's database ------------------------------------------------------------------------------


def test_a_database_from_a_newer_release_is_refused_by_the_store_and_the_command(database_url: str) -> None:
    migrate.upgrade(database_url)
    engine = scratch_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"update \"{VERSION_TABLE}\" set version_num = '0007'"))
    engine.dispose()
    untouched = fingerprint(database_url)

    with pytest.raises(StoreSchemaTooNew) as refused:
        MailStore(database_url=database_url).check_schema()
    assert "revision 0007" in str(refused.value) and f"its head is {HEAD}" in str(refused.value)
    done = run_command(database_url, "upgrade")
    assert done.returncode == 1 and "revision 0007, which this code does not know" in done.stderr
    assert fingerprint(database_url) == untouched


# -- an empty database is created once, however many processes start at once -------------------------------


_OPENER = """
import sys
from atom_pipelines.store.migrate import ensure_schema
print("ready", flush=True)
sys.stdin.readline()
ensure_schema(sys.argv[1])
print("opened", flush=True)
"""


def test_processes_opening_an_empty_database_together_create_it_once(database_url: str) -> None:
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, database_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for _ in range(6)
    ]
    try:
        for opener in openers:  # every one imported and waits: then all go at the same moment
            assert opener.stdout is not None and opener.stdout.readline().strip() == "ready"
        for opener in openers:
            assert opener.stdin is not None
            opener.stdin.write("go\n")
            opener.stdin.flush()
        results = [opener.communicate(timeout=120) for opener in openers]
    finally:
        for opener in openers:
            if opener.poll() is None:
                opener.kill()
    assert [opener.returncode for opener in openers] == [0] * 6, [err for _out, err in results]
    state = fingerprint(database_url)["state"]
    assert state.revisions == (HEAD,) and state.store_tables == migrate.STORE_TABLES
    assert _differences(database_url, schema.metadata) == []


# -- (f) passwords stay out of errors and output ----------------------------------------------------------------


@pytest.fixture
def postgres_url_with_password() -> Iterator[str]:
    """A fresh PostgreSQL database through a URL holding a password (the server trusts 127.0.0.1, so any
    password connects: the point is what is printed)."""
    with fresh_postgres_database() as url:
        secret_url = with_password(url)
        yield secret_url
        dispose_engine(secret_url)


@pytest.mark.postgres
def test_the_password_never_appears_in_errors_or_the_commands_output(postgres_url_with_password: str) -> None:
    url = postgres_url_with_password
    assert PASSWORD in url
    migrate.upgrade(url, "0001")

    with pytest.raises(StoreSchemaOutOfDate) as refused:
        MailStore(database_url=url).check_schema()
    assert PASSWORD not in str(refused.value) and "postgres:***@127.0.0.1" in str(refused.value)

    outputs = [run_command(url, "current"), run_command(url, "upgrade"), run_command(url, "current")]
    assert [done.returncode for done in outputs] == [0, 0, 0], [done.stderr for done in outputs]
    assert f"after:  revision {HEAD} (head)" in outputs[1].stdout
    for done in outputs:
        assert PASSWORD not in done.stdout + done.stderr
        assert "postgres:***@127.0.0.1" in done.stdout

    # An unreachable server is reported through the same masked URL.
    wrong_port = sa.engine.make_url(url).set(port=1).render_as_string(hide_password=False)
    failed = run_command(wrong_port, "current")
    assert failed.returncode == 1 and "cannot use the store database" in failed.stderr
    assert PASSWORD not in failed.stdout + failed.stderr
