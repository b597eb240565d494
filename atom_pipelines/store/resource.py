"""The SQL store: SQLite file by default, PostgreSQL in production and CI (``ATOM_DATABASE_URL``).

Assets hand data to each other through these tables, not through an IO manager, because a backfill run
writes many partitions at once and the default IO managers cannot store a multi-partition range.
Every write replaces exactly the rows of the partitions it covers, in one transaction, with bulk inserts
(on PostgreSQL, COPY through psycopg 3: see ``engine.py`` for how URLs map to that driver).

The schema is checked once per database and process on the first use of ``MailStore.engine``
(``migrate.ensure_schema``): an empty database is created at head, anything not at head is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, NamedTuple

import pandas as pd
import psycopg
from dagster import ConfigurableResource
from psycopg import sql
from psycopg.types.json import Json
from pydantic import Field
from sqlalchemy import JSON, Connection, Date, Engine, Integer, Select, Table, Text, and_, delete, func, or_, select
from sqlalchemy import cast as sa_cast
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from atom_pipelines.partitions import MailboxWindow
from atom_pipelines.store import schema
from atom_pipelines.store.engine import dispose_engine as dispose_engine
from atom_pipelines.store.engine import engine_for as engine_for
from atom_pipelines.store.migrate import ensure_schema

#: The PostgreSQL advisory lock that serializes progress writes (an arbitrary constant of this project).
_PROGRESS_LOCK = 0x61746F6D_6461

#: Rows per INSERT statement batch; SQLAlchemy's insertmanyvalues packs them into multi-row VALUES.
INSERT_CHUNK = 5_000


def _partition_filter(table: Table, windows: Sequence[MailboxWindow]):
    """The rows of these mailbox-days: one BETWEEN per run of consecutive days, so a two-year catch-up is one
    condition per mailbox rather than 730 bound parameters (SQLite caps a statement at 32,766)."""
    return or_(
        *(
            and_(table.c.mailbox == w.mailbox, table.c.day.between(first, last))
            for w in windows
            for first, last in w.spans()
        )
    )


class StoredVersion(NamedTuple):
    """Which version of a message the store holds: what a Graph delta change is compared with."""

    day: dt.date
    change_key: str | None
    parent_folder_id: str | None


class MailStore(ConfigurableResource):
    """The pipeline's tables. The URL may hold a password: pass it as ``EnvVar`` so the UI shows the name."""

    # No default: the code location passes ATOM_DATABASE_URL or the settings' SQLite file (resources.py); a
    # default here would silently be another database than the code location's.
    database_url: str = Field(description="SQLAlchemy URL (ATOM_DATABASE_URL).")

    @property
    def engine(self) -> Engine:
        """The database's engine; the first use in a process checks its schema (creating an empty one)."""
        return ensure_schema(self.database_url)

    def check_schema(self) -> None:
        """Raise ``StoreSchemaOutOfDate`` now, not at the first write, if the database needs an upgrade."""
        ensure_schema(self.database_url)

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

    def quiet_baselines(
        self, models: Sequence[str], since: dt.datetime, excluding: Sequence[MailboxWindow]
    ) -> dict[str, tuple[int, int]]:
        """model -> (messages with text, of those quiet) recorded since ``since``, outside these partitions:
        each model's own recent baseline for the quiet check."""
        table = schema.model_quiet_counts
        if not models:
            return {}
        query = (
            select(table.c.model, func.sum(table.c.with_text), func.sum(table.c.quiet))
            .where(table.c.model.in_(list(models)), table.c.recorded_at >= since)
            .group_by(table.c.model)
        )
        if excluding:
            query = query.where(~_partition_filter(table, excluding))
        with self.engine.connect() as conn:
            return {row[0]: (int(row[1] or 0), int(row[2] or 0)) for row in conn.execute(query)}

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

    # -- the progress of each mailbox-day (partitions.py) ------------------------------------------------

    def record_days(
        self,
        asset: str,
        windows: Sequence[MailboxWindow],
        *,
        rows: Mapping[str, int],
        failed: Mapping[str, str],
        run_id: str,
        root_run_id: str,
        invalidates: Sequence[str] = (),
    ) -> None:
        """Record every day of ``windows`` as done for ``asset`` (``rows``: mailbox-day key -> the asset's
        rows that day), or failed where ``failed`` names the day (key -> why), in one transaction. The same
        days of the assets in ``invalidates`` (downstream of this one) lose their progress: what they were
        built from has just been replaced, so their next catch-up rebuilds them."""
        if not windows:
            return
        table = schema.mailbox_days
        now = dt.datetime.now(dt.timezone.utc)
        records = [
            {
                "asset": asset,
                "mailbox": window.mailbox,
                "day": day,
                "status": "failed" if key in failed else "done",
                "rows": int(rows.get(key, 0)),
                "detail": failed.get(key, "")[:2_000],
                "run_id": run_id,
                "root_run_id": root_run_id,
                "recorded_at": now,
            }
            for window in windows
            for day, key in zip(window.days, window.mailbox_day_keys(), strict=True)
        ]
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Two runs of one mailbox (the daily sync and a delta re-sync) may record the same day at
                # once: one at a time, or the second insert would hit the first one's primary key.
                conn.execute(select(func.pg_advisory_xact_lock(_PROGRESS_LOCK)))
            conn.execute(
                delete(table).where(table.c.asset.in_([asset, *invalidates]), _partition_filter(table, windows))
            )
            _bulk_insert(conn, table, records)

    def done_days(
        self, asset: str, mailboxes: Sequence[str], first: dt.date, last: dt.date, root_run_id: str | None = None
    ) -> set[tuple[str, dt.date]]:
        """(mailbox, day) pairs in ``[first, last]`` done for ``asset``; with ``root_run_id``, only those done
        by that run or a re-execution of it (what a re-execution from failure skips)."""
        table = schema.mailbox_days
        done: set[tuple[str, dt.date]] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(mailboxes), 500):
                query = select(table.c.mailbox, table.c.day).where(
                    table.c.asset == asset,
                    table.c.status == "done",
                    table.c.mailbox.in_(list(mailboxes[start : start + 500])),
                    table.c.day.between(first, last),
                )
                if root_run_id is not None:
                    query = query.where(table.c.root_run_id == root_run_id)
                done.update((mailbox, day) for mailbox, day in conn.execute(query))
        return done

    def day_statuses(
        self, asset: str, mailboxes: Sequence[str], first: dt.date, last: dt.date
    ) -> dict[str, dict[dt.date, tuple[str, str]]]:
        """mailbox -> day -> (status, detail) of the recorded days in ``[first, last]`` (a day absent is
        missing)."""
        table = schema.mailbox_days
        statuses: dict[str, dict[dt.date, tuple[str, str]]] = {mailbox: {} for mailbox in mailboxes}
        with self.engine.connect() as conn:
            for start in range(0, len(mailboxes), 500):
                query = select(table.c.mailbox, table.c.day, table.c.status, table.c.detail).where(
                    table.c.asset == asset,
                    table.c.mailbox.in_(list(mailboxes[start : start + 500])),
                    table.c.day.between(first, last),
                )
                for mailbox, day, status, detail in conn.execute(query):
                    statuses[mailbox][day] = (status, detail)
        return statuses

    def latest_done_days(self, asset: str) -> dict[str, dt.date]:
        """mailbox -> its newest day done for ``asset`` (by day, not by when: re-syncing an old day does not
        make a mailbox fresh)."""
        table = schema.mailbox_days
        query = (
            select(table.c.mailbox, func.max(table.c.day))
            .where(table.c.asset == asset, table.c.status == "done")
            .group_by(table.c.mailbox)
        )
        with self.engine.connect() as conn:
            return {mailbox: day for mailbox, day in conn.execute(query)}

    # -- the entity graph -------------------------------------------------------------------------------

    def frame(self, query: Select) -> pd.DataFrame:
        """A query's rows as a DataFrame, for the graph build's bulk reads (a million links and more).

        On PostgreSQL through ``COPY (query) TO STDOUT`` in CSV, parsed by pandas' C reader: a third of the
        time of fetching rows through the driver. Text columns come back as str (NULL as None), date columns
        as ``datetime64`` (NaT for NULL), integers as int64.
        """
        columns = list(query.selected_columns)
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                frame = _copy_out(conn, query)
            else:
                frame = pd.DataFrame(conn.execute(query).fetchall(), columns=[c.name for c in columns], dtype=object)
        for column in columns:
            if isinstance(column.type, Date):
                frame[column.name] = pd.to_datetime(frame[column.name])
            elif isinstance(column.type, Integer):
                frame[column.name] = frame[column.name].astype("int64")
            else:
                frame[column.name] = frame[column.name].astype(object).where(frame[column.name].notna(), None)
        return frame

    def write_graph(
        self,
        frames: Mapping[Table, pd.DataFrame | Future[pd.DataFrame]],
        build: Mapping[str, Any] | Future[dict[str, Any]],
    ) -> None:
        """Replace the graph tables with one build's rows and note the build, in one transaction: a reader
        sees the previous graph or this one, never a mix. Each frame holds its table's columns; a frame or the
        build row may be a Future, waited for when its turn comes (the build computes them meanwhile)."""
        with self.engine.begin() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:
                # TRUNCATE rather than DELETE: no dead copy of a million rows left behind every build. It locks
                # the tables until commit, so a reader waits for the new graph instead of reading the old.
                names = sql.SQL(", ").join(sql.Identifier(table.name) for table in frames)
                with conn.connection.driver_connection.cursor() as cursor:
                    cursor.execute(sql.SQL("TRUNCATE {}").format(names))
            for table, pending in frames.items():
                frame = pending.result() if isinstance(pending, Future) else pending
                if postgres:
                    _copy_frame(conn, table, frame)
                else:
                    conn.execute(delete(table))
                    _bulk_insert(conn, table, _frame_records(frame, table))
            row = build.result() if isinstance(build, Future) else build
            conn.execute(schema.graph_builds.insert().values(**row))

    def email_identities(self) -> pd.DataFrame:
        """Per stored message: mailbox, message_id, internet_message_id, received_at and ``fingerprint``, a
        hash of what every copy of one e-mail shares whichever mailbox holds it (sender, To, Cc, subject,
        new text), hashed in the database on PostgreSQL so that bodies never travel."""
        table = schema.messages
        parts = [
            table.c.sender_address,
            table.c.to_recipients,
            table.c.cc_recipients,
            table.c.subject,
            table.c.new_text,
        ]
        columns = [table.c.mailbox, table.c.message_id, table.c.internet_message_id, table.c.received_at]
        if self.dialect == "postgresql":
            joined = func.concat_ws("\x1f", *(func.coalesce(sa_cast(p, Text), "") for p in parts))
            query = select(*columns, func.md5(joined).label("fingerprint"))
            frame = self.frame(query)
        else:
            frame = self.frame(select(*columns, *parts))
            frame["fingerprint"] = [
                hashlib.md5(
                    "\x1f".join(_fingerprint_text(v) for v in values).encode(), usedforsecurity=False
                ).hexdigest()
                for values in frame[[p.name for p in parts]].itertuples(index=False, name=None)
            ]
            frame = frame.drop(columns=[p.name for p in parts])
        frame["received_at"] = pd.to_datetime(frame["received_at"], utc=True)
        return frame

    def latest_graph_build(self) -> dict[str, Any] | None:
        builds = schema.graph_builds
        with self.engine.connect() as conn:
            row = conn.execute(select(builds).order_by(builds.c.built_at.desc()).limit(1)).first()
        return dict(row._mapping) if row is not None else None

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
    """PostgreSQL's COPY through psycopg 3, inside the caller's transaction: 10x and more over INSERTs.

    psycopg adapts each value (dates, aware datetimes, bools, numbers, None as NULL) to COPY's text format.
    A dict or list would be taken for a PostgreSQL array or fail: it is wrapped in ``Json``, which COPY
    hands to the column as JSON text (the ``JSON`` columns, e.g. ``messages.to_recipients``, hold lists).
    """
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return
    columns = [column.name for column in table.columns]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(name) for name in columns)
    )
    driver_connection = conn.connection.driver_connection
    if not isinstance(driver_connection, psycopg.Connection):
        raise TypeError(f"COPY needs a psycopg 3 connection, the store's engine gave {type(driver_connection)!r}")
    try:
        with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in itertools.chain((first,), iterator):
                copy.write_row([_copy_value(row.get(name)) for name in columns])
    except psycopg.Error as exc:
        # As SQLAlchemy would raise it for an INSERT (IntegrityError for a duplicate key, ...), with the table.
        raise DBAPIError.instance(
            statement.as_string(driver_connection), None, exc, psycopg.Error, dialect=conn.dialect
        ) from exc


