"""Sensors: how mailboxes become partitions and get their history, and how Graph's changes reach the store."""

# No `from __future__ import annotations` here: Dagster reads these annotations at definition time.

import datetime as dt
from collections import defaultdict

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from atom_pipelines import config
from atom_pipelines.jobs import mail_to_links_job
from atom_pipelines.mail.graph import DeltaTokenExpiredError, GraphMailSource
from atom_pipelines.mail.source import MailSource
from atom_pipelines.partitions import MAILBOX_DIMENSION, mailbox_partitions, partition_key
from atom_pipelines.store.resource import MailStore

#: Run tags: which mailbox a run reads (dagster.yaml limits concurrent runs per value) and why it was launched.
MAILBOX_TAG = "atom/mailbox"
HISTORY_SYNC_TAG = "atom/history_sync"
DELTA_SYNC_TAG = "atom/delta_sync"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def last_complete_day(now: dt.datetime) -> dt.date:
    """The latest UTC day whose partition exists: yesterday (a daily partition opens when its day ends)."""
    return now.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)


def _partition_days_end(now: dt.datetime) -> dt.date:
    """The last day a run may be requested for: yesterday, or the day before ATOM_END_DATE."""
    end = last_complete_day(now)
    configured_end = config.partition_end_date()
    if configured_end is not None:
        end = min(end, configured_end - dt.timedelta(days=1))
    return end


def history_sync_requests(mailbox: str, first: dt.date, last: dt.date, chunk_days: int) -> list[RunRequest]:
    """The runs of one mailbox's historical sync: ``[first, last]`` in chunks of ``chunk_days`` days, each a
    partition range of ``mail_to_links`` (what a UI backfill with ``BackfillPolicy.multi_run`` launches).

    Each run key names the mailbox and its days, so a later tick never launches the same chunk twice; a
    failed chunk is re-executed from failure in the UI like any run.
    """
    requests = []
    start = first
    while start <= last:
        end = min(start + dt.timedelta(days=chunk_days - 1), last)
        tags = {
            MAILBOX_TAG: mailbox,
            HISTORY_SYNC_TAG: mailbox,
            RANGE_START_TAG: partition_key(mailbox, start),
            RANGE_END_TAG: partition_key(mailbox, end),
        }
        requests.append(RunRequest(run_key=f"history:{mailbox}:{start.isoformat()}:{end.isoformat()}", tags=tags))
        start = end + dt.timedelta(days=1)
    return requests


@sensor(
    name="register_mailboxes",
    job=mail_to_links_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds every mailbox the mail source knows as a `mailbox` partition and launches its history sync.",
)
def register_mailboxes(context: SensorEvaluationContext, mail_source: MailSource) -> SensorResult | SkipReason:
    """A sensor rather than a job: it runs in the daemon on its own, so a mailbox that appears in the
    export (or in ATOM_GRAPH_MAILBOXES) shows up in the UI's partitions without anyone launching anything,
    and its history, from ATOM_START_DATE (or its oldest message, if later) to yesterday (an export: to its
    last message), is synced by runs of ATOM_MAX_PARTITIONS_PER_RUN days each. Runs rather than a backfill
    object: a sensor launches backfills only through a private Dagster API; the runs carry the tags
    atom/history_sync and atom/mailbox, so the Runs page filters one mailbox's history sync."""
    known = set(context.instance.get_dynamic_partitions(MAILBOX_DIMENSION))
    new = sorted(set(mail_source.list_mailboxes()) - known)
    if not new:
        return SkipReason(f"all {len(known)} mailboxes of the source are registered")
    context.log.info(f"registering {len(new)} mailbox(es): {', '.join(new)}")
    run_requests: list[RunRequest] = []
    if config.history_sync_on_register():
        newest_allowed = _partition_days_end(dt.datetime.now(dt.timezone.utc))
        for mailbox in new:
            span = mail_source.history_span(mailbox, config.partition_start_date())
            first, last = span if span else (None, None)
            last = min(last or newest_allowed, newest_allowed)
            if first is None or first > last:
                context.log.info(f"{mailbox}: no complete day with mail since {config.partition_start_date()}")
                continue
            chunks = history_sync_requests(mailbox, first, last, config.max_partitions_per_run())
            context.log.info(f"{mailbox}: history sync {first}..{last} in {len(chunks)} run(s)")
            run_requests.extend(chunks)
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[mailbox_partitions.build_add_request(new)],
    )


