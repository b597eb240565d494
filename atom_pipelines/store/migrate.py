"""The store's schema version: Alembic revisions in ``migrations/``, checked when a process opens the store.

Policy (store/README.md, "Migrations"):
* a database holding none of the store's tables is created at head by running the migrations (creating is
  not altering: the first start of ``scripts/dev`` and every test's fresh database need nothing else);
* a database at head is used as is;
* anything else is never altered implicitly: a database at an older revision, or holding store tables but no
  version row (made before migrations), raises ``StoreSchemaOutOfDate`` naming the database (password
  hidden), its revision, the head and the command that upgrades it (``UPGRADE_COMMAND``); one at a revision
  this code does not know (a newer release upgraded it) raises ``StoreSchemaTooNew``.

The check runs once per database and process (``ensure_schema``), on the first use of ``MailStore.engine``
and when the code location loads. Creating and upgrading run in one transaction that first takes a lock
(PostgreSQL: ``pg_advisory_xact_lock``; SQLite: ``BEGIN IMMEDIATE``) and then reads the revision again, so
run workers starting together on an empty database create it once, and the others find it at head.

The revision lives in ``atom_store_alembic_version``, not Alembic's default ``alembic_version``: Dagster's
instance storage (dagster-postgres) keeps its own Alembic revision in ``alembic_version``, and the store may
share a database with it.
"""

from __future__ import annotations

import functools
import re
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy.pool import NullPool

from atom_pipelines.store import schema
from atom_pipelines.store.engine import display_url, engine_for, note_schema_checked, schema_checked

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
VERSION_TABLE = "atom_store_alembic_version"
UPGRADE_COMMAND = "python -m atom_pipelines.store upgrade"
STORE_TABLES = frozenset(schema.metadata.tables)

# One bigint advisory lock for every migration of the store in a PostgreSQL database. The Graph gate's locks
# take two int4 keys, a separate key space, so they never collide with it.
_MIGRATION_LOCK_KEY = zlib.crc32(b"atom_pipelines.store migrations")
_check_lock = threading.Lock()


class StoreSchemaError(RuntimeError):
    """The store's database is not at the schema this code was written for."""


class StoreSchemaOutOfDate(StoreSchemaError):
    """The database is behind this code (an older revision, or no revision at all): it must be upgraded."""

    def __init__(self, database: str, revision: str | None, head: str, detail: str) -> None:
        self.database = database
        self.revision = revision
        self.head = head
        super().__init__(
            f"The store database {database} is at revision {revision or 'none'}; this code needs revision "
            f"{head} (head). {detail} It is never upgraded implicitly: run `{UPGRADE_COMMAND}` with "
            "ATOM_DATABASE_URL naming this database, then start again."
        )


class StoreSchemaTooNew(StoreSchemaError):
    """The database is at a revision this code does not know: a newer release upgraded it."""

    def __init__(self, database: str, revision: str, head: str) -> None:
        self.database = database
        self.revision = revision
        self.head = head
        super().__init__(
            f"The store database {database} is at revision {revision}, which this code does not know (its "
            f"head is {head}): a newer release upgraded it. Deploy that release or a newer one; this one "
            "must not write to it."
        )


