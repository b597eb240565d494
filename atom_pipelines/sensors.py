"""Sensors: how mailboxes become partitions and get their history, and how Graph's changes reach the store."""

# No `from __future__ import annotations` here: Dagster reads these annotations at definition time.

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence

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
from atom_pipelines.partitions import (
    MAILBOX_DIMENSION,
    latest_complete_day,
    mailbox_partitions,
    mailbox_run_tags,
    mailbox_runs,
)
from atom_pipelines.store.resource import MailStore
from atom_pipelines.tags import (
    DELTA_SYNC_TAG,
    FIRST_DAY_TAG,
    HISTORY_SYNC_TAG,
    LAST_DAY_TAG,
    MAILBOX_TAG,
)

#: The register_mailboxes sensor's cursor: the mailboxes whose history sync waits for a usable key.
_WAITING_FOR_KEY = "history_waiting_for_key"
#: Tag of an llm_key_status run requested because a history sync was held back (value: the mailboxes).
KEY_STATUS_GATE_TAG = "atom/key_status_gate"


def history_sync_requests(registered: Sequence[str], mailboxes: Iterable[str], per_run: int) -> list[RunRequest]:
    """The runs of these mailboxes' history syncs: catch-up runs of ``mail_to_links`` (no day tags, so each
    syncs every day from ATOM_START_DATE to the latest complete one), of at most ``per_run`` mailboxes that
    are consecutive in registration order (one partition or one partition range each), as a UI backfill
    with ``BackfillPolicy.multi_run`` would batch them.

    Each run key names its first and last mailbox, so a later tick never launches the same run twice; a
    failed run is re-executed from failure in the UI like any run, and redoes only the days not done.
    """
    requests = []
    for chunk in mailbox_runs(registered, mailboxes, per_run):
        names = ",".join(chunk)
        tags = {
            HISTORY_SYNC_TAG: names if len(names) <= 255 else f"{chunk[0]}..{chunk[-1]} ({len(chunk)} mailboxes)",
            **mailbox_run_tags(chunk),
        }
        requests.append(
            RunRequest(
                run_key=f"history:{chunk[0]}..{chunk[-1]}:{len(chunk)}",
                job_name=mail_to_links_job.name,
                tags=tags,
            )
        )
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
    and its history, every day from ATOM_START_DATE to the latest complete one, is synced by catch-up runs
    of up to ATOM_MAILBOXES_PER_RUN new mailboxes each. Runs rather than a backfill object: a sensor
    launches backfills only through a private Dagster API; the runs carry the tag atom/history_sync (and a
    one-mailbox run atom/mailbox), so the Runs page filters the history syncs.

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
    deterministic run keys (``history:<first mailbox>..<last mailbox>:<count>``), so it is launched exactly once.
    Without ATOM_HISTORY_SYNC_ON_REGISTER nothing is launched, so the key is not asked here (the daily
    ``llm_key_status_daily`` still is).
    """
    registered = list(context.instance.get_dynamic_partitions(MAILBOX_DIMENSION))
    known = set(registered)
    new = sorted(set(mail_source.list_mailboxes()) - known)
    waiting = [mailbox for mailbox in _waiting_for_key(context.cursor) if mailbox in known]
    if not new and not waiting:
        return SkipReason(f"all {len(known)} mailboxes of the source are registered")
    if new:
        context.log.info(f"registering {len(new)} mailbox(es): {_named(new)}")
    settings = config.load_settings()
    to_sync: list[str] = []
    if settings.history_sync_on_register:
        if latest_complete_day(dt.datetime.now(dt.timezone.utc)) is None:
            context.log.info(
                f"no complete day exists yet: no history sync for {_named(new + waiting)}; the daily schedule's "
                "catch-up syncs them from the first day that completes"
            )
        else:
            to_sync = sorted({*new, *waiting})
    usable: list[str] = []
    held_back: list[KeyStatus] = []
    for status in key_status(extractor, to_sync) if to_sync else []:
        if status.usable:
            usable.append(status.mailbox)
            continue
        held_back.append(status)
        context.log.warning(
            f"{status.mailbox}: history sync NOT launched, its LLM key is not usable (${status.key_env}: "
            f"{status.reason}); llm_key_status is run so that analyst_alerts alerts it, and the history is "
            "launched on the first tick that finds the key usable"
        )
    # The new mailboxes are registered in this order, after the known ones: the order partition ranges follow.
    run_requests = history_sync_requests(registered + new, usable, settings.mailboxes_per_run)
    if usable:
        context.log.info(f"history sync of {_named(usable)} in {len(run_requests)} run(s)")
    if held_back:
        run_requests.append(key_status_gate_request(held_back))
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[mailbox_partitions.build_add_request(new)] if new else [],
        cursor=json.dumps({_WAITING_FOR_KEY: sorted(s.mailbox for s in held_back)}),
    )


def _named(mailboxes: Sequence[str], shown: int = 20) -> str:
    """Mailboxes for a log line: every one up to ``shown``, then how many more (10,000 do not fit a line)."""
    more = f" and {len(mailboxes) - shown} more" if len(mailboxes) > shown else ""
    return ", ".join(mailboxes[:shown]) + more


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
    """Created, changed and removed messages re-materialize exactly their mailbox-days (a run of the
    mailbox's partition with that day as its day tags): the re-run lists the day again, so a removed
    message disappears with its entities and links.

    Changed days are noted in the store (``graph_pending_days``) and requested every tick until a listing
    of the day has been stored; the run key (mailbox, day, when noted) keeps Dagster from launching the
    same request twice. Days not yet complete (today) wait in the table until they are.
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
                partition_key=mailbox,
                tags={
                    MAILBOX_TAG: mailbox,
                    FIRST_DAY_TAG: day.isoformat(),
                    LAST_DAY_TAG: day.isoformat(),
                    DELTA_SYNC_TAG: pending["reason"][:200],
                },
            )
        )
    for mailbox, days in waiting.items():
        context.log.info(f"{mailbox}: changed days not complete yet ({', '.join(days)}) wait for their end")
    if not requests:
        return SkipReason(f"no changed complete day pending in {len(mailboxes)} mailbox(es)")
    context.log.info(f"requesting {len(requests)} mailbox-day(s) changed in Graph")
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
