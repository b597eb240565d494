"""Where messages come from: the ``MailSource`` interface and the mail-export implementation.

``MailSource`` follows the shape of Dagster's ``HNClient`` example: one abstract resource, interchangeable
implementations (the export directory here, Microsoft Graph beside it). Assets only see
``list_mailboxes`` and ``fetch_window``.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field, ValidationError

from atom_pipelines import config
from atom_pipelines.mail.models import GraphMessage, lone_surrogate_problem, utc_day, validation_problems
from atom_pipelines.partitions import MailboxWindow

#: How much of a rejected line the quarantine keeps, so a bad record is findable without storing megabytes.
RAW_EXCERPT_CHARS = 2_000


class MailSourceError(RuntimeError):
    """The source cannot be read at all (missing directory, no files): no partition can be trusted."""


@dataclass(frozen=True)
class SourcedMessage:
    """A validated message and where it was read (``file:line`` for an export, the request for Graph)."""

    mailbox: str
    message: GraphMessage
    origin: str


@dataclass(frozen=True)
class RejectedRecord:
    """A record the source could not accept. ``mailbox``/``day`` are ``None`` where they could not be read."""

    origin: str
    reason: str
    raw_excerpt: str
    mailbox: str | None = None
    day: dt.date | None = None

    def concerns(self, mailbox: str, day: dt.date) -> bool:
        """Could this record belong to the partition? Unknown fields count as 'maybe', so nothing hides."""
        return self.mailbox in (None, mailbox) and self.day in (None, day)


@dataclass
class WindowBatch:
    """What the source listed for one mailbox window: every message, every record it had to reject, and
    what the source itself says it holds (``listed_by_day``: distinct messages the source reports for the
    day, checked against what was stored; ``incomplete_by_day``: why a day's listing cannot be trusted)."""

    window: MailboxWindow
    messages_by_day: dict[dt.date, list[SourcedMessage]] = field(default_factory=dict)
    rejected_by_day: dict[dt.date, list[RejectedRecord]] = field(default_factory=dict)
    listed_by_day: dict[dt.date, int] = field(default_factory=dict)
    incomplete_by_day: dict[dt.date, str] = field(default_factory=dict)
    #: Counters of how the listing went (pages, repeated items...), shown as run metadata.
    stats: dict[str, int] = field(default_factory=dict)


class MailSource(ConfigurableResource, ABC):
    """A place that holds mailboxes' messages."""

    @abstractmethod
    def list_mailboxes(self) -> list[str]:
        """Every mailbox the source knows, lowercased, sorted."""

    @abstractmethod
    def fetch_window(self, window: MailboxWindow) -> WindowBatch:
        """All messages received in the window's UTC days, and every rejected record that may belong there."""

    @abstractmethod
    def history_span(self, mailbox: str, not_before: dt.date) -> tuple[dt.date, dt.date | None] | None:
        """Where a mailbox's history sync starts and ends: the UTC day of its oldest message on or after
        ``not_before``, and its last day (None: the mailbox keeps receiving mail, sync up to yesterday).
        None when the mailbox holds nothing from ``not_before`` on."""

    @property
    def follows_delta(self) -> bool:
        """Whether the source reports changes (``mail/delta.py``): Graph does, a finished export does not."""
        return False


def normalize_mailbox(value: str) -> str:
    return value.strip().lower()


class ExportMailSource(MailSource):
    """A directory of ``*.jsonl`` files of Graph ``message`` objects with a ``mailbox`` field.

    This is the embedded default and how eDiscovery/PST exports are loaded. The directory is scanned once
    per change of its files (name, size, mtime) and shared by every run in the process.
    """

    export_dir: str = Field(
        # The repo's sample; the code location passes ATOM_MAIL_EXPORT_DIR (resources.py).
        default=str(config.DEFAULT_EXPORT_DIR),
        description="Directory of *.jsonl Graph message exports (ATOM_MAIL_EXPORT_DIR).",
    )

    def list_mailboxes(self) -> list[str]:
        return sorted(self._index().messages)

    def fetch_window(self, window: MailboxWindow) -> WindowBatch:
        index = self._index()
        batch = WindowBatch(window=window)
        by_day = index.messages.get(window.mailbox, {})
        for day in window.days:
            batch.messages_by_day[day] = list(by_day.get(day, ()))
            batch.listed_by_day[day] = len({m.message.id for m in batch.messages_by_day[day]})
            batch.rejected_by_day[day] = [r for r in index.rejected if r.concerns(window.mailbox, day)]
        return batch

    def history_span(self, mailbox: str, not_before: dt.date) -> tuple[dt.date, dt.date | None] | None:
        # An export is finished: its history ends with its last message.
        days = [day for day in self._index().messages.get(mailbox, {}) if day >= not_before]
        return (min(days), max(days)) if days else None

    def _index(self) -> _ExportIndex:
        return _load_index(Path(self.export_dir))


@dataclass
class _ExportIndex:
    messages: dict[str, dict[dt.date, list[SourcedMessage]]]
    rejected: list[RejectedRecord]


_index_lock = threading.Lock()
_index_cache: dict[tuple, _ExportIndex] = {}


def _load_index(export_dir: Path) -> _ExportIndex:
    if not export_dir.is_dir():
        raise MailSourceError(
            f"mail export directory {export_dir} does not exist (set ATOM_MAIL_EXPORT_DIR to a directory "
            "of *.jsonl Graph message exports)"
        )
    files = sorted(export_dir.glob("*.jsonl"))
    if not files:
        raise MailSourceError(f"mail export directory {export_dir} holds no *.jsonl files")
    signature = (str(export_dir.resolve()),) + tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    with _index_lock:
        cached = _index_cache.get(signature)
        if cached is None:
            cached = _scan(files)
            _index_cache.clear()  # one export per process is the norm; do not grow without bound
            _index_cache[signature] = cached
        return cached


def _scan(files: list[Path]) -> _ExportIndex:
    messages: dict[str, dict[dt.date, list[SourcedMessage]]] = defaultdict(lambda: defaultdict(list))
    rejected: list[RejectedRecord] = []
    # Graph ids are unique per mailbox; a second record with the same id is kept out and named, with the
    # first occurrence, rather than silently overwriting it or landing in another day's partition.
    first_seen: dict[tuple[str, str], str] = {}
    for path in files:
        with path.open(encoding="utf-8", errors="strict") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                origin = f"{path.name}:{line_number}"
                outcome = parse_export_line(line, origin)
                if isinstance(outcome, RejectedRecord):
                    rejected.append(outcome)
                    continue
                identity = (outcome.mailbox, outcome.message.id)
                if identity in first_seen:
                    rejected.append(
                        RejectedRecord(
                            origin,
                            f"duplicate message id {outcome.message.id!r} (first at {first_seen[identity]})",
                            line[:RAW_EXCERPT_CHARS],
                            outcome.mailbox,
                            outcome.message.received_day,
                        )
                    )
                    continue
                first_seen[identity] = origin
                messages[outcome.mailbox][outcome.message.received_day].append(outcome)
    frozen = {mailbox: dict(days) for mailbox, days in messages.items()}
    return _ExportIndex(messages=frozen, rejected=rejected)


def parse_export_line(line: str, origin: str) -> SourcedMessage | RejectedRecord:
    """One export line to a validated message, or a rejection that says what was wrong and where."""
    excerpt = line[:RAW_EXCERPT_CHARS]
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return RejectedRecord(origin, f"invalid JSON: {exc}", excerpt)
    if not isinstance(record, dict):
        return RejectedRecord(origin, f"expected a JSON object, got {type(record).__name__}", excerpt)

    raw_mailbox = record.get("mailbox")
    day = _readable_day(record.get("receivedDateTime"))
    cut_mailbox = lone_surrogate_problem(raw_mailbox)
    if cut_mailbox is not None:
        # The mailbox names the partition: a repaired one would be a mailbox nobody has. Whose it is is
        # unknown, so it is quarantined in every mailbox's partitions of its day (nothing hides).
        return RejectedRecord(origin, f"invalid 'mailbox' field: {cut_mailbox}", excerpt, None, day)
    mailbox = normalize_mailbox(raw_mailbox) if isinstance(raw_mailbox, str) else ""
    if not mailbox:
        return RejectedRecord(origin, "missing 'mailbox' field", excerpt, None, day)
    try:
        message = GraphMessage.model_validate(record)
    except ValidationError as exc:
        return RejectedRecord(origin, f"invalid message: {validation_problems(exc)}", excerpt, mailbox, day)
    return SourcedMessage(mailbox=mailbox, message=message, origin=origin)


def _readable_day(value: object) -> dt.date | None:
    """The UTC day of a rejected record's timestamp when it can be read with an offset, else None: the
    record could be of any day, and is quarantined in every partition of its mailbox."""
    try:
        return utc_day(value)
    except ValidationError:  # no timestamp, not one, or one without an offset
        return None
