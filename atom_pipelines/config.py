"""Deployment settings read from the environment, in one place.

Every setting here is a contract in docs/architecture.md; secrets are not read here (they reach resources
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
    cap a backfill far below the pipeline's speed (docs/architecture.md, "Speed").
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


def _int_setting(name: str, default: int, low: int, high: int | None, meaning: str) -> int:
    """An integer setting in ``[low, high]``; a bad value stops the code location from loading, naming it."""
    value = (os.environ.get(name) or "").strip() or str(default)
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        bounds = f"{low}-{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name}={value!r} must be {meaning}, an integer {bounds}")
    return number


def daily_sync_hour() -> int:
    """UTC hour at which ``mail_to_links_daily`` syncs the previous UTC day (``ATOM_DAILY_SYNC_HOUR``).

    Late enough after midnight UTC for the day's mail to have arrived in the mailboxes (default 6)."""
    return _int_setting("ATOM_DAILY_SYNC_HOUR", 6, 0, 23, "an hour of the day in UTC")


def daily_sync_minute() -> int:
    """Minute of ``ATOM_DAILY_SYNC_HOUR`` at which the daily sync starts (``ATOM_DAILY_SYNC_MINUTE``)."""
    return _int_setting("ATOM_DAILY_SYNC_MINUTE", 0, 0, 59, "a minute of the hour")


def freshness_max_days_behind() -> int:
    """How many days a mailbox's latest synced day may lag the latest complete UTC day before the
    ``mailboxes_fresh`` check fails (``ATOM_FRESHNESS_MAX_DAYS_BEHIND``). With the default 2 a mailbox
    turns red at the midnight UTC after its second daily sync in a row failed, not after one."""
    return _int_setting("ATOM_FRESHNESS_MAX_DAYS_BEHIND", 2, 0, None, "a number of days")


GRAPH_CREDENTIAL_VARS = ("ATOM_GRAPH_TENANT_ID", "ATOM_GRAPH_CLIENT_ID", "ATOM_GRAPH_CLIENT_SECRET")


def graph_configured() -> bool:
    """Graph is the mail source when its three credentials are set (docs/architecture.md, "Contracts")."""
    return all(os.environ.get(name) for name in GRAPH_CREDENTIAL_VARS)


def graph_settings() -> dict[str, object]:
    """The non-secret Graph settings (the credentials reach the resource as ``EnvVar``)."""
    settings: dict[str, object] = {"mailboxes": os.environ.get("ATOM_GRAPH_MAILBOXES", "")}
    for field, name in (
        ("authority_host", "ATOM_GRAPH_AUTHORITY_HOST"),
        ("api_url", "ATOM_GRAPH_API_URL"),
        ("delta_folders", "ATOM_GRAPH_DELTA_FOLDERS"),
    ):
        if os.environ.get(name):
            settings[field] = os.environ[name]
    if os.environ.get("ATOM_GRAPH_PAGE_SIZE"):
        settings["page_size"] = _int_setting("ATOM_GRAPH_PAGE_SIZE", 250, 1, 1000, "Graph's $top")
    return settings


def history_sync_on_register() -> bool:
    """Whether registering a mailbox also launches the sync of its history (``ATOM_HISTORY_SYNC_ON_REGISTER``,
    default on: connecting a mailbox *is* asking for its history)."""
    value = (os.environ.get("ATOM_HISTORY_SYNC_ON_REGISTER") or "true").strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"ATOM_HISTORY_SYNC_ON_REGISTER={value!r} must be true or false")
    return value in ("true", "1", "yes")
