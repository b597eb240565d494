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
from atom_pipelines.mail.delta import note_changed_days
from atom_pipelines.mail.source import MailSource
from atom_pipelines.partitions import MAILBOX_DIMENSION, latest_complete_day, mailbox_partitions, partition_key
from atom_pipelines.store.resource import MailStore
from atom_pipelines.tags import DELTA_SYNC_TAG, HISTORY_SYNC_TAG, MAILBOX_TAG, RANGE_END_TAG, RANGE_START_TAG


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
    settings = config.load_settings()
    if settings.history_sync_on_register:
        newest_allowed = latest_complete_day(dt.datetime.now(dt.timezone.utc))
        for mailbox in new:
            if newest_allowed is None:
                context.log.info(f"{mailbox}: no complete day exists yet; its history sync waits for one")
                continue
            span = mail_source.history_span(mailbox, settings.start_date)
            first, last = span if span else (None, None)
            last = min(last or newest_allowed, newest_allowed)
            if first is None or first > last:
                context.log.info(f"{mailbox}: no complete day with mail since {settings.start_date}")
                continue
            chunks = history_sync_requests(mailbox, first, last, settings.max_partitions_per_run)
            context.log.info(f"{mailbox}: history sync {first}..{last} in {len(chunks)} run(s)")
            run_requests.extend(chunks)
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[mailbox_partitions.build_add_request(new)],
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
    if not mail_source.follows_delta:
        return SkipReason("the mail source is not Microsoft Graph: no delta to follow")
    mailboxes = sorted(context.instance.get_dynamic_partitions(MAILBOX_DIMENSION))
    if not mailboxes:
        return SkipReason("no mailbox registered yet")
    now = dt.datetime.now(dt.timezone.utc)
    for mailbox in mailboxes:
        note_changed_days(context.log, mail_source, store, mailbox, now)
    first_allowed, last_allowed = config.load_settings().start_date, latest_complete_day(now)
    requests: list[RunRequest] = []
    waiting: dict[str, list[str]] = defaultdict(list)
    for pending in store.pending_days():
        mailbox, day = pending["mailbox"], pending["day"]
        if mailbox not in mailboxes:
            continue
        if last_allowed is None or not first_allowed <= day <= last_allowed:
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
