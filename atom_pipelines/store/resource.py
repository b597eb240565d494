"""The SQL store: SQLite file by default, PostgreSQL in production and CI (``ATOM_DATABASE_URL``).

Assets hand data to each other through these tables, not through an IO manager, because a backfill run
writes many partitions at once and the default IO managers cannot store a multi-partition range.
Every write replaces exactly the rows of the partitions it covers, in one transaction, with bulk inserts.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from dagster import ConfigurableResource
from pydantic import Field
from sqlalchemy import Connection, Engine, Table, and_, create_engine, delete, event, func, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url

from atom_pipelines import config
from atom_pipelines.partitions import MailboxWindow
from atom_pipelines.store import schema

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()

#: Rows per INSERT statement batch; SQLAlchemy's insertmanyvalues packs them into multi-row VALUES.
INSERT_CHUNK = 5_000


def engine_for(url: str) -> Engine:
    """One engine (and pool) per database per process; creates the tables on first use."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create_engine(url)
            schema.metadata.create_all(engine)
            _engines[url] = engine
        return engine


def dispose_engine(url: str) -> None:
    """Close and forget the engine of a database (before dropping it, in tests and tools)."""
    with _engines_lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Runs are separate processes writing one file: wait for the lock instead of failing at once.
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _partition_filter(table: Table, windows: Sequence[MailboxWindow]):
    return or_(*(and_(table.c.mailbox == w.mailbox, table.c.day.in_(w.days)) for w in windows))


class StoredVersion(NamedTuple):
    """Which version of a message the store holds: what a Graph delta change is compared with."""

    day: dt.date
    change_key: str | None
    parent_folder_id: str | None


