"""Is every registered mailbox synced up to date? The ``mailboxes_fresh`` check on ``outlook_messages``.

Per mailbox, the newest day ``outlook_messages`` has done (the store's per-mailbox-day progress,
``mailbox_days``: Dagster's partitions are mailboxes, so the instance does not know days) is compared with
the latest complete UTC day: the day the daily schedule syncs at that moment
(yesterday, or the day before ``ATOM_END_DATE`` for a finished export). A mailbox more than
``ATOM_FRESHNESS_MAX_DAYS_BEHIND`` days behind, or never synced at all, is stale and turns the check red.

Why not Dagster's own freshness: ``FreshnessPolicy`` and ``build_last_update_freshness_checks`` judge an
asset as a whole by *when* it was last materialized, so one mailbox's sync (or a backfill of 2001) makes
every mailbox look fresh; ``build_time_partition_freshness_checks`` requires a time-window-only partitions
definition. Neither can name the mailbox that fell behind.

It measures the *latest* synced day, not gaps: a catch-up run (the daily schedule's) fills the days before
it that are missing or failed, and each materialization's ``mailbox_days`` table lists them.
"""

# No `from __future__ import annotations` here: Dagster reads the check's annotations at definition time.

import datetime as dt
from dataclasses import dataclass

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    Config,
    DagsterInstance,
    MetadataValue,
    asset_check,
)
from pydantic import Field

from atom_pipelines.config import load_settings
from atom_pipelines.partitions import MAILBOX_DIMENSION, latest_complete_day
from atom_pipelines.store.resource import MailStore

#: How many stale mailboxes the check's description names; its metadata names every one.
NAMED_IN_DESCRIPTION = 10


@dataclass(frozen=True)
class MailboxFreshness:
    """One registered mailbox: its latest synced UTC day and how far that lags the reference day."""

    mailbox: str
    latest_day: dt.date | None
    days_behind: int | None  # None when never synced

    @property
    def never_synced(self) -> bool:
        return self.latest_day is None


@dataclass(frozen=True)
class FreshnessReport:
    """Freshness of every registered mailbox against ``reference_day`` (None: no complete day exists yet)."""

    reference_day: dt.date | None
    max_days_behind: int
    mailboxes: tuple[MailboxFreshness, ...]

    @property
    def stale(self) -> tuple[MailboxFreshness, ...]:
        if self.reference_day is None:
            return ()
        return tuple(m for m in self.mailboxes if m.never_synced or (m.days_behind or 0) > self.max_days_behind)


def evaluate_freshness(
    instance: DagsterInstance, store: MailStore, now: dt.datetime, max_days_behind: int
) -> FreshnessReport:
    """Freshness of every registered mailbox at ``now`` (an aware datetime; tests pass their own)."""
    reference_day = latest_complete_day(now)
    latest = store.latest_done_days("outlook_messages")
    mailboxes = []
    for mailbox in sorted(instance.get_dynamic_partitions(MAILBOX_DIMENSION)):
        day = latest.get(mailbox)
        behind = (reference_day - day).days if day is not None and reference_day is not None else None
        mailboxes.append(MailboxFreshness(mailbox=mailbox, latest_day=day, days_behind=behind))
    return FreshnessReport(reference_day=reference_day, max_days_behind=max_days_behind, mailboxes=tuple(mailboxes))


class FreshnessCheckConfig(Config):
    as_of: str | None = Field(
        default=None,
        description="Evaluate as if it were this ISO date or datetime (UTC when no offset is given) instead "
        "of now. It moves the reference day only; every day recorded done so far still counts.",
    )


def _as_of(value: str | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.timezone.utc)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"as_of={value!r} is not an ISO date or datetime") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _describe_staleness(mailbox: MailboxFreshness) -> str:
    if mailbox.never_synced:
        return f"{mailbox.mailbox} (never synced)"
    return f"{mailbox.mailbox} (latest {mailbox.latest_day}, {mailbox.days_behind} days behind)"


def freshness_result(report: FreshnessReport) -> AssetCheckResult:
    """The check's verdict: failed, naming every stale mailbox, when any registered mailbox is stale."""
    stale = report.stale
    total = len(report.mailboxes)
    if report.reference_day is None:
        description = "no complete day exists yet since ATOM_START_DATE: nothing can be behind"
    elif not total:
        description = (
            "no mailbox is registered: nothing can be behind (registration is the register_mailboxes sensor's job)"
        )
    elif stale:
        named = ", ".join(_describe_staleness(m) for m in stale[:NAMED_IN_DESCRIPTION])
        more = f" and {len(stale) - NAMED_IN_DESCRIPTION} more" if len(stale) > NAMED_IN_DESCRIPTION else ""
        description = (
            f"{len(stale)} of {total} mailbox(es) more than {report.max_days_behind} day(s) behind "
            f"{report.reference_day} or never synced: {named}{more}"
        )
    else:
        description = f"all {total} mailbox(es) synced within {report.max_days_behind} day(s) of {report.reference_day}"
    return AssetCheckResult(
        passed=not stale,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "reference_day": str(report.reference_day) if report.reference_day else "-",
            "max_days_behind": report.max_days_behind,
            "mailboxes": total,
            "stale_mailboxes": len(stale),
            "never_synced": sum(1 for m in stale if m.never_synced),
            "stale": MetadataValue.json(
                {
                    m.mailbox: {
                        "latest_day": m.latest_day.isoformat() if m.latest_day else None,
                        "days_behind": m.days_behind,
                    }
                    for m in stale
                }
            ),
        },
    )


@asset_check(
    asset=AssetKey("outlook_messages"),
    name="mailboxes_fresh",
    blocking=False,
    description="Every registered mailbox's latest synced day is at most ATOM_FRESHNESS_MAX_DAYS_BEHIND days "
    "older than the latest complete UTC day; a mailbox never synced is stale.",
)
def mailboxes_fresh(
    context: AssetCheckExecutionContext, config: FreshnessCheckConfig, store: MailStore
) -> AssetCheckResult:
    """Runs on its own (job ``mailbox_freshness``, hourly schedule), reading the registered mailboxes and the
    store's progress; the
    ``mail_to_links`` job leaves it out, but a UI materialization of ``outlook_messages`` with its checks
    runs it too (after the asset, so it sees that run's days).

    Severity ERROR: an analyst looking at a mailbox days behind sees a graph that silently lacks its
    recent mail, which is the failure this project exists to make loud. Not blocking: nothing downstream
    should stop because another mailbox is late."""
    report = evaluate_freshness(
        context.instance, store, _as_of(config.as_of), load_settings().freshness_max_days_behind
    )
    for mailbox in report.stale:
        context.log.warning(f"stale mailbox: {_describe_staleness(mailbox)}")
    return freshness_result(report)
