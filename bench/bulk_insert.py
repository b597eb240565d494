"""Benchmark: the store's bulk partition write vs row-by-row INSERTs, on PostgreSQL.

Writes the same N realistic entity rows (the ``entities`` table) into a throwaway database on
127.0.0.1, once through ``MailStore.replace_partitions`` (executemany, which SQLAlchemy packs into
multi-row INSERT ... VALUES) and once as one INSERT statement per row in a single transaction, and prints
rows/s of each and the ratio (target: bulk >= 10x).

    python bench/bulk_insert.py [N]
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
import uuid

import sqlalchemy as sa

from atom_pipelines.partitions import MailboxWindow
from atom_pipelines.store import schema
from atom_pipelines.store.resource import MailStore, dispose_engine

ADMIN_URL = os.environ.get("ATOM_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def entity_rows(count: int, day: dt.date) -> list[dict]:
    return [
        {
            "mailbox": "sally.beck@enron.com",
            "message_id": f"enron-{n // 10:032x}",
            "entity_key": f"person:someone.{n}@enron.com",
            "day": day,
            "name": f"Someone {n}",
            "entity_type": "person",
            "roles": "to",
            "evidence": f"Someone {n} <someone.{n}@enron.com>",
            "provider": "heuristic",
            "model": "rules-v1",
        }
        for n in range(count)
    ]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"atom_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        store = MailStore(database_url=url)
        day = dt.date(2001, 10, 1)
        window = MailboxWindow("sally.beck@enron.com", (day,))
        rows = entity_rows(count, day)
        store.replace_partitions([window], {schema.entities: rows[:100]})  # warm the pool and the table

        started = time.perf_counter()
        store.replace_partitions([window], {schema.entities: rows})
        bulk = time.perf_counter() - started

        started = time.perf_counter()
        with store.engine.begin() as conn:
            conn.execute(sa.delete(schema.entities))
            for row in rows:
                conn.execute(schema.entities.insert().values(**row))
        single = time.perf_counter() - started
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("select count(*) from entities")).scalar_one() == count
        print(f"{count:,} entity rows on PostgreSQL")
        print(f"bulk (replace_partitions): {bulk:.2f} s, {count / bulk:,.0f} rows/s")
        print(f"row by row:                {single:.2f} s, {count / single:,.0f} rows/s")
        print(f"ratio: x{single / bulk:.1f}")
    finally:
        dispose_engine(url)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