def _delta_rounds(
    context: SensorEvaluationContext, source: GraphMailSource, store: MailStore, mailbox: str, now: dt.datetime
) -> None:
    """One delta round per followed folder of a mailbox; each round's changed days are noted pending with
    its deltaLink in one transaction. A folder without a deltaLink gets a baseline round (its history is
    the history sync's job); an expired token gets a full resync that also finds what was removed meanwhile."""
    stored = store.stored_versions(mailbox)
    for folder in source.folders():
        link = store.delta_link(mailbox, folder)
        resync = False
        try:
            round_ = source.delta_round(mailbox, folder, link)
        except DeltaTokenExpiredError as exc:
            context.log.warning(f"{mailbox}/{folder}: delta token expired, starting a FULL RESYNC of the folder: {exc}")
            store.forget_delta_link(mailbox, folder)
            resync = True
            round_ = source.delta_round(mailbox, folder, None)
        if link is None and not resync:
            store.note_delta_round(mailbox, folder, round_.delta_link, {}, now)
            context.log.info(f"{mailbox}/{folder}: baseline round, {len(round_.changes)} items, {round_.pages} pages")
            continue
        days: dict[dt.date, str] = {}
        seen: set[str] = set()
        for change in round_.changes:
            seen.add(change.message_id)
            known = stored.get(change.message_id)
            if change.removed:
                if known is not None:
                    days[known[0]] = f"{folder}: {change.message_id} removed"
                continue
            if change.received_day is None:
                raise RuntimeError(
                    f"{mailbox}/{folder}: delta item {change.message_id} has no receivedDateTime; "
                    "cannot tell which partition it changes"
                )
            if known is None:
                days[change.received_day] = f"{folder}: {change.message_id} created"
            elif known[1] != change.change_key or known[0] != change.received_day:
                days[change.received_day] = days[known[0]] = f"{folder}: {change.message_id} changed"
        if resync:
            # A resync lists the whole folder: stored messages of this folder it did not list were removed
            # (or moved) while the token was expired.
            folder_id = source.folder_id(mailbox, folder)
            for message_id, (day, _key, parent) in stored.items():
                if parent == folder_id and message_id not in seen:
                    days.setdefault(day, f"{folder}: resync did not list {message_id}")
        store.note_delta_round(mailbox, folder, round_.delta_link, days, now)
        context.log.info(
            f"{mailbox}/{folder}: {'resync' if resync else 'delta'} round, {len(round_.changes)} changes, "
            f"{round_.pages} pages, {len(days)} day(s) to re-list"
        )


@sensor(
    name="graph_delta_sync",
    job=mail_to_links_job,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description="Follows Graph's message delta per mailbox folder and re-materializes the days that changed.",
)
def graph_delta_sync(
    context: SensorEvaluationContext, mail_source: MailSource, store: MailStore
) -> SensorResult | SkipReason:
    """Created, changed and removed messages re-materialize exactly their (mailbox, day) partitions: the
    re-run lists the day again, so a removed message disappears with its entities and links.

    Changed days are noted in the store (``graph_pending_days``) and requested every tick until a listing
    of the day has been stored; the run key (mailbox, day, when noted) keeps Dagster from launching the
    same request twice. Days not yet complete (today) wait in the table for their partition to exist.
    """
    if not isinstance(mail_source, GraphMailSource):
        return SkipReason("the mail source is not Microsoft Graph: no delta to follow")
    mailboxes = sorted(context.instance.get_dynamic_partitions(MAILBOX_DIMENSION))
    if not mailboxes:
        return SkipReason("no mailbox registered yet")
    now = dt.datetime.now(dt.timezone.utc)
    for mailbox in mailboxes:
        _delta_rounds(context, mail_source, store, mailbox, now)
    first_allowed, last_allowed = config.partition_start_date(), _partition_days_end(now)
    requests: list[RunRequest] = []
    waiting: dict[str, list[str]] = defaultdict(list)
    for pending in store.pending_days():
        mailbox, day = pending["mailbox"], pending["day"]
        if mailbox not in mailboxes:
            continue
        if not first_allowed <= day <= last_allowed:
            waiting[mailbox].append(day.isoformat())
            continue
        noted = pending["noted_at"]
        requests.append(
            RunRequest(
                run_key=f"delta:{mailbox}:{day.isoformat()}:{noted.isoformat()}",
                partition_key=partition_key(mailbox, day),
                tags={MAILBOX_TAG: mailbox, DELTA_SYNC_TAG: pending["reason"][:200]},
            )
        )
    for mailbox, days in waiting.items():
        context.log.info(f"{mailbox}: changed days without a partition yet ({', '.join(days)}) wait for it")
    if not requests:
        return SkipReason(f"no changed complete day pending in {len(mailboxes)} mailbox(es)")
    context.log.info(f"requesting {len(requests)} partition(s) changed in Graph")
    return SensorResult(run_requests=requests)
