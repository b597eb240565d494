"""Finding failures: finished runs and their check evaluations, turned into alerts (once per failure)."""

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    EventLogRecord,
    RunRecord,
    RunsFilter,
    RunStatusChangeRecordsFilter,
)

from atom_pipelines.alerts.channels import AlertChannels
from atom_pipelines.alerts.cursor import FIRST_TICK_LOOKBACK, AlertCursor
from atom_pipelines.alerts.model import (
    Alert,
    failing_partition,
    quote,
)
from atom_pipelines.tags import (
    AUTO_RETRY_RUN_ID_TAG,
    FIRST_DAY_TAG,
    LAST_DAY_TAG,
    MAILBOX_TAG,
    PARENT_RUN_ID_TAG,
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    WILL_RETRY_TAG,
)

#: Finished runs read per event type per tick; the rest wait for the next tick.
RUNS_PER_TICK = 100
#: A failed run not yet tagged by Dagster's retry logic is taken as final after this long.
RETRY_DECISION_GRACE = dt.timedelta(minutes=5)
#: What a step failure looks like when a blocking check failed (and nothing else did).
BLOCKING_CHECK_FAILURE = "DagsterAssetCheckFailedError"
#: Dagster's wrappers around the error the user code raised.
_WRAPPER_ERRORS = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"}


def _finished_run_events(instance: DagsterInstance, after: int | None, since: float | None) -> list[EventLogRecord]:
    """Run success, failure and cancel events after the cursor, oldest first, at most RUNS_PER_TICK of each."""
    streams = [
        instance.fetch_run_status_changes(
            RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after, after_timestamp=since),
            limit=RUNS_PER_TICK,
            ascending=True,
        )
        for event_type in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED)
    ]
    # A stream cut at the limit bounds what is read this tick; otherwise the cursor would move past the
    # cut stream's unread events on the strength of another stream's later ones.
    horizon = min((s.records[-1].storage_id for s in streams if s.has_more and s.records), default=None)
    records = [r for s in streams for r in s.records if horizon is None or r.storage_id <= horizon]
    return sorted(records, key=lambda record: record.storage_id)


def _attempt_state(record: RunRecord, retries_enabled: bool, now: float) -> str:
    """``final`` (alert it now), ``waiting`` (a retry may follow: ask again next tick) or ``retried``
    (the retry is launched and will report, with this attempt's check failures)."""
    run = record.dagster_run
    if not run.is_finished:
        return "waiting"  # the status event is stored a moment before the run's status changes
    if run.status != DagsterRunStatus.FAILURE:
        return "final"
    if run.tags.get(AUTO_RETRY_RUN_ID_TAG):
        return "retried"
    will_retry = (run.tags.get(WILL_RETRY_TAG) or "").lower()
    if will_retry == "true":
        return "waiting"
    if not will_retry and retries_enabled:
        ended = record.end_time or record.update_timestamp.timestamp()
        if now - ended < RETRY_DECISION_GRACE.total_seconds():
            return "waiting"
    return "final"


def _parent_run_id(run: DagsterRun) -> str | None:
    return run.parent_run_id or run.tags.get(PARENT_RUN_ID_TAG)


def _retry_chain(instance: DagsterInstance, run: DagsterRun) -> list[DagsterRun]:
    """The run and the earlier attempts it retries (each tagged will_retry=true), oldest first. A manual
    re-execution of a run that was final is not part of the chain: that run was alerted on its own."""
    chain = [run]
    parent_id = _parent_run_id(run)
    while parent_id and len(chain) <= 50:
        parent = instance.get_run_by_id(parent_id)
        if parent is None or (parent.tags.get(WILL_RETRY_TAG) or "").lower() != "true":
            break
        chain.append(parent)
        parent_id = _parent_run_id(parent)
    return chain[::-1]


