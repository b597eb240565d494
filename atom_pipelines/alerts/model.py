"""What an alert is: the failure as an analyst reads it, and how its lines are rendered."""

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from atom_pipelines.partitions import split_mailbox_day_key

#: Characters of an error message or a receiver's answer quoted in an alert or an exception.
QUOTE_CHARS = 300


#: Mailbox-day lines listed in one alert; the full count is always given.
PARTITION_LINES = 10


@dataclass(frozen=True)
class FailingPartition:
    """One line of a check alert: a mailbox-day (or whatever key the check used) and what failed there."""

    key: str
    mailbox: str | None
    day: str | None
    detail: str

    def render(self) -> str:
        where = f"{self.mailbox} {self.day}" if self.mailbox and self.day else self.key
        return f"{where}: {self.detail}"


@dataclass(frozen=True)
class Alert:
    """One failure, as the analyst reads it. ``alert_id`` is stable across ticks (it keys the ledgers)."""

    alert_id: str
    kind: str  # "check", "run" or "tick" (a failed sensor tick)
    severity: str  # "ERROR" or "WARN"
    headline: str
    summary: tuple[str, ...]
    run_id: str
    run_url: str
    check_name: str | None = None
    partitions: tuple[FailingPartition, ...] = ()
    #: The check's own count of failing partitions (complete, while ``partitions`` may be capped).
    partition_count: int = 0
    #: Mailboxes of the run and its mailbox-days in words, for alerts without partition lines.
    mailboxes: frozenset[str] = frozenset()
    run_scope: str = ""
    #: Lines left out because their mailbox is silenced.
    silenced_lines: int = 0
    #: What ``run_url`` opens: a run, or (for a failed sensor tick) the sensor's page.
    link_label: str = "Run"

    @property
    def subject(self) -> str:
        """One line: severity, what failed, how many partitions, which mailbox and days."""
        scope = partition_scope(self.partitions) or self.run_scope
        count = f" in {self.partition_count} partition(s)" if self.partition_count else ""
        return f"{self.headline}{count}" + (f": {scope}" if scope else "")

    def lines(self) -> list[str]:
        """The body: summary, one line per mailbox-day (capped, with the full count), the run (or sensor) link last."""
        lines = list(self.summary)
        shown = self.partitions[:PARTITION_LINES]
        lines += [f"- {p.render()}" for p in shown]
        listed = len(shown) + self.silenced_lines
        if self.partition_count > listed:
            lines.append(f"- ... and {self.partition_count - listed} more ({self.partition_count} in all)")
        if self.silenced_lines:
            lines.append(f"({self.silenced_lines} line(s) of silenced mailboxes left out)")
        lines.append(f"{self.link_label}: {self.run_url}")
        return lines

    @property
    def text(self) -> str:
        return "\n".join([self.subject, *self.lines()])


def describe_failure(value: Any) -> str:
    """What failed in one partition, in one line: counts first, then the first few items."""
    if isinstance(value, Mapping):
        parts = []
        for name, item in value.items():
            size = len(item) if isinstance(item, Mapping | list | tuple) else None
            parts.append(f"{name}: {size}" if size is not None else f"{name}: {item}")
        return quote("; ".join(parts))
    if isinstance(value, list | tuple):
        head = "; ".join(str(item) for item in value[:3])
        more = f" (+{len(value) - 3} more)" if len(value) > 3 else ""
        return quote(f"{len(value)} item(s): {head}{more}")
    return quote(str(value))


def failing_partition(key: str, value: Any) -> FailingPartition:
    mailbox, day = split_mailbox_day_key(key)
    if mailbox is None and "@" in key:
        mailbox = key  # checks keyed by mailbox alone (llm_keys_accepted)
    return FailingPartition(
        key=key, mailbox=mailbox.lower() if mailbox else None, day=day, detail=describe_failure(value)
    )


def partition_scope(partitions: Sequence[FailingPartition]) -> str:
    """The named mailbox-days in words: one mailbox and its first..last day when they share a mailbox."""
    boxes = {p.mailbox for p in partitions}
    days = sorted(p.day for p in partitions if p.day)
    if len(boxes) != 1 or None in boxes or len(days) != len(partitions):
        return ""
    (mailbox,) = boxes
    return f"{mailbox} {days[0]}" if len(days) == 1 else f"{mailbox} {days[0]}..{days[-1]}"


def quote(text: str, *secrets: str | None) -> str:
    """A receiver's answer or an error message, on one line and shortened, with any secret replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<secret>")
    one_line = " ".join(text.split())
    if len(one_line) <= QUOTE_CHARS:
        return one_line
    shortened = textwrap.shorten(one_line, QUOTE_CHARS, placeholder="...")
    # shorten cuts at word boundaries; a first word longer than the limit (a JSON body, a token) would leave
    # only the placeholder, so such text is cut mid-word instead of vanishing.
    return shortened if shortened != "..." else one_line[: QUOTE_CHARS - 3] + "..."
