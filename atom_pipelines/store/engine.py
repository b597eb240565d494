"""One SQLAlchemy engine (and pool) per store database and process.

PostgreSQL is always opened with psycopg 3 (``postgresql+psycopg``), whatever driver the URL names: the
store's bulk writes use psycopg 3's COPY API (``cursor.copy`` / ``write_row``). ``postgresql://`` already
means psycopg 3 under SQLAlchemy 2.1; ``postgresql+psycopg2://`` (what dagster-postgres, the tests and older
docs use) is accepted and swapped, so one URL can serve the Dagster instance (psycopg2) and the store. Other
PostgreSQL drivers are refused rather than silently replaced, since their URLs may carry driver-specific
options.

Creating an engine never touches the schema: ``migrate.ensure_schema`` checks (and, for an empty database,
creates) it once per database and process.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

#: PostgreSQL drivers whose URLs mean the same libpq connection, so swapping the driver is safe.
_LIBPQ_DRIVERS = {"postgresql", "postgresql+psycopg", "postgresql+psycopg2"}

_engines: dict[str, Engine] = {}
#: Databases whose schema this process has checked (``migrate.ensure_schema``): checked once, not per call.
_schema_checked: set[str] = set()
_engines_lock = threading.Lock()


def store_url(url: str | URL) -> URL:
    """The URL the store connects with: PostgreSQL through psycopg 3, anything else as given."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return parsed
    if parsed.drivername not in _LIBPQ_DRIVERS:
        raise ValueError(
            f"the store speaks psycopg 3 to PostgreSQL; {display_url(parsed)} names driver {parsed.drivername!r}: "
            "use postgresql://, postgresql+psycopg:// or postgresql+psycopg2://"
        )
    return parsed.set(drivername="postgresql+psycopg")


def display_url(url: str | URL) -> str:
    """The URL as it may be printed or logged: password masked."""
    return make_url(url).render_as_string(hide_password=True)


def engine_key(url: str | URL) -> str:
    """Cache key of a database: URLs that differ only in the psycopg driver they name share one engine."""
    return store_url(url).render_as_string(hide_password=False)


def engine_for(url: str) -> Engine:
    """The process's engine for this database (schema unchecked: see ``migrate.ensure_schema``)."""
    key = engine_key(url)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _create_engine(store_url(url))
            _engines[key] = engine
        return engine


def dispose_engine(url: str) -> None:
    """Close and forget the engine of a database, and that its schema was checked (before dropping or
    recreating it, in tests and tools): the next use opens and checks it afresh."""
    key = engine_key(url)
    with _engines_lock:
        engine = _engines.pop(key, None)
        _schema_checked.discard(key)
    if engine is not None:
        engine.dispose()


def schema_checked(url: str) -> bool:
    with _engines_lock:
        return engine_key(url) in _schema_checked


def note_schema_checked(url: str, checked: bool = True) -> None:
    """Record that the database is (or, after moving it off head, is no longer) known to be at head."""
    key = engine_key(url)
    with _engines_lock:
        if checked:
            _schema_checked.add(key)
        else:
            _schema_checked.discard(key)


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
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
