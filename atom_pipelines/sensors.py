"""Sensors: how mailboxes become partitions and get their history, and how Graph's changes reach the store."""

# No `from __future__ import annotations` here: Dagster reads these annotations at definition time.

import datetime as dt
import hashlib
import json
from collections import defaultdict

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from atom_pipelines import config
from atom_pipelines.assets import entity_graph
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.extraction.key_status import KeyStatus, key_status
from atom_pipelines.jobs import llm_key_status_job, mail_to_links_job
from atom_pipelines.mail.delta import note_changed_days
from atom_pipelines.mail.source import MailSource
from atom_pipelines.partitions import MAILBOX_DIMENSION, latest_complete_day, mailbox_partitions, partition_key
from atom_pipelines.store.resource import MailStore
from atom_pipelines.tags import DELTA_SYNC_TAG, HISTORY_SYNC_TAG, MAILBOX_TAG, RANGE_END_TAG, RANGE_START_TAG

#: The register_mailboxes sensor's cursor: the mailboxes whose history sync waits for a usable key.
_WAITING_FOR_KEY = "history_waiting_for_key"
#: Tag of an llm_key_status run requested because a history sync was held back (value: the mailboxes).
KEY_STATUS_GATE_TAG = "atom/key_status_gate"


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
        requests.append(
            RunRequest(
                run_key=f"history:{mailbox}:{start.isoformat()}:{end.isoformat()}",
                job_name=mail_to_links_job.name,
                tags=tags,
            )
        )
        start = end + dt.timedelta(days=1)
    return requests


def key_status_gate_request(held_back: list[KeyStatus]) -> RunRequest:
    """The ``llm_key_status`` run that makes held-back history syncs loud: its ERROR check
    ``llm_keys_accepted`` fails and ``analyst_alerts`` alerts it. Its run key names what was wrong for whom
    (mailbox, key variable, problem: no request id, no time), so the run is launched once per such verdict,
    however many ticks the mailboxes keep waiting, and again for a new mailbox or a new problem."""
    verdict = sorted(f"{s.mailbox}={s.key_env}:{s.problem}" for s in held_back)
    digest = hashlib.sha256("\n".join(verdict).encode("utf-8")).hexdigest()[:16]
    mailboxes = ",".join(s.mailbox for s in held_back)
    return RunRequest(
        run_key=f"key_status_gate:{digest}",
        job_name=llm_key_status_job.name,
        tags={KEY_STATUS_GATE_TAG: mailboxes[:200]},
    )


def _waiting_for_key(cursor: str | None) -> list[str]:
    if not cursor:
        return []
    try:
        waiting = json.loads(cursor)[_WAITING_FOR_KEY]
        if not isinstance(waiting, list) or not all(isinstance(m, str) for m in waiting):
            raise TypeError(f"{_WAITING_FOR_KEY} is not a list of mailboxes")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"the register_mailboxes cursor {cursor[:80]!r} is not one this sensor wrote ({exc!r}); clear it in the "
            "UI (the mailboxes it held wait for a backfill of their history then)"
        ) from exc
    return waiting