class MailStore(ConfigurableResource):
    """The pipeline's tables. The URL may hold a password: pass it as ``EnvVar`` so the UI shows the name."""

    database_url: str = Field(default_factory=config.database_url, description="SQLAlchemy URL (ATOM_DATABASE_URL).")

    @property
    def engine(self) -> Engine:
        return engine_for(self.database_url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # -- writes ---------------------------------------------------------------------------------------

    def replace_partitions(
        self,
        windows: Sequence[MailboxWindow],
        rows_by_table: Mapping[Table, Sequence[Mapping[str, Any]]],
        listed_since: dt.datetime | None = None,
    ) -> None:
        """Replace the rows of exactly these partitions in each table, all in one transaction.

        ``listed_since``: the source was listed after this instant, so pending delta days noted before it
        are served by this write and cleared with it.
        """
        if not windows:
            return
        with self.engine.begin() as conn:
            for table, rows in rows_by_table.items():
                conn.execute(delete(table).where(_partition_filter(table, windows)))
                _bulk_insert(conn, table, rows)
            if listed_since is not None:
                pending = schema.graph_pending_days
                conn.execute(
                    delete(pending).where(_partition_filter(pending, windows), pending.c.noted_at <= listed_since)
                )

    def cache_put(self, row: Mapping[str, Any]) -> None:
        """Admit one answer to the extraction cache; a concurrent writer of the same key wins silently,
        since both wrote the same answer to the same question."""
        table = schema.extraction_cache
        insert = (postgresql_insert if self.dialect == "postgresql" else sqlite_insert)(table)
        with self.engine.begin() as conn:
            conn.execute(insert.values(**row).on_conflict_do_nothing(index_elements=["cache_key"]))

    def cache_get(self, cache_keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Cached answers by key, for the keys that have one."""
        table = schema.extraction_cache
        found: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(cache_keys), 1_000):
                chunk = list(cache_keys[start : start + 1_000])
                for row in conn.execute(select(table).where(table.c.cache_key.in_(chunk))):
                    found[row.cache_key] = dict(row._mapping)
        return found

    # -- reads ----------------------------------------------------------------------------------------

    def rows(self, table: Table, windows: Sequence[MailboxWindow]) -> list[dict[str, Any]]:
        """Every row of these partitions, in primary-key order (so re-runs see the same order)."""
        if not windows:
            return []
        query = select(table).where(_partition_filter(table, windows)).order_by(*table.primary_key.columns)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def aggregated_links(self) -> Iterator[tuple[str, str, str, float, int]]:
        """All links summed per (source, target, kind): (source, target, kind, weight, messages)."""
        links = schema.entity_links
        query = select(
            links.c.source_key,
            links.c.target_key,
            links.c.kind,
            func.sum(links.c.weight),
            func.count(),
        ).group_by(links.c.source_key, links.c.target_key, links.c.kind)
        with self.engine.connect() as conn:
            for row in conn.execution_options(stream_results=True, yield_per=50_000).execute(query):
                yield row[0], row[1], row[2], float(row[3]), int(row[4])

    def entity_labels(self) -> dict[str, tuple[str, str]]:
        """entity_key -> (most common name, type), for labelling graph nodes."""
        ents = schema.entities
        query = (
            select(ents.c.entity_key, ents.c.name, ents.c.entity_type, func.count().label("n"))
            .group_by(ents.c.entity_key, ents.c.name, ents.c.entity_type)
            .order_by(ents.c.entity_key, func.count().desc(), ents.c.name)
        )
        labels: dict[str, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            for key, name, entity_type, _count in conn.execute(query):
                labels.setdefault(key, (name, entity_type))
        return labels

    def message_counts(self, windows: Sequence[MailboxWindow]) -> dict[tuple[str, dt.date], int]:
        """(mailbox, day) -> stored messages, for the completeness check (days without rows are absent)."""
        if not windows:
            return {}
        table = schema.messages
        query = (
            select(table.c.mailbox, table.c.day, func.count())
            .where(_partition_filter(table, windows))
            .group_by(table.c.mailbox, table.c.day)
        )
        with self.engine.connect() as conn:
            return {(mailbox, day): int(n) for mailbox, day, n in conn.execute(query)}

    def stored_versions(self, mailbox: str) -> dict[str, StoredVersion]:
        """message id -> (day, change key, folder id) of every stored message of a mailbox: what the delta
        round compares Graph's changes with."""
        table = schema.messages
        query = select(table.c.message_id, table.c.day, table.c.change_key, table.c.parent_folder_id).where(
            table.c.mailbox == mailbox
        )
        with self.engine.connect() as conn:
            return {message_id: StoredVersion(day, key, folder) for message_id, day, key, folder in conn.execute(query)}

    def delta_link(self, mailbox: str, folder: str) -> str | None:
        table = schema.graph_delta_state
        query = select(table.c.delta_link).where(table.c.mailbox == mailbox, table.c.folder == folder)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one_or_none()

    def note_delta_round(
        self, mailbox: str, folder: str, delta_link: str, days: Mapping[dt.date, str], noted_at: dt.datetime
    ) -> None:
        """Store a completed delta round: its deltaLink and the days it found changed, in one transaction,
        so a round is either wholly noted or replayed from the previous link."""
        state = schema.graph_delta_state
        pending = schema.graph_pending_days
        postgres = self.dialect == "postgresql"
        insert = postgresql_insert if postgres else sqlite_insert
        link_statement = (
            insert(state)
            .values(mailbox=mailbox, folder=folder, delta_link=delta_link, rounds=1, updated_at=noted_at)
            .on_conflict_do_update(
                index_elements=["mailbox", "folder"],
                set_={"delta_link": delta_link, "rounds": state.c.rounds + 1, "updated_at": noted_at},
            )
        )
        with self.engine.begin() as conn:
            conn.execute(link_statement)
            for day, reason in sorted(days.items()):
                statement = insert(pending).values(mailbox=mailbox, day=day, noted_at=noted_at, reason=reason)
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["mailbox", "day"], set_={"noted_at": noted_at, "reason": reason}
                    )
                )

    def pending_days(self) -> list[dict[str, Any]]:
        """Days noted changed by a delta round and not re-listed since, oldest mailbox/day first."""
        pending = schema.graph_pending_days
        with self.engine.connect() as conn:
            rows = conn.execute(select(pending).order_by(pending.c.mailbox, pending.c.day))
            return [dict(row._mapping) for row in rows]

    def forget_delta_link(self, mailbox: str, folder: str) -> None:
        table = schema.graph_delta_state
        with self.engine.begin() as conn:
            conn.execute(delete(table).where(table.c.mailbox == mailbox, table.c.folder == folder))

    def count(self, table: Table) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _bulk_insert(conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]]) -> None:
    if conn.dialect.name == "postgresql":
        _copy_into(conn, table, rows)
        return
    batch: list[Mapping[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= INSERT_CHUNK:
            conn.execute(table.insert(), batch)
            batch = []
    if batch:
        conn.execute(table.insert(), batch)


def _copy_into(conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]]) -> None:
    """PostgreSQL's COPY, inside the caller's transaction: 10x and more over executemany of INSERTs."""
    columns = [column.name for column in table.columns]
    buffer = io.StringIO()
    count = 0
    for row in rows:
        buffer.write(",".join(_csv_field(row.get(name)) for name in columns))
        buffer.write("\n")
        count += 1
    if not count:
        return
    buffer.seek(0)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        names = ", ".join(f'"{name}"' for name in columns)
        cursor.copy_expert(f'COPY "{table.name}" ({names}) FROM STDIN WITH (FORMAT csv)', buffer)
    finally:
        cursor.close()


def _csv_field(value: Any) -> str:
    """One CSV field for COPY: NULL unquoted and empty, every value quoted (so '' stays an empty string)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dt.date | dt.datetime):
        text = value.isoformat()
    elif isinstance(value, dict | list):
        text = json.dumps(value)
    else:
        text = str(value)
    return '"' + text.replace('"', '""') + '"'
