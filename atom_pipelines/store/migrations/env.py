"""Alembic's environment for the store, run by ``atom_pipelines.store.migrate`` (never with an alembic.ini).

The caller hands over an open connection in ``config.attributes["connection"]``, already inside the
transaction (and holding the lock) in which it checked the database's revision, so the check and the
migration are one unit. Without one, the store's database (``ATOM_DATABASE_URL`` or the default) is opened.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from atom_pipelines import config as atom_config
from atom_pipelines.store import schema
from atom_pipelines.store.engine import store_url
from atom_pipelines.store.migrate import VERSION_TABLE


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=schema.metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things: batch operations recreate the table there, and autogenerate
        # writes them, so one migration serves both databases.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("the store's migrations run against a database; offline (--sql) mode is not supported")

given = context.config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    engine = create_engine(store_url(atom_config.database_url()), poolclass=NullPool)
    with engine.connect() as own:
        _run(own)
        own.commit()
