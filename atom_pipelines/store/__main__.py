"""``python -m atom_pipelines.store upgrade | current | revision``: the store's schema from the command line.

The database is ``ATOM_DATABASE_URL`` (or the default SQLite file under ``DAGSTER_HOME``), as for the code
location; it is never taken as an argument, so its password stays out of shell history and process lists,
and it is printed with the password masked.
"""

from __future__ import annotations

import argparse
import logging
import sys

import sqlalchemy as sa
from alembic.util import CommandError

from atom_pipelines import config
from atom_pipelines.store import migrate
from atom_pipelines.store.engine import display_url


def _describe(state: migrate.SchemaState, head: str) -> str:
    if state.empty:
        return "empty (no store tables): the first process to open it creates it at head"
    if state.revision is None:
        return f"no revision, {len(state.store_tables)} store tables (made before migrations): needs upgrade"
    if state.revisions == (head,):
        return f"revision {state.revision} (head)"
    return f"revision {state.revision} (head is {head})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atom_pipelines.store", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    upgrade = commands.add_parser("upgrade", help="bring the store database to head (or to REVISION)")
    upgrade.add_argument("revision", nargs="?", default="head")
    commands.add_parser("current", help="print the store database's revision")
    revision = commands.add_parser("revision", help="write a new migration under atom_pipelines/store/migrations")
    revision.add_argument("-m", "--message", required=True, help="what the migration does, a few words")
    revision.add_argument("--autogenerate", action="store_true", help="draft it from schema.py's changes")
    args = parser.parse_args(argv)

    # Alembic reports each revision it runs ("Running upgrade 0001 -> 0002") on its logger, between lines
    # about its dialect support that say nothing to an operator.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    migration_log = logging.getLogger("alembic.runtime.migration")
    migration_log.setLevel(logging.INFO)
    migration_log.addFilter(lambda record: record.levelno > logging.INFO or record.getMessage().startswith("Running"))

    url = config.database_url()
    head = migrate.head_revision()
    try:
        if args.command == "revision":
            script = migrate.new_revision(args.message, autogenerate=args.autogenerate)
            print(f"wrote {script.path}")
            return 0
        print(f"store database: {display_url(url)}")
        if args.command == "current":
            print(_describe(migrate.current(url), head))
            return 0
        before, after = migrate.upgrade(url, args.revision)
        print(f"before: {_describe(before, head)}")
        print(f"after:  {_describe(after, head)}")
        return 0
    except migrate.StoreSchemaError as exc:
        print(exc, file=sys.stderr)
    except CommandError as exc:
        print(f"alembic: {exc}", file=sys.stderr)
    except sa.exc.OperationalError as exc:
        # The driver's message names host, port and user, never the password; the URL is printed masked.
        print(f"cannot use the store database {display_url(url)}: {exc.orig}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