@dataclass(frozen=True)
class SchemaState:
    """What a database holds of the store: its recorded revision(s) and which store tables exist."""

    revisions: tuple[str, ...]
    store_tables: frozenset[str]

    @property
    def empty(self) -> bool:
        return not self.revisions and not self.store_tables

    @property
    def revision(self) -> str | None:
        return ", ".join(self.revisions) or None


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration, built in code: works from a checkout and from an installed package."""
    cfg = Config()
    # ConfigParser interpolates '%': a path holding one must reach Alembic intact.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    if head is None:
        raise StoreSchemaError(f"no revisions under {MIGRATIONS_DIR}")
    return head


def known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _scripts().walk_revisions())


def read_state(conn: sa.Connection) -> SchemaState:
    tables = set(sa.inspect(conn).get_table_names())
    revisions: tuple[str, ...] = ()
    if VERSION_TABLE in tables:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        revisions = tuple(sorted(context.get_current_heads()))
    return SchemaState(revisions=revisions, store_tables=frozenset(tables & STORE_TABLES))


def schema_differences(conn: sa.Connection) -> list[Any]:
    """Alembic's autogenerate comparison of the database's store tables with schema.py: [] when they agree.

    Only the store's tables are compared: a database shared with Dagster's instance storage holds others.
    """

    def ours(name: str | None, type_: str, _parents: Any) -> bool:
        return type_ != "table" or name in STORE_TABLES

    context = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE, "compare_type": True, "include_name": ours}
    )
    return list(compare_metadata(context, schema.metadata))


def ensure_schema(url: str) -> sa.Engine:
    """The store's engine for this database, its schema checked (once per process) or, if empty, created.

    Raises ``StoreSchemaOutOfDate`` / ``StoreSchemaTooNew`` (nothing written) for any other database.
    """
    engine = engine_for(url)
    if schema_checked(url):
        return engine
    with _check_lock:
        if not schema_checked(url):
            _check_or_create(url, engine)
            note_schema_checked(url)
    return engine


def _check_or_create(url: str, engine: sa.Engine) -> None:
    head = head_revision()
    with engine.connect() as conn:
        state = read_state(conn)
    if state.revisions == (head,):
        _require_all_tables(url, state)
        return
    if not state.empty:
        raise _refusal(url, state, head)
    with _migration_transaction(engine) as conn:
        # Read again under the lock: another process may have created the store since the first look.
        state = read_state(conn)
        if state.empty:
            _alembic(conn, command.upgrade, "head")
            conn.commit()
        elif state.revisions != (head,):
            raise _refusal(url, state, head)


def _require_all_tables(url: str, state: SchemaState) -> None:
    missing = STORE_TABLES - state.store_tables
    if missing:
        raise StoreSchemaError(
            f"The store database {display_url(url)} is recorded at revision {state.revision} but lacks the "
            f"tables {', '.join(sorted(missing))}: someone dropped them. Restore it from a backup."
        )


def _refusal(url: str, state: SchemaState, head: str) -> StoreSchemaError:
    database = display_url(url)
    unknown = [revision for revision in state.revisions if revision not in known_revisions()]
    if unknown:
        return StoreSchemaTooNew(database, ", ".join(unknown), head)
    if not state.revisions:
        detail = (
            f"It holds the store's tables ({', '.join(sorted(state.store_tables))}) but no revision in "
            f"{VERSION_TABLE}: it was created before the store had migrations. The upgrade command recognises "
            "the schemas of those releases, records their revision and upgrades from there."
        )
    else:
        detail = "A newer release of this code changed the schema."
    return StoreSchemaOutOfDate(database, state.revision, head, detail)


@contextmanager
def _migration_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection inside a transaction holding the store's migration lock; the caller commits.

    PostgreSQL: a transaction-level advisory lock, released at commit or rollback (or if the process dies),
    and transactional DDL, so a failed migration leaves nothing behind. SQLite: ``BEGIN IMMEDIATE`` takes the
    file's write lock up front (waiting up to the engine's 60 s timeout); its DDL is transactional too.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("select pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        elif conn.dialect.name == "sqlite":
            # pysqlite begins transactions itself only before DML; this BEGIN makes the DDL part of it too.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


def _alembic(conn: sa.Connection, operation: Callable[..., Any], revision: str) -> None:
    operation(alembic_config(conn), revision)


def current(url: str) -> SchemaState:
    with engine_for(url).connect() as conn:
        return read_state(conn)


def upgrade(url: str, revision: str = "head") -> tuple[SchemaState, SchemaState]:
    """Bring the database to ``revision`` (default head) in one locked transaction; (before, after).

    A database made before migrations (store tables, no revision) is recognised by the one column the
    pre-migration releases differed in, stamped at that revision and upgraded; then it must match schema.py
    exactly, or everything is rolled back.
    """
    engine = engine_for(url)
    head = head_revision()
    try:
        with _migration_transaction(engine) as conn:
            before = read_state(conn)
            unknown = [rev for rev in before.revisions if rev not in known_revisions()]
            if unknown:
                raise StoreSchemaTooNew(display_url(url), ", ".join(unknown), head)
            adopted = not before.revisions and bool(before.store_tables)
            if adopted:
                if revision not in ("head", head):
                    raise StoreSchemaError(
                        f"{display_url(url)} has no revision yet: it can only be upgraded to head, not {revision}"
                    )
                _alembic(conn, command.stamp, _pre_migration_revision(url, conn, before))
            _alembic(conn, command.upgrade, revision)
            if adopted:
                differences = schema_differences(conn)
                if differences:
                    raise StoreSchemaError(
                        f"The store database {display_url(url)} was made before migrations, and its tables match "
                        f"no revision: after upgrading, schema.py still differs by {differences}. Nothing was "
                        "changed."
                    )
            after = read_state(conn)
            conn.commit()
    finally:
        # Whatever happened, this process must look at the database again before using it.
        note_schema_checked(url, checked=False)
    return before, after


def _pre_migration_revision(url: str, conn: sa.Connection, state: SchemaState) -> str:
    """Which revision a database created by ``metadata.create_all`` (before migrations) is at.

    Those releases differed only in ``extraction_cache``'s hash column: ``content_hash`` up to df9073a
    (revision 0001), ``prompt_hash`` from 17e3010 (0002). Later databases always carry a revision.
    """
    columns = set()
    if "extraction_cache" in state.store_tables:
        columns = {column["name"] for column in sa.inspect(conn).get_columns("extraction_cache")}
    if "content_hash" in columns:
        return "0001"
    if "prompt_hash" in columns:
        return "0002"
    raise StoreSchemaError(
        f"The store database {display_url(url)} holds store tables ({', '.join(sorted(state.store_tables))}) "
        "but no revision, and not the schema of any release before migrations. Nothing was changed."
    )


def new_revision(message: str, autogenerate: bool = False) -> Script:
    """Write ``migrations/versions/NNNN_<message>.py``, the next number after head.

    ``autogenerate`` compares schema.py with a scratch SQLite database brought to head (never a real one), so
    the draft holds exactly what schema.py changed since; batch operations, so it runs on SQLite and
    PostgreSQL. Read and edit the draft: a rename comes out as a drop and an add.
    """
    head = head_revision()
    rev_id = f"{int(head) + 1:04d}" if re.fullmatch(r"\d+", head) else None
    if not autogenerate:
        script = command.revision(alembic_config(), message=message, rev_id=rev_id)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            engine = sa.create_engine(f"sqlite:///{scratch}/head.sqlite", poolclass=NullPool)
            try:
                with engine.connect() as conn:
                    _alembic(conn, command.upgrade, "head")
                    script = command.revision(alembic_config(conn), message=message, autogenerate=True, rev_id=rev_id)
            finally:
                engine.dispose()
    if not isinstance(script, Script):
        raise StoreSchemaError(f"alembic wrote no single revision for {message!r}: {script!r}")
    return script
