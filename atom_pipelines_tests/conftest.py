"""Shared fixtures: real databases (a SQLite file and a fresh PostgreSQL database per test), an ephemeral
Dagster instance, and mail exports cut from the Enron corpus in corpus/ (gzip; see corpus/README.md).

PostgreSQL is the real server on 127.0.0.1 (ATOM_TEST_POSTGRES_URL). Under CI=true a missing server fails
the run; elsewhere its tests are skipped and the summary says so loudly.
"""

from __future__ import annotations

import atexit
import gzip
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, instance_for_test

from atom_pipelines.store.resource import dispose_engine

REPO_ROOT = Path(__file__).resolve().parent.parent
# Shipped gzipped (2.6 MB instead of 9.7) so a fresh clone has it; ATOM_CORPUS may name a .jsonl or .jsonl.gz.
# An empty ATOM_CORPUS means the default, so `ATOM_CORPUS= pytest` works.
CORPUS = Path(os.environ.get("ATOM_CORPUS") or Path(__file__).resolve().parent / "corpus" / "enron_dev.jsonl.gz")
ADMIN_URL = os.environ.get("ATOM_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_postgres_problem: list[str] = []


def _admin_engine() -> sa.Engine:
    return sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def _require_postgres() -> None:
    try:
        with _admin_engine().connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError as exc:
        message = f"PostgreSQL at {sa.engine.make_url(ADMIN_URL).render_as_string(hide_password=True)} unreachable: {exc.orig}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: PostgreSQL tests may not be skipped)", pytrace=False)
        _postgres_problem.append(message)
        pytest.skip(message)


@contextmanager
def fresh_postgres_database(prefix: str = "atom_test") -> Iterator[str]:
    """Create an empty PostgreSQL database, yield its URL, drop it (with open connections) afterwards."""
    _require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose_engine(url)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_database_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'atom.sqlite'}"
    yield url
    dispose_engine(url)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs on both stores."""
    return request.getfixturevalue(f"{request.param}_database_url")


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def open_corpus() -> TextIO:
    """The corpus as text lines, whether CORPUS is gzipped or plain (told by its suffix)."""
    if CORPUS.suffix == ".gz":
        return gzip.open(CORPUS, "rt", encoding="utf-8")
    return CORPUS.open(encoding="utf-8")


def corpus_records(mailboxes: set[str] | None = None) -> list[dict]:
    """Records of the corpus, optionally only these mailboxes, in file order."""
    records = []
    with open_corpus() as handle:
        for line in handle:
            record = json.loads(line)
            if mailboxes is None or record["mailbox"] in mailboxes:
                records.append(record)
    return records


def write_plain_corpus(directory: Path) -> Path:
    """Decompress the corpus into directory/enron_dev.jsonl and return directory: the export source reads only
    plain ``*.jsonl`` files of a directory."""
    directory.mkdir(parents=True, exist_ok=True)
    with open_corpus() as source, (directory / "enron_dev.jsonl").open("w", encoding="utf-8") as target:
        shutil.copyfileobj(source, target)
    return directory


@pytest.fixture(scope="session")
def corpus_export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the whole corpus as one plain .jsonl, under pytest's tmp dir (never in the repo)."""
    return write_plain_corpus(tmp_path_factory.mktemp("corpus"))


def plain_corpus_tempdir() -> Path:
    """For scripts outside pytest (bench/): a fresh temporary directory holding the corpus as plain .jsonl,
    removed when the process exits."""
    directory = Path(tempfile.mkdtemp(prefix="atom_corpus_"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return write_plain_corpus(directory)


def write_export(directory: Path, records: list[dict], name: str = "export.jsonl") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return directory


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001 - pytest hook
    if _postgres_problem:
        terminalreporter.write_sep("!", "POSTGRESQL TESTS WERE SKIPPED", red=True, bold=True)
        terminalreporter.write_line(_postgres_problem[0])
