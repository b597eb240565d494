"""The partition scheme: one partition = one mailbox; the days are the run's, not the partition's.

Why not mailbox x day any more (issue 12): Dagster lists every partition key of an asset to validate a
backfill and to show its status, and its documented limit is 100,000 keys per asset. Mailbox x day is
73 x that at 10,000 mailboxes x 2 years (a one-mailbox backfill took 77 s to launch, the webserver and
daemon 6 GB each); one dynamic ``mailbox`` dimension is 10,000 keys. ``bench/partition_scale.py`` measured
the candidates; the README's benchmark table has the figures.

A run covers one mailbox (``dagster/partition``) or a range of registered mailboxes (Dagster's partition
range tags, in registration order), and its days are either

- **explicit**: the run tags ``atom/first_day`` and ``atom/last_day`` (ISO days, inclusive, both or
  neither), what a date-range re-sync sets in the launchpad; or
- **catch-up** (no day tags): every day from ``ATOM_START_DATE`` to the latest complete UTC day that is not
  yet done for the asset, per mailbox (the store's ``mailbox_days``, the per-mailbox-day progress). The
  first run of a mailbox is its history sync; every later one, the daily schedule's included, picks up
  whatever is missing or failed, so a day a schedule missed is filled by the next tick.

The real work (fetch, clean, extract, link, store) takes a list of :class:`MailboxWindow` and never a
partition key, and the checks, alerts and progress name **mailbox-days** (``mailbox_day_key``): changing the
scheme again touches only this module and the thin asset wrappers.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from dagster import DynamicPartitionsDefinition

from atom_pipelines import config
from atom_pipelines.tags import FIRST_DAY_TAG, LAST_DAY_TAG, MAILBOX_TAG, PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG

MAILBOX_DIMENSION = "mailbox"

#: The partitions of ``outlook_messages``, ``email_entities`` and ``entity_links``: the registered mailboxes.
mailbox_partitions = DynamicPartitionsDefinition(name=MAILBOX_DIMENSION)

#: The partitioned chain in order, by asset name: what the progress of a mailbox-day is recorded under, and
#: which asset's done days a downstream asset catches up from.
CHAIN = ("outlook_messages", "email_entities", "entity_links")


class RunDaysError(ValueError):
    """The run's day tags are not a usable range; names the tag and what it accepts."""


@dataclass(frozen=True, order=True)
class MailboxWindow:
    """One mailbox and the UTC days a run covers: ascending, each once, but not necessarily consecutive (a
    catch-up leaves out the days already done), so whoever lists by time range splits them into runs of
    consecutive days first (:meth:`spans`). Each day is ``[00:00, 24:00)`` UTC."""

    mailbox: str
    days: tuple[dt.date, ...]

    def spans(self) -> list[tuple[dt.date, dt.date]]:
        """The days as (first, last) runs of consecutive days."""
        return [(span[0], span[-1]) for span in contiguous_spans(self.days)]

    def mailbox_day_keys(self) -> list[str]:
        return [mailbox_day_key(self.mailbox, day) for day in self.days]


def contiguous_spans(days: Sequence[dt.date]) -> list[tuple[dt.date, ...]]:
    """Split sorted days into runs of consecutive days."""
    spans: list[list[dt.date]] = []
    for day in days:
        if spans and (day - spans[-1][-1]).days == 1:
            spans[-1].append(day)
        else:
            spans.append([day])
    return [tuple(span) for span in spans]


@functools.lru_cache(maxsize=65_536)
def mailbox_day_key(mailbox: str, day: dt.date) -> str:
    """How checks, alerts and the progress name one mailbox-day: ``"2001-10-17|kevin.hyatt@enron.com"`` (the
    key the mailbox x day scheme had, so alerts and dashboards read the same strings)."""
    return f"{day.isoformat()}|{mailbox}"


def split_mailbox_day_key(key: str | None) -> tuple[str | None, str | None]:
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
    """The newest day that is complete at ``now``: yesterday (UTC), or the day before ``ATOM_END_DATE`` for a
    finished export; None before ``ATOM_START_DATE``. The last day a run may be asked for."""
    day = now.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)
    settings = config.load_settings()
    if settings.end_date is not None:
        day = min(day, settings.end_date - dt.timedelta(days=1))
    return day if day >= settings.start_date else None


