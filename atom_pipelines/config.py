"""Deployment settings read from the environment, in one place.

Every setting here is a contract in ARCHITECTURE.md; secrets are not read here (they reach resources
through ``dagster.EnvVar`` so they never appear in run config).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

#: The sample export that ships with the repo: the embedded default source.
DEFAULT_EXPORT_DIR = REPO_ROOT / "data"

#: The corpus and the sample begin in December 2000; deployments set their own start.
DEFAULT_START_DATE = "2000-12-01"


def dagster_home() -> Path:
    """The Dagster home the local instance uses; the SQLite store defaults to a file inside it."""
    return Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / ".dagster_home")


def mail_export_dir() -> Path:
    return Path(os.environ.get("ATOM_MAIL_EXPORT_DIR") or DEFAULT_EXPORT_DIR)


def database_url() -> str:
    url = os.environ.get("ATOM_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{dagster_home() / 'atom_pipelines.sqlite'}"


def _parse_day(name: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{name}={value!r} is not a date in YYYY-MM-DD form") from exc


def partition_start_date() -> dt.date:
    """First UTC day of the ``date`` partition dimension (``ATOM_START_DATE``)."""
    return _parse_day("ATOM_START_DATE", os.environ.get("ATOM_START_DATE") or DEFAULT_START_DATE)


def partition_end_date() -> dt.date | None:
    """Optional exclusive last day (``ATOM_END_DATE``), for deployments that only hold a finished export."""
    value = os.environ.get("ATOM_END_DATE")
    return _parse_day("ATOM_END_DATE", value) if value else None


def graph_export_dir() -> Path:
    """Where ``entity_graph`` writes its GraphML export (``ATOM_GRAPH_EXPORT_DIR``)."""
    return Path(os.environ.get("ATOM_GRAPH_EXPORT_DIR") or dagster_home() / "exports")


def max_partitions_per_run() -> int:
    """How many mailbox-days a backfill puts into one run (``ATOM_MAX_PARTITIONS_PER_RUN``).

    Dagster costs ~0.33 s per run even in-process and 5-7 s per subprocess run, so one run per day would
    cap a backfill far below the pipeline's speed (ARCHITECTURE.md, "Speed").
    """
    value = os.environ.get("ATOM_MAX_PARTITIONS_PER_RUN") or "31"
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"ATOM_MAX_PARTITIONS_PER_RUN={value!r} must be a positive integer")
    return int(value)


def max_none_found_share() -> float:
    """Above this share of messages with text answered 'nothing here', a partition is suspicious
    (``ATOM_MAX_NONE_FOUND_SHARE``, WARN check ``none_found_share_sane``)."""
    value = float(os.environ.get("ATOM_MAX_NONE_FOUND_SHARE") or 0.5)
    if not 0 <= value <= 1:
        raise ValueError(f"ATOM_MAX_NONE_FOUND_SHARE={value} must be between 0 and 1")
    return value
