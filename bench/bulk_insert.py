"""Benchmark: the store's bulk partition write vs row-by-row INSERTs, on PostgreSQL.

What it measures. The same N rows of the ``entities`` table (default 20,000; real rows: the offline heuristic
extractor's entity mentions of the corpus, as ``email_entities`` stores them) are written into a
throwaway database ``atom_bench_<random>`` on 127.0.0.1:5432 (dropped afterwards):
* bulk: ``MailStore.replace_partitions``: delete the partitions' rows, then the store's bulk insert, in one
  transaction (on PostgreSQL ``COPY ... FROM STDIN``: rows through psycopg 3's ``cursor.copy``/``write_row``
  since c2ea0e3, a hand-encoded CSV buffer through psycopg2's ``copy_expert`` from 7cfab42; executemany of
  INSERTs in chunks of INSERT_CHUNK before, and still on SQLite);
* row by row, three ways, each: the same delete, then one INSERT statement per row, in one transaction:
  ``conn.execute(table.insert().values(**row))``, ``conn.execute(table.insert(), row)`` (one compiled statement,
  one parameter set per call), and a raw psycopg (3, the store's driver) ``cursor.execute`` per row (no
  SQLAlchemy at all).
Each method runs ``--repeat`` times (default 3) on a table that already holds the rows, so every write is a
replace; the best time of each counts (the machine is shared and noisy; the best is the least disturbed).

How to read the output. rows/s per method, and bulk's speed-up over each row-by-row way; the target
(docs/architecture.md) is bulk >= 10x row by row. The headline ratio is against the fastest row-by-row way, the
hardest comparison. A markdown table at the end is for the README.

    python bench/bulk_insert.py [--rows N] [--repeat R]
"""

from __future__ import annotations

import os

os.environ["ATOM_START_DATE"] = "2000-12-01"
os.environ["ATOM_END_DATE"] = "2002-07-01"

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import sqlalchemy as sa  # noqa: E402

from atom_pipelines.extraction.extractor import EntityExtractor  # noqa: E402
from atom_pipelines.extraction.run import extract_entities  # noqa: E402
from atom_pipelines.mail.source import ExportMailSource, SourcedMessage, parse_export_line  # noqa: E402
from atom_pipelines.mail.sync import sync_messages  # noqa: E402
from atom_pipelines.partitions import MailboxWindow  # noqa: E402
from atom_pipelines.store import resource as store_resource  # noqa: E402
from atom_pipelines.store import schema  # noqa: E402
from atom_pipelines.store.resource import INSERT_CHUNK, MailStore, dispose_engine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # atom_pipelines_tests is not installed: its corpus helper is imported from the checkout
from atom_pipelines_tests.conftest import plain_corpus_tempdir  # noqa: E402