def _run_scope(run: DagsterRun) -> tuple[frozenset[str], str]:
    """The mailboxes of a run and its mailbox-days in words, from its partition and day tags."""
    tags = run.tags
    mailboxes: set[str] = set()
    scope = ""
    if tags.get(PARTITION_TAG):
        mailboxes.add(tags[PARTITION_TAG])
        scope = tags[PARTITION_TAG]
    elif tags.get(RANGE_START_TAG) and tags.get(RANGE_END_TAG):
        mailboxes.update((tags[RANGE_START_TAG], tags[RANGE_END_TAG]))
        scope = f"{tags[RANGE_START_TAG]}..{tags[RANGE_END_TAG]}"
    if tags.get(MAILBOX_TAG):
        mailboxes.add(tags[MAILBOX_TAG])
        scope = scope or tags[MAILBOX_TAG]
    if scope:
        first, last = tags.get(FIRST_DAY_TAG), tags.get(LAST_DAY_TAG)
        if first and last:
            scope += f" {first}" if first == last else f" {first}..{last}"
        else:
            scope += " (catch-up)"
    return frozenset(m.lower() for m in mailboxes), scope


def _check_alert(resource: AlertChannels, run: DagsterRun, evaluation: AssetCheckEvaluation) -> Alert:
    metadata = {name: value.value for name, value in evaluation.metadata.items()}
    failures = metadata.get("failures")
    if not isinstance(failures, Mapping):
        # A check that names what failed under another key (e.g. llm_keys_accepted's "unusable").
        failures = next((value for value in metadata.values() if isinstance(value, Mapping)), {})
    partitions = tuple(failing_partition(str(key), value) for key, value in failures.items())
    count = metadata.get("failed_partitions")
    count = count if isinstance(count, int) and not isinstance(count, bool) else len(partitions)
    asset = evaluation.asset_key.to_user_string()
    mailboxes, run_scope = _run_scope(run)
    return Alert(
        alert_id=f"check/{run.run_id}/{asset}/{evaluation.check_name}",
        kind="check",
        severity=evaluation.severity.value,
        headline=f"[{evaluation.severity.value}] check {evaluation.check_name} on {asset} failed",
        summary=(evaluation.description,) if evaluation.description else (),
        run_id=run.run_id,
        run_url=resource.run_url(run.run_id),
        check_name=evaluation.check_name,
        partitions=partitions,
        partition_count=count,
        mailboxes=mailboxes,
        run_scope=run_scope,
    )


def _error_text(error: Any) -> str:
    """The error the user code raised (under Dagster's wrappers), first line only."""
    while error is not None and error.cls_name in _WRAPPER_ERRORS and error.cause is not None:
        error = error.cause
    if error is None:
        return "no error recorded"
    first = next((line for line in error.message.strip().splitlines() if line.strip()), "")
    if not first.startswith(error.cls_name) and not first.split(":")[0].endswith(error.cls_name):
        first = f"{error.cls_name}: {first}"
    return quote(first)


def _run_alert(
    resource: AlertChannels, run: DagsterRun, step_failures: Sequence[Any], run_failure: EventLogRecord | None
) -> Alert | None:
    """The alert for a failed run, or None when blocking checks alone failed it (their alerts say so)."""
    other = [
        event
        for event in step_failures
        if event.step_failure_data.error is None or event.step_failure_data.error.cls_name != BLOCKING_CHECK_FAILURE
    ]
    if step_failures and not other:
        return None
    summary = [f"job {run.job_name}, failure reason {run.tags.get('dagster/failure_reason', 'unknown')}"]
    if other:
        steps = sorted({event.step_key for event in other})
        summary.append(f"failed step(s) ({len(steps)}): {', '.join(steps)}")
        errors = list(dict.fromkeys(_error_text(event.step_failure_data.error) for event in other))
        summary += [f"error: {text}" for text in errors[:3]]
    else:
        data = run_failure.event_log_entry.dagster_event.event_specific_data if run_failure else None
        error = getattr(data, "error", None)
        message = run_failure.event_log_entry.message if run_failure else ""
        summary.append("no step failed: the run itself failed")
        summary.append(f"error: {_error_text(error) if error else quote(message or 'no error recorded')}")
    blocked = len(step_failures) - len(other)
    if blocked:
        summary.append(f"{blocked} step(s) also stopped by a blocking check (see the check alert)")
    mailboxes, run_scope = _run_scope(run)
    return Alert(
        alert_id=f"run/{run.run_id}",
        kind="run",
        severity="ERROR",
        headline="[ERROR] run failed",
        summary=tuple(summary),
        run_id=run.run_id,
        run_url=resource.run_url(run.run_id),
        mailboxes=mailboxes,
        run_scope=run_scope,
    )