def _fingerprint_text(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else str(value)


def _frame_records(frame: pd.DataFrame, table: Table) -> Iterator[dict[str, Any]]:
    columns = [column.name for column in table.columns]
    for values in frame[columns].itertuples(index=False, name=None):
        yield {name: (None if _missing(value) else value) for name, value in zip(columns, values, strict=True)}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NaT


def _copy_frame(conn: Connection, table: Table, frame: pd.DataFrame) -> None:
    """COPY a DataFrame as CSV written by pandas' C writer: a graph build writes a million rows, and
    ``_copy_into``'s per-row adaptation in Python is most of that write's time. JSON columns are
    serialised first; NULL is \\N, as in ``_copy_out``."""
    columns = [column.name for column in table.columns]
    out = frame[columns].copy()
    for column in table.columns:
        if isinstance(column.type, JSON):
            out[column.name] = [json.dumps(value) for value in out[column.name]]
    buffer = io.StringIO()
    out.to_csv(buffer, index=False, header=False, na_rep="\\N", date_format="%Y-%m-%d")
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, NULL '\\N')").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(name) for name in columns)
    )
    with conn.connection.driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
        copy.write(buffer.getvalue())


def _copy_out(conn: Connection, query: Select) -> pd.DataFrame:
    text = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
    statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER, NULL '\\N')").format(sql.SQL(text))
    buffer = io.BytesIO()
    with conn.connection.driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
        for block in copy:
            buffer.write(block)
    buffer.seek(0)
    # Every column as text first: pandas would guess an id of digits is a number. NULL is \N, so an empty
    # string stays an empty string.
    return pd.read_csv(buffer, dtype=str, keep_default_na=False, na_values=["\\N"])


def _copy_value(value: Any) -> Any:
    return Json(value) if isinstance(value, dict | list) else value