def syncable_span(now: dt.datetime) -> tuple[dt.date, dt.date] | None:
    """``[ATOM_START_DATE, latest complete day]``: every day a run may cover at ``now``; None when empty."""
    last = latest_complete_day(now)
    return (config.load_settings().start_date, last) if last is not None else None


def requested_days(tags: Mapping[str, str], now: dt.datetime) -> tuple[dt.date, dt.date] | None:
    """The explicit days of a run, from its tags; None for a catch-up run (neither tag).

    Raises :class:`RunDaysError` for one tag without the other, a value that is not an ISO day, a range
    that runs backwards, or one outside the days that may be synced (before ``ATOM_START_DATE``, or a day
    not complete yet): such a run fails at its first step, naming the tag, instead of syncing something
    else than was asked."""
    first, last = tags.get(FIRST_DAY_TAG), tags.get(LAST_DAY_TAG)
    if first is None and last is None:
        return None
    if first is None or last is None:
        given, missing = (FIRST_DAY_TAG, LAST_DAY_TAG) if last is None else (LAST_DAY_TAG, FIRST_DAY_TAG)
        raise RunDaysError(f"the run has the tag {given} but not {missing}: set both (inclusive ISO days) or neither")
    days = []
    for tag, value in ((FIRST_DAY_TAG, first), (LAST_DAY_TAG, last)):
        try:
            days.append(dt.date.fromisoformat(value.strip()))
        except ValueError:
            raise RunDaysError(f"{tag}={value!r} is not a day as YYYY-MM-DD") from None
    if days[0] > days[1]:
        raise RunDaysError(f"{FIRST_DAY_TAG}={first} is after {LAST_DAY_TAG}={last}")
    span = syncable_span(now)
    if span is None or days[0] < span[0] or days[1] > span[1]:
        allowed = f"{span[0]}..{span[1]}" if span else "none yet"
        raise RunDaysError(
            f"{FIRST_DAY_TAG}..{LAST_DAY_TAG} = {days[0]}..{days[1]} is outside the days that may be synced "
            f"({allowed}: ATOM_START_DATE to the latest complete UTC day)"
        )
    return days[0], days[1]


def days_between(first: dt.date, last: dt.date) -> tuple[dt.date, ...]:
    return tuple(first + dt.timedelta(days=n) for n in range((last - first).days + 1))


def explicit_windows(mailboxes: Iterable[str], first: dt.date, last: dt.date) -> list[MailboxWindow]:
    """The same days for every mailbox of the run."""
    days = days_between(first, last)
    return [MailboxWindow(mailbox, days) for mailbox in sorted(set(mailboxes))]


def windows_without(
    mailboxes: Iterable[str], candidates: Mapping[str, Iterable[dt.date]], done: Iterable[tuple[str, dt.date]]
) -> list[MailboxWindow]:
    """Per mailbox, its candidate days minus the (mailbox, day) pairs ``done``; mailboxes left with no day
    are left out."""
    finished: dict[str, set[dt.date]] = defaultdict(set)
    for mailbox, day in done:
        finished[mailbox].add(day)
    windows = []
    for mailbox in sorted(set(mailboxes)):
        days = tuple(sorted(set(candidates.get(mailbox, ())) - finished[mailbox]))
        if days:
            windows.append(MailboxWindow(mailbox, days))
    return windows


def mailbox_runs(registered: Sequence[str], selected: Iterable[str], per_run: int) -> Iterator[list[str]]:
    """The ``selected`` mailboxes as runs of at most ``per_run`` mailboxes that are consecutive in
    ``registered`` (registration order, which is how Dagster resolves a partition range of a dynamic
    dimension): a run is one partition or one range, never a list Dagster cannot express."""
    wanted = set(selected)
    chunk: list[str] = []
    for mailbox in registered:
        if mailbox in wanted:
            chunk.append(mailbox)
            if len(chunk) == per_run:
                yield chunk
                chunk = []
        elif chunk:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def mailbox_run_tags(chunk: Sequence[str]) -> dict[str, str]:
    """The tags that make a run cover these mailboxes (consecutive in registration order): Dagster's partition
    tag for one (and ours, which dagster.yaml limits per mailbox), its partition range tags for more."""
    if len(chunk) == 1:
        return {PARTITION_TAG: chunk[0], MAILBOX_TAG: chunk[0]}
    return {RANGE_START_TAG: chunk[0], RANGE_END_TAG: chunk[-1]}
