"""How a step of the partitioned chain picks its mailbox-days, and records what became of each.

The partitions are mailboxes (``partitions.py``); the days are the run's. A step covers the run's explicit
days (``atom/first_day`` .. ``atom/last_day``) or, without them, catches up: for ``outlook_messages`` every
syncable day not done yet, for the assets downstream every day their upstream asset has done and they have
not. A re-execution of an explicit range skips the days the first attempt already finished. After the
work, every covered day is recorded in the store's ``mailbox_days`` as done (with its rows) or failed (the
blocking checks that failed it, or the step's error), which is what the analyst reads back in each
materialization's ``mailbox_days`` table: done, failed and missing days per mailbox.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dagster import AssetExecutionContext, DagsterInstance, MetadataValue
from sqlalchemy.exc import SQLAlchemyError

from atom_pipelines.partitions import (
    CHAIN,
    MailboxWindow,
    contiguous_spans,
    days_between,
    explicit_windows,
    requested_days,
    syncable_span,
    windows_without,
)
from atom_pipelines.store.resource import MailStore

#: Day ranges a metadata cell lists per mailbox and status; the counts are always complete.
RANGES_SHOWN = 8


class StaleStepError(RuntimeError):
    """A step started for a run that has already ended."""


def refuse_if_run_ended(instance: DagsterInstance, run_id: str) -> None:
    """Raise ``StaleStepError`` when the run is no longer in progress: its step must not write.

    With late acknowledgement the Celery broker hands a step whose worker lost the broker to a worker again,
    even after its run has failed for that very loss and the run's retry has started. Run then, the stale
    step rewrites days the retry has moved past, and each rewrite clears the progress of the assets
    downstream (measured in CI: the stale extraction step ran after the retry's links and left 45 mailbox-days
    of entity_links missing). Read from the instance, not the run the step was given, which may be older."""
    run = instance.get_run_by_id(run_id)
    if run is not None and run.is_finished:
        raise StaleStepError(
            f"run {run_id} already ended {run.status.value}: this step, handed out again after its run ended "
            "(a Celery redelivery), is not run, so that it cannot overwrite what a later run stored"
        )


def step_windows(context: AssetExecutionContext, store: MailStore, asset: str) -> list[MailboxWindow]:
    """The mailbox-days this step of ``asset`` covers (see the module docstring). Refuses a step whose run has
    ended (``refuse_if_run_ended``) before anything is recorded."""
    refuse_if_run_ended(context.instance, context.run.run_id)
    mailboxes = sorted(context.partition_keys)
    now = dt.datetime.now(dt.timezone.utc)
    explicit = requested_days(context.run.tags, now)
    if explicit is not None:
        windows = explicit_windows(mailboxes, *explicit)
        root = context.run.root_run_id
        if root is None:
            return windows
        done = store.done_days(asset, mailboxes, *explicit, root_run_id=root)
        if done:
            context.log.info(f"re-execution of {root}: {len(done)} mailbox-day(s) it finished are not redone")
        return windows_without(mailboxes, {w.mailbox: w.days for w in windows}, done)
    span = syncable_span(now)
    if span is None:
        context.log.info("no complete day exists yet: nothing to catch up")
        return []
    position = CHAIN.index(asset)
    if position == 0:
        every_day = days_between(*span)
        candidates: Mapping[str, Sequence[dt.date]] = {mailbox: every_day for mailbox in mailboxes}
    else:
        upstream: dict[str, list[dt.date]] = {mailbox: [] for mailbox in mailboxes}
        for mailbox, day in store.done_days(CHAIN[position - 1], mailboxes, *span):
            upstream[mailbox].append(day)
        candidates = upstream
    windows = windows_without(mailboxes, candidates, store.done_days(asset, mailboxes, *span))
    context.log.info(
        f"catch-up of {len(mailboxes)} mailbox(es), {span[0]}..{span[1]}: "
        f"{sum(len(w.days) for w in windows)} mailbox-day(s) not done yet"
    )
    return windows


def record_step(
    context: AssetExecutionContext,
    store: MailStore,
    asset: str,
    windows: Sequence[MailboxWindow],
    rows: Mapping[str, int],
    failed: Mapping[str, str],
) -> None:
    """Record the step's days as done or failed; the same days downstream lose their progress (they were
    built from what this step just replaced)."""
    store.record_days(
        asset,
        windows,
        rows=rows,
        failed=failed,
        run_id=context.run.run_id,
        root_run_id=context.run.root_run_id or context.run.run_id,
        invalidates=CHAIN[CHAIN.index(asset) + 1 :],
    )


@contextmanager
def failure_recorded(
    context: AssetExecutionContext, store: MailStore, asset: str, windows: Sequence[MailboxWindow]
) -> Iterator[None]:
    """A step that raises records its days as failed, with the error, and raises on: the next catch-up
    retries them and the analyst sees them failed, not missing."""
    try:
        yield
    except Exception as exc:
        detail = f"the {asset} step failed: {type(exc).__name__}: {exc}"
        failed = {key: detail for window in windows for key in window.mailbox_day_keys()}
        try:
            record_step(context, store, asset, windows, rows={}, failed=failed)
        except SQLAlchemyError as record_error:
            exc.add_note(f"its {len(failed)} mailbox-day(s) could not be recorded as failed either: {record_error!r}")
        raise


def progress_metadata(store: MailStore, asset: str, mailboxes: Sequence[str]) -> dict[str, Any]:
    """Per mailbox of the run: how many syncable days are done, failed and missing for ``asset``, and which
    (as day ranges): the UI's view of the mailbox-days under a mailbox partition."""
    span = syncable_span(dt.datetime.now(dt.timezone.utc))
    if span is None or not mailboxes:
        return {}
    every_day = days_between(*span)
    statuses = store.day_statuses(asset, sorted(mailboxes), *span)
    lines = [
        f"Days {span[0]}..{span[1]} ({len(every_day)}) of `{asset}`:",
        "",
        "| mailbox | done | failed | missing | failed days | missing days |",
        "|---|---|---|---|---|---|",
    ]
    totals = {"done": 0, "failed": 0, "missing": 0}
    for mailbox in sorted(mailboxes):
        recorded = statuses.get(mailbox, {})
        failed = sorted(day for day, (status, _) in recorded.items() if status == "failed")
        missing = [day for day in every_day if day not in recorded]
        done = len(recorded) - len(failed)
        totals["done"] += done
        totals["failed"] += len(failed)
        totals["missing"] += len(missing)
        lines.append(
            f"| {mailbox} | {done} | {len(failed)} | {len(missing)} | {_ranges(failed)} | {_ranges(missing)} |"
        )
    return {
        "mailbox_days_done": totals["done"],
        "mailbox_days_failed": totals["failed"],
        "mailbox_days_missing": totals["missing"],
        "mailbox_days": MetadataValue.md("\n".join(lines)),
    }


def _ranges(days: Sequence[dt.date]) -> str:
    spans = contiguous_spans(days)
    text = ", ".join(str(s[0]) if len(s) == 1 else f"{s[0]}..{s[-1]}" for s in spans[:RANGES_SHOWN])
    return text + (f" (+{len(spans) - RANGES_SHOWN} more)" if len(spans) > RANGES_SHOWN else "") or "-"
