"""Fetch, clean and store the messages of mailbox windows: the work behind ``outlook_messages``."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from atom_pipelines.mail.cleaning import clean_body
from atom_pipelines.mail.source import MailSource, RejectedRecord, SourcedMessage
from atom_pipelines.partitions import MailboxWindow, mailbox_day_key
from atom_pipelines.store import schema
from atom_pipelines.store.resource import MailStore

PREVIEW_ROWS = 10


@dataclass
class SyncReport:
    messages_per_partition: dict[str, int] = field(default_factory=dict)
    duplicate_ids: dict[str, list[str]] = field(default_factory=dict)  # partition -> ids listed twice
    quarantined: dict[str, list[RejectedRecord]] = field(default_factory=dict)  # partition -> records
    incomplete: dict[str, str] = field(default_factory=dict)  # partition -> why stored != listed
    source_stats: Counter = field(default_factory=Counter)  # pages, repeated items...
    chars_raw: int = 0
    chars_extraction: int = 0
    text_basis: Counter = field(default_factory=Counter)
    preview: list[dict[str, Any]] = field(default_factory=list)  # the first rows, for the UI
    #: partition -> message id -> field path -> lone surrogates replaced by U+FFFD (``GraphMessage.text_repairs``),
    #: for the stored messages whose text the source had cut inside a surrogate pair.
    repaired_text: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    @property
    def message_count(self) -> int:
        return sum(self.messages_per_partition.values())

    @property
    def repaired_messages(self) -> int:
        return sum(len(messages) for messages in self.repaired_text.values())

    @property
    def lone_surrogates_replaced(self) -> int:
        return sum(
            n for messages in self.repaired_text.values() for fields in messages.values() for n in fields.values()
        )


def sync_messages(source: MailSource, store: MailStore, windows: Sequence[MailboxWindow]) -> SyncReport:
    """Replace the stored messages (and quarantine rows) of these windows with what the source lists now."""
    report = SyncReport()
    message_rows: list[dict[str, Any]] = []
    quarantine_rows: list[dict[str, Any]] = []
    listed_counts: dict[tuple[str, dt.date], int] = {}
    listed_since = dt.datetime.now(dt.timezone.utc)  # before the first request: see replace_partitions
    for window in windows:
        batch = source.fetch_window(window)
        report.source_stats.update(batch.stats)
        for day in window.days:
            if day in batch.incomplete_by_day:
                report.incomplete[mailbox_day_key(window.mailbox, day)] = batch.incomplete_by_day[day]
            listed_counts[(window.mailbox, day)] = batch.listed_by_day.get(day, 0)
            key = mailbox_day_key(window.mailbox, day)
            listed = batch.messages_by_day.get(day, [])
            counts = Counter(item.message.id for item in listed)
            duplicates = sorted(message_id for message_id, n in counts.items() if n > 1)
            if duplicates:
                report.duplicate_ids[key] = duplicates
            seen: set[str] = set()
            for item in listed:
                if item.message.id in seen:
                    continue  # kept out of the store and named by the duplicate-id check
                seen.add(item.message.id)
                if item.message.text_repairs:
                    report.repaired_text.setdefault(key, {})[item.message.id] = item.message.text_repairs
                row = message_row(item, day)
                report.chars_raw += len(row["body_raw"])
                report.chars_extraction += len(row["extraction_text"])
                report.text_basis[row["text_basis"]] += 1
                message_rows.append(row)
            report.messages_per_partition[key] = len(seen)
            rejected = batch.rejected_by_day.get(day, [])
            if rejected:
                report.quarantined[key] = rejected
                quarantine_rows.extend(_quarantine_row(window.mailbox, day, r) for r in rejected)
    report.preview = message_rows[:PREVIEW_ROWS]
    store.replace_partitions(
        windows, {schema.messages: message_rows, schema.quarantined_records: quarantine_rows}, listed_since
    )
    # Read back what the database holds now: the check compares the store itself with the source's listing.
    stored = store.message_counts(windows)
    for (mailbox, day), expected in listed_counts.items():
        if stored.get((mailbox, day), 0) != expected:
            key = mailbox_day_key(mailbox, day)
            problem = f"source listed {expected} distinct messages, the store holds {stored.get((mailbox, day), 0)}"
            report.incomplete[key] = "; ".join(filter(None, [report.incomplete.get(key), problem]))
    return report


def message_row(item: SourcedMessage, day: dt.date) -> dict[str, Any]:
    """The stored form of one message: Graph fields, the cleaned parts, the content hash."""
    message = item.message
    cleaned = clean_body(message.body)
    sender = message.sender.email_address if message.sender else None
    return {
        "mailbox": item.mailbox,
        "message_id": message.id,
        "day": day,
        "received_at": message.received_utc,
        "internet_message_id": message.internet_message_id,
        "conversation_id": message.conversation_id,
        "subject": message.subject or "",
        "sender_name": sender.name if sender else None,
        "sender_address": sender.address if sender else None,
        "to_recipients": [r.email_address.model_dump() for r in message.to_recipients],
        "cc_recipients": [r.email_address.model_dump() for r in message.cc_recipients],
        "body_content_type": message.body.content_type,
        "body_raw": message.body.content,
        "new_text": cleaned.new_text,
        "signature_text": cleaned.signature,
        "quoted_text": cleaned.quoted_text,
        "text_basis": cleaned.text_basis,
        "extraction_text": cleaned.extraction_text,
        "content_hash": message.content_hash(),
        "change_key": message.change_key,
        "parent_folder_id": message.parent_folder_id,
        "origin": item.origin,
    }


def _quarantine_row(mailbox: str, day: dt.date, record: RejectedRecord) -> dict[str, Any]:
    return {
        "mailbox": mailbox,
        "day": day,
        "origin": record.origin,
        "record_mailbox": record.mailbox,
        "record_day": record.day,
        "reason": record.reason,
        "raw_excerpt": record.raw_excerpt,
    }