# The export source reads plain *.jsonl files of a directory, and the corpus ships gzipped.
CORPUS_DIR = Path(os.environ.get("ATOM_BENCH_CORPUS_DIR") or plain_corpus_tempdir())
ADMIN_URL = os.environ.get("ATOM_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
TABLE = schema.entities
#: How the store writes in bulk on PostgreSQL, as far as this script can tell from the module.
BULK_WAY = "COPY FROM STDIN" if hasattr(store_resource, "_copy_into") else f"executemany, {INSERT_CHUNK:,} rows/batch"


def corpus_entity_rows(count: int) -> tuple[list[dict[str, Any]], str]:
    """Entity rows as email_entities stores them: the heuristic over the corpus, through a scratch SQLite store."""
    source = ExportMailSource(export_dir=str(CORPUS_DIR))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/scratch.sqlite"
        store = MailStore(database_url=url)
        days: dict[str, set[dt.date]] = defaultdict(set)  # the days with mail: enough to hold every row
        for path in sorted(CORPUS_DIR.glob("*.jsonl")):
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    parsed = parse_export_line(line, f"{path.name}:{number}") if line.strip() else None
                    if isinstance(parsed, SourcedMessage):
                        days[parsed.mailbox].add(parsed.message.received_day)
        windows = [MailboxWindow(m, tuple(sorted(d))) for m, d in sorted(days.items())]
        sync_messages(source, store, windows)
        extract_entities(EntityExtractor(chain="heuristic", max_concurrency=1), store, windows)
        rows = store.rows(TABLE, windows)
        dispose_engine(url)
    if len(rows) < count:
        # Repeat the corpus' rows under other mailboxes: same shape and sizes, distinct primary keys.
        base = rows
        rows = [
            {**row, "mailbox": f"copy{n}.{row['mailbox']}"} if n else row
            for n in range(count // len(base) + 1)
            for row in base
        ]
    return rows[:count], f"heuristic entity mentions of the corpus ({CORPUS_DIR})"


def synthetic_entity_rows(count: int) -> tuple[list[dict[str, Any]], str]:
    day = dt.date(2001, 10, 1)
    rows = [
        {
            "mailbox": "sally.beck@enron.com",
            "message_id": f"enron-{n // 12:032x}",
            "entity_key": f"person:someone.{n}@enron.com",
            "day": day + dt.timedelta(days=(n // 12) % 60),
            "name": f"Someone {n}",
            "entity_type": "person",
            "roles": "to",
            "evidence": f"To: Someone {n} <someone.{n}@enron.com>",
            "provider": "heuristic",
            "model": "rules-v1",
        }
        for n in range(count)
    ]
    return rows, "synthetic person mentions (the corpus was not found)"


def windows_of(rows: list[dict[str, Any]]) -> list[MailboxWindow]:
    days: dict[str, set[dt.date]] = defaultdict(set)
    for row in rows:
        days[row["mailbox"]].add(row["day"])
    return [MailboxWindow(m, tuple(sorted(d))) for m, d in sorted(days.items())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    started = time.perf_counter()
    rows, origin = corpus_entity_rows(args.rows) if CORPUS_DIR.is_dir() else synthetic_entity_rows(args.rows)
    windows = windows_of(rows)
    avg_bytes = sum(len(str(v)) for row in rows for v in row.values()) / len(rows)
    print(
        f"{len(rows):,} rows of `{TABLE.name}`: {origin}; {len(windows)} mailboxes, "
        f"{sum(len(w.days) for w in windows)} partitions, ~{avg_bytes:.0f} characters of values per row "
        f"(prepared in {time.perf_counter() - started:.1f} s)",
        flush=True,
    )

    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"atom_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        server = conn.execute(sa.text("show server_version")).scalar_one()
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        store = MailStore(database_url=url)
        engine = store.engine  # the database is empty: the store creates its schema (migrations to head)
        delete = sa.delete(TABLE).where(
            sa.or_(*(sa.and_(TABLE.c.mailbox == w.mailbox, TABLE.c.day.in_(w.days)) for w in windows))
        )
        columns = [c.name for c in TABLE.columns]
        raw_sql = f"INSERT INTO {TABLE.name} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"

        def bulk() -> None:
            store.replace_partitions(windows, {TABLE: rows})

        def row_values() -> None:
            with engine.begin() as conn:
                conn.execute(delete)
                for row in rows:
                    conn.execute(TABLE.insert().values(**row))

        def row_params() -> None:
            insert = TABLE.insert()
            with engine.begin() as conn:
                conn.execute(delete)
                for row in rows:
                    conn.execute(insert, row)

        def row_dbapi() -> None:
            with engine.begin() as conn:
                conn.execute(delete)
                cursor = conn.connection.dbapi_connection.cursor()
                for row in rows:
                    cursor.execute(raw_sql, [row[c] for c in columns])
                cursor.close()

        methods: dict[str, Callable[[], None]] = {
            f"bulk: MailStore.replace_partitions ({BULK_WAY})": bulk,
            "row by row: conn.execute(insert().values(**row))": row_values,
            "row by row: conn.execute(insert(), row)": row_params,
            "row by row: psycopg cursor.execute(sql, row)": row_dbapi,
        }
        bulk()  # warm: pool, table, statement caches; from here on every write replaces existing rows
        best: dict[str, float] = {}
        for attempt in range(args.repeat):
            for label, method in methods.items():
                t0 = time.perf_counter()
                method()
                seconds = time.perf_counter() - t0
                best[label] = min(best.get(label, seconds), seconds)
                with engine.connect() as conn:
                    stored = conn.execute(sa.select(sa.func.count()).select_from(TABLE)).scalar_one()
                if stored != len(rows):
                    raise SystemExit(f"{label}: {stored} rows stored, expected {len(rows)}")
            print(
                f"  round {attempt + 1}/{args.repeat}: "
                + ", ".join(f"{label.split(':')[0]} {best[label]:.2f} s" for label in methods),
                flush=True,
            )
    finally:
        dispose_engine(url)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    bulk_label = next(iter(methods))
    bulk_s = best[bulk_label]
    slowest_ratio = min(best[label] / bulk_s for label in methods if label != bulk_label)
    print()
    print(
        f"PostgreSQL {server}, SQLAlchemy {sa.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores; best of {args.repeat}; each write deletes the partitions' rows and inserts "
        f"{len(rows):,} rows in one transaction"
    )
    for label in methods:
        seconds = best[label]
        ratio = "" if label == bulk_label else f"   bulk is x{seconds / bulk_s:.1f} faster"
        print(f"  {label:<64} {seconds:7.2f} s {len(rows) / seconds:>10,.0f} rows/s{ratio}")
    verdict = "meets" if slowest_ratio >= 10 else "MISSES"
    print(f"headline: bulk vs the fastest row-by-row way: x{slowest_ratio:.1f} ({verdict} the >= 10x target)")
    print()
    print(
        "| write of 20k entity rows (PostgreSQL) | seconds | rows/s | bulk speed-up |".replace(
            "20k", f"{len(rows) // 1000}k"
        )
    )
    print("|---|---|---|---|")
    for label in methods:
        seconds = best[label]
        ratio = "-" if label == bulk_label else f"x{seconds / bulk_s:.1f}"
        print(f"| {label} | {seconds:.2f} | {len(rows) / seconds:,.0f} | {ratio} |")
    return 0  # a ratio is a measurement, not a failure; a wrong row count above exits non-zero


if __name__ == "__main__":
    sys.exit(main())