def _alerts_for_chain(instance: DagsterInstance, chain: Sequence[DagsterRun], resource: AlertChannels) -> list[Alert]:
    """The alerts of a final attempt: the failed checks of the chain (latest evaluation of each check
    wins) and, if the final attempt failed for another reason than a blocking check, the run alert."""
    final = chain[-1]
    latest: dict[tuple[str, str], tuple[DagsterRun, AssetCheckEvaluation]] = {}
    step_failures: list[Any] = []
    run_failure: EventLogRecord | None = None
    for attempt in chain:
        records = instance.get_records_for_run(
            attempt.run_id,
            of_type={
                DagsterEventType.ASSET_CHECK_EVALUATION,
                DagsterEventType.STEP_FAILURE,
                DagsterEventType.RUN_FAILURE,
            },
        ).records
        for record in records:
            event = record.event_log_entry.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.event_specific_data
                latest[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = (attempt, evaluation)
            elif attempt is final and event.event_type == DagsterEventType.STEP_FAILURE:
                step_failures.append(event)
            elif attempt is final and event.event_type == DagsterEventType.RUN_FAILURE:
                run_failure = record
    alerts = [_check_alert(resource, run, evaluation) for run, evaluation in latest.values() if not evaluation.passed]
    if final.status == DagsterRunStatus.FAILURE:
        run_alert = _run_alert(resource, final, step_failures, run_failure)
        if run_alert:
            alerts.append(run_alert)
    return alerts


@dataclass(frozen=True)
class Scan:
    """What one tick found: the alerts, in the order the runs finished, and the cursor after them."""

    alerts: list[Alert]
    cursor: AlertCursor
    waiting: int = 0
    runs_read: int = 0


def scan_for_alerts(
    instance: DagsterInstance, cursor: AlertCursor, resource: AlertChannels, now: float | None = None
) -> Scan:
    """The alerts of every run that finished after ``cursor`` (and of runs that stopped waiting for a retry)."""
    now = dt.datetime.now(dt.timezone.utc).timestamp() if now is None else now
    since = None if cursor.after_storage_id is not None else now - FIRST_TICK_LOOKBACK.total_seconds()
    events = _finished_run_events(instance, cursor.after_storage_id, since)
    run_ids = list(dict.fromkeys([*cursor.waiting_run_ids, *(event.run_id for event in events)]))
    records = (
        {record.dagster_run.run_id: record for record in instance.get_run_records(RunsFilter(run_ids=run_ids))}
        if run_ids
        else {}
    )
    alerts: list[Alert] = []
    waiting: list[str] = []
    covered: set[str] = set()
    for run_id in run_ids:
        record = records.get(run_id)
        if record is None:
            continue  # deleted since it finished
        state = _attempt_state(record, instance.run_retries_enabled, now)
        if state == "waiting":
            waiting.append(run_id)
        elif state == "final":
            chain = _retry_chain(instance, record.dagster_run)
            covered.update(run.run_id for run in chain[:-1])
            alerts += _alerts_for_chain(instance, chain, resource)
    still_waiting = tuple(run_id for run_id in waiting if run_id not in covered)
    after = events[-1].storage_id if events else cursor.after_storage_id
    return Scan(
        alerts=alerts,
        cursor=AlertCursor(after_storage_id=after, waiting_run_ids=still_waiting, tick=cursor.tick),
        waiting=len(still_waiting),
        runs_read=len(events),
    )


def apply_silence(resource: AlertChannels, alerts: Iterable[Alert]) -> tuple[list[Alert], list[Alert]]:
    """(to send, silenced): silenced checks, lines of silenced mailboxes, runs of silenced mailboxes."""
    to_send: list[Alert] = []
    silenced: list[Alert] = []
    for alert in alerts:
        if resource.is_silenced(alert.check_name):
            silenced.append(alert)
        elif alert.partitions:
            kept = tuple(p for p in alert.partitions if not resource.is_silenced(p.mailbox))
            if kept:
                to_send.append(replace(alert, partitions=kept, silenced_lines=len(alert.partitions) - len(kept)))
            else:
                silenced.append(alert)
        elif alert.mailboxes and all(resource.is_silenced(mailbox) for mailbox in alert.mailboxes):
            silenced.append(alert)
        else:
            to_send.append(alert)
    return to_send, silenced
