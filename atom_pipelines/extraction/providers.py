"""The provider interface: what every extraction provider is given and must return."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from atom_pipelines.extraction.outcomes import Attempt


@dataclass(frozen=True)
class Participant:
    name: str
    address: str


@dataclass(frozen=True)
class MessageText:
    """What extraction reads of one message: the cleaned text plus the header participants."""

    mailbox: str
    message_id: str
    subject: str
    sender: Participant | None
    to: tuple[Participant, ...]
    cc: tuple[Participant, ...]
    new_text: str
    signature: str
    #: The text extraction reads: the new text and signature, or a bare forward's forwarded message.
    body: str
    #: The UTC day of the message's partition (budgets are counted per partition).
    day: dt.date | None = None

    @classmethod
    def from_stored(cls, row: dict[str, Any]) -> MessageText:
        def participants(values: list[dict[str, str]]) -> tuple[Participant, ...]:
            return tuple(Participant(v.get("name") or "", v.get("address") or "") for v in values)

        sender = None
        if row["sender_address"] or row["sender_name"]:
            sender = Participant(row["sender_name"] or "", row["sender_address"] or "")
        return cls(
            mailbox=row["mailbox"],
            message_id=row["message_id"],
            subject=row["subject"],
            sender=sender,
            to=participants(row["to_recipients"]),
            cc=participants(row["cc_recipients"]),
            new_text=row["new_text"],
            signature=row["signature_text"],
            body=row["extraction_text"],
            day=row["day"],
        )


class ExtractionProvider(ABC):
    """One way of extracting entities. Implementations never raise for a bad answer: they return an
    :class:`Attempt` whose outcome names what went wrong, so the chain can fall through."""

    name: str
    model: str

    @abstractmethod
    def extract(self, message: MessageText) -> Attempt:
        """Extract entities from one message."""