@sensor(
    name="register_mailboxes",
    jobs=[mail_to_links_job, llm_key_status_job],
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds every mailbox the mail source knows as a `mailbox` partition and launches its history sync "
    "once its LLM key is usable (else an llm_key_status run, whose failing check is alerted).",
)
def register_mailboxes(
    context: SensorEvaluationContext, mail_source: MailSource, extractor: EntityExtractor
) -> SensorResult | SkipReason:
    """A sensor rather than a job: it runs in the daemon on its own, so a mailbox that appears in the
    export (or in ATOM_GRAPH_MAILBOXES) shows up in the UI's partitions without anyone launching anything,
    and its history, from ATOM_START_DATE (or its oldest message, if later) to yesterday (an export: to its
    last message), is synced by runs of ATOM_MAX_PARTITIONS_PER_RUN days each. Runs rather than a backfill
    object: a sensor launches backfills only through a private Dagster API; the runs carry the tags
    atom/history_sync and atom/mailbox, so the Runs page filters one mailbox's history sync.

    **The key first** (issue 10, item 8). Before it requests a mailbox's history it evaluates the mailbox's
    key status (``extraction.key_status``, the same answer ``llm_key_status`` gives: key variable set,
    accepted by the provider, every chain model present). Where it is not usable, the mailbox is registered
    all the same but its history is not launched: a history sync with a rejected key or a missing model
    would fail every partition, and with some providers only after sending mail. Instead the sensor
    requests one ``llm_key_status`` run (``key_status_gate_request``) and logs why. That run's ERROR check
    ``llm_keys_accepted`` fails, and ``analyst_alerts`` delivers it to the alert channels like any failed
    check: the analysts hear of it before a single message is sent to the provider, through the one
    alert path there is (silencing, ledger, retry) rather than a second one here.

    The held-back mailboxes are kept in the sensor's cursor and asked about again every tick (one models
    listing per key variable); on the first tick that finds the key usable, the history is launched, with
    the same deterministic run keys (``history:<mailbox>:<first>:<last>``), so it is launched exactly once.
    Without ATOM_HISTORY_SYNC_ON_REGISTER nothing is launched, so the key is not asked here (the daily
    ``llm_key_status_daily`` still is).
    """
    known = set(context.instance.get_dynamic_partitions(MAILBOX_DIMENSION))
    new = sorted(set(mail_source.list_mailboxes()) - known)
    waiting = [mailbox for mailbox in _waiting_for_key(context.cursor) if mailbox in known]
    if not new and not waiting:
        return SkipReason(f"all {len(known)} mailboxes of the source are registered")
    if new:
        context.log.info(f"registering {len(new)} mailbox(es): {', '.join(new)}")
    settings = config.load_settings()
    histories: dict[str, list[RunRequest]] = {}
    if settings.history_sync_on_register:
        newest_allowed = latest_complete_day(dt.datetime.now(dt.timezone.utc))
        for mailbox in sorted({*new, *waiting}):
            if newest_allowed is None:
                context.log.info(f"{mailbox}: no complete day exists yet; its history sync waits for one")
                continue
            span = mail_source.history_span(mailbox, settings.start_date)
            first, last = span if span else (None, None)
            last = min(last or newest_allowed, newest_allowed)
            if first is None or first > last:
                context.log.info(f"{mailbox}: no complete day with mail since {settings.start_date}")
                continue
            histories[mailbox] = history_sync_requests(mailbox, first, last, settings.max_partitions_per_run)
            context.log.info(f"{mailbox}: history sync {first}..{last} in {len(histories[mailbox])} run(s)")
    run_requests: list[RunRequest] = []
    held_back: list[KeyStatus] = []
    for status in key_status(extractor, histories) if histories else []:
        if status.usable:
            run_requests.extend(histories[status.mailbox])
            continue
        held_back.append(status)
        context.log.warning(
            f"{status.mailbox}: history sync NOT launched, its LLM key is not usable (${status.key_env}: "
            f"{status.reason}); llm_key_status is run so that analyst_alerts alerts it, and the history is "
            "launched on the first tick that finds the key usable"
        )
    if held_back:
        run_requests.append(key_status_gate_request(held_back))
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[mailbox_partitions.build_add_request(new)] if new else [],
        cursor=json.dumps({_WAITING_FOR_KEY: sorted(s.mailbox for s in held_back)}),
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


#: Evaluates entity_graph's automation condition (assets/entity_graph.py, ``graph_refresh_condition``): the
#: graph rebuilds itself after entity_links partitions land. Our own sensor rather than Dagster's default one,
#: so that it runs from the first deployment without a click (Dagster's docs: the default one must be turned
#: on in the UI), and targets only the graph: no other asset has a condition.
entity_graph_freshness = AutomationConditionSensorDefinition(
    "entity_graph_freshness",
    target=AssetSelection.assets(entity_graph),
    default_status=DefaultSensorStatus.RUNNING
    if config.load_settings().graph_auto_refresh
    else DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
    description="Launches entity_graph when entity_links changed: at most once per ATOM_GRAPH_REFRESH_MINUTES, "
    "never while a run or backfill of entity_links is in progress.",
)
