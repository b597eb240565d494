"""The partition scheme: one partition = one mailbox x one UTC day.

Everything that knows the scheme lives here. The real work (fetch, clean, extract, link, store) takes a
list of :class:`MailboxWindow` and never a partition key, so moving to tenant x day or day-with-mailboxes
later touches only this module and the thin asset wrappers (see docs/architecture.md, "Scale ceiling").
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from dataclasses import dataclass

from dagster import (
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
)

from atom_pipelines import config

MAILBOX_DIMENSION = "mailbox"
DATE_DIMENSION = "date"

mailbox_partitions = DynamicPartitionsDefinition(name=MAILBOX_DIMENSION)


def _daily_partitions() -> DailyPartitionsDefinition:
    # The first settings read of a load: a bad ATOM_* value stops the code location here, naming it.
    settings = config.load_settings()
    end = settings.end_date
    return DailyPartitionsDefinition(
        start_date=settings.start_date.isoformat(),
        end_date=end.isoformat() if end else None,
        timezone="UTC",
    )


mailbox_day_partitions = MultiPartitionsDefinition(
    {MAILBOX_DIMENSION: mailbox_partitions, DATE_DIMENSION: _daily_partitions()}
)


@dataclass(frozen=True, order=True)
class MailboxWindow:
    """One mailbox and the UTC days a run covers: ascending, each once (as ``windows_from_partition_keys``
    builds them), but not necessarily consecutive (a run may select any partitions of a mailbox), so whoever
    lists by time range splits them into runs of consecutive days first (``mail.msgraph.contiguous_spans``).
    Each day is ``[00:00, 24:00)`` UTC."""

    mailbox: str
    days: tuple[dt.date, ...]

    def partition_keys(self) -> list[str]:
        return [partition_key(self.mailbox, day) for day in self.days]


@functools.lru_cache(maxsize=65_536)
def partition_key(mailbox: str, day: dt.date) -> str:
    """The multi-partition key string Dagster uses (dimensions sorted by name: ``date|mailbox``)."""
    return str(MultiPartitionKey({MAILBOX_DIMENSION: mailbox, DATE_DIMENSION: day.isoformat()}))


def windows_from_partition_keys(keys: list[str]) -> list[MailboxWindow]:
    """Group the partition keys of a run (one key, or a backfill range) into one window per mailbox."""
    days_by_mailbox: dict[str, set[dt.date]] = defaultdict(set)
    for key in keys:
        dims = key.keys_by_dimension if isinstance(key, MultiPartitionKey) else _split_key(key)
        days_by_mailbox[dims[MAILBOX_DIMENSION]].add(dt.date.fromisoformat(dims[DATE_DIMENSION]))
    return [
        MailboxWindow(mailbox=mailbox, days=tuple(sorted(days))) for mailbox, days in sorted(days_by_mailbox.items())
    ]


def split_partition_key(key: str | None) -> tuple[str | None, str | None]:
    """``"2001-10-17|kevin.hyatt@enron.com"`` -> (mailbox, day); (None, None) for a key of another shape
    (alerts read keys of any check, some keyed by mailbox alone)."""
    day, sep, mailbox = (key or "").partition("|")
    if not sep or not mailbox:
        return None, None
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        return None, None
    return mailbox, day


def latest_complete_day(now: dt.datetime) -> dt.date | None:
    """The newest ``date`` partition that exists at ``now``: yesterday (a daily partition opens when its UTC
    day ends), or the day before ``ATOM_END_DATE`` for a finished export; None before ``ATOM_START_DATE``.
    The day the daily schedule syncs then, and the last day a run may be asked for."""
    day = now.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)
    settings = config.load_settings()
    if settings.end_date is not None:
        day = min(day, settings.end_date - dt.timedelta(days=1))
    return day if day >= settings.start_date else None


def _split_key(key: str) -> dict[str, str]:
    try:
        date_part, mailbox = key.split("|", 1)
    except ValueError as exc:
        raise ValueError(f"partition key {key!r} is not of the form 'YYYY-MM-DD|mailbox'") from exc
    return {DATE_DIMENSION: date_part, MAILBOX_DIMENSION: mailbox}
