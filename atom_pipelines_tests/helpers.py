"""Running the real assets in tests: resources pointed at test data, partition ranges as a backfill runs them."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult, materialize

from atom_pipelines.assets import PARTITIONED_CHAIN, entity_graph
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.extraction.providers import MessageText, Participant
from atom_pipelines.mail.source import ExportMailSource
from atom_pipelines.partitions import MAILBOX_DIMENSION
from atom_pipelines.store.resource import MailStore
from atom_pipelines.tags import FIRST_DAY_TAG, LAST_DAY_TAG

ALL_ASSETS = [*PARTITIONED_CHAIN, entity_graph]

#: One short e-mail the LLM tests extract: a header person, a body person and an amount.
TURBINE_MESSAGE = MessageText(
    mailbox="kay.mann@enron.com",
    message_id="m-1",
    subject="Turbine contract",
    sender=Participant("Sheila Tweed", "sheila.tweed@enron.com"),
    to=(Participant("Kay Mann", "kay.mann@enron.com"),),
    cc=(),
    new_text="Kay, Ben Jacoby agreed to pay $5 million for the turbine.",
    signature="",
    body="Kay, Ben Jacoby agreed to pay $5 million for the turbine.",
    day=dt.date(2001, 11, 27),
)


def resources(export_dir: Path, database_url: str, extractor: EntityExtractor | None = None) -> dict[str, Any]:
    return {
        "mail_source": ExportMailSource(export_dir=str(export_dir)),
        "store": MailStore(database_url=database_url),
        "extractor": extractor or EntityExtractor(chain="heuristic"),
    }


def materialize_days(
    instance: DagsterInstance,
    run_resources: dict[str, Any],
    mailbox: str,
    first_day: dt.date | str,
    last_day: dt.date | str | None = None,
    assets: list | None = None,
    raise_on_error: bool = True,
) -> ExecuteInProcessResult:
    """Materialize one mailbox's days [first_day, last_day] in one run, as a date-range re-sync does."""
    first = dt.date.fromisoformat(str(first_day))
    last = dt.date.fromisoformat(str(last_day or first_day))
    if mailbox not in instance.get_dynamic_partitions(MAILBOX_DIMENSION):
        instance.add_dynamic_partitions(MAILBOX_DIMENSION, [mailbox])
    return materialize(
        assets or PARTITIONED_CHAIN,
        instance=instance,
        resources=run_resources,
        raise_on_error=raise_on_error,
        **partition_selection(mailbox, first, last),
    )


def partition_selection(mailbox: str, first: dt.date, last: dt.date) -> dict[str, Any]:
    """The ``materialize`` arguments that select one mailbox's days [first, last] as one run: the mailbox's
    partition and the day tags a date-range re-sync sets."""
    return {"partition_key": mailbox, "tags": {FIRST_DAY_TAG: first.isoformat(), LAST_DAY_TAG: last.isoformat()}}


def check_results(result: ExecuteInProcessResult) -> dict[str, bool]:
    """check name -> passed, for every check evaluated in the run."""
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def check_metadata(result: ExecuteInProcessResult, check_name: str) -> dict[str, Any]:
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == check_name:
            return {k: v.value for k, v in evaluation.metadata.items()}
    raise KeyError(f"check {check_name} was not evaluated")


# -- store rows written by hand, as the pipeline writes them ------------------------------------------------------


def message_row(mailbox: str, message_id: str, day: dt.date, internet_id: str | None, subject: str) -> dict[str, Any]:
    """A ``messages`` row: the subject is the whole text, its hash the content hash."""
    return {
        "mailbox": mailbox,
        "message_id": message_id,
        "day": day,
        "received_at": dt.datetime.combine(day, dt.time(9), tzinfo=dt.timezone.utc),
        "internet_message_id": internet_id,
        "conversation_id": None,
        "subject": subject,
        "sender_name": None,
        "sender_address": None,
        "to_recipients": [],
        "cc_recipients": [],
        "body_content_type": "text",
        "body_raw": subject,
        "new_text": subject,
        "signature_text": "",
        "quoted_text": "",
        "text_basis": "new_text",
        "extraction_text": subject,
        "content_hash": hashlib.sha256(subject.encode()).hexdigest(),
        "change_key": None,
        "parent_folder_id": None,
        "origin": "test",
    }


def entity_row(mailbox: str, message_id: str, day: dt.date, key: str, name: str, entity_type: str, roles: str):
    """An ``entities`` row of the heuristic provider (roles comma-separated, primary first)."""
    return {
        "mailbox": mailbox,
        "message_id": message_id,
        "entity_key": key,
        "day": day,
        "name": name,
        "entity_type": entity_type,
        "roles": roles,
        "evidence": name,
        "provider": "heuristic",
        "model": "rules-v1",
    }


def link_row(mailbox: str, message_id: str, day: dt.date, source: str, target: str, kind: str) -> dict[str, Any]:
    """An ``entity_links`` row (every link weighs one message)."""
    return {
        "mailbox": mailbox,
        "message_id": message_id,
        "source_key": source,
        "target_key": target,
        "kind": kind,
        "day": day,
        "weight": 1.0,
    }
