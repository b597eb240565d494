"""Typed shapes at the mail boundary: what Graph (or an export of Graph objects) gives us.

Production bug #2 was an untyped response envelope; every record entering the pipeline is validated here
and a record that does not fit is rejected with the field that failed, never half-read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator


class EmailAddress(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str | None = None
    address: str | None = None


class Recipient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    email_address: EmailAddress = Field(alias="emailAddress")


class ItemBody(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    content_type: Literal["text", "html"] = Field(default="text", alias="contentType")
    content: str = ""

    @field_validator("content_type", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        # Graph documents "text"/"html" but exports seen in the wild say "HTML" and "Text".
        return value.lower() if isinstance(value, str) else value

    @field_validator("content", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return "" if value is None else value


class GraphMessage(BaseModel):
    """The fields of a Graph ``message`` resource the pipeline stores (and ``$select``s from Graph)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    id: str = Field(min_length=1)
    change_key: str | None = Field(default=None, alias="changeKey")
    parent_folder_id: str | None = Field(default=None, alias="parentFolderId")
    internet_message_id: str | None = Field(default=None, alias="internetMessageId")
    conversation_id: str | None = Field(default=None, alias="conversationId")
    subject: str | None = None
    body: ItemBody = Field(default_factory=ItemBody)
    sender: Recipient | None = Field(default=None, alias="from")
    to_recipients: list[Recipient] = Field(default_factory=list, alias="toRecipients")
    cc_recipients: list[Recipient] = Field(default_factory=list, alias="ccRecipients")
    bcc_recipients: list[Recipient] = Field(default_factory=list, alias="bccRecipients")
    received_at: AwareDatetime = Field(alias="receivedDateTime")
    sent_at: AwareDatetime | None = Field(default=None, alias="sentDateTime")

    @field_validator("to_recipients", "cc_recipients", "bcc_recipients", "body", mode="before")
    @classmethod
    def _null_is_default(cls, value: object, info) -> object:  # noqa: ANN001 - pydantic's ValidationInfo
        # Graph sends null rather than [] for some items (drafts, meeting messages).
        if value is None:
            return {} if info.field_name == "body" else []
        return value

    @property
    def received_utc(self) -> dt.datetime:
        return self.received_at.astimezone(dt.timezone.utc)

    @property
    def received_day(self) -> dt.date:
        """The UTC day that decides the message's partition."""
        return self.received_utc.date()

    def content_hash(self) -> str:
        """SHA-256 over the stored fields in a canonical form.

        Two sources holding the same message (the export and Graph) must agree on it, so only fields both
        carry are hashed, timestamps in UTC.
        """
        canonical = {
            "id": self.id,
            "subject": self.subject or "",
            "body": [self.body.content_type, self.body.content],
            "from": _address_pair(self.sender),
            "to": [_address_pair(r) for r in self.to_recipients],
            "cc": [_address_pair(r) for r in self.cc_recipients],
            "received": self.received_utc.isoformat(),
        }
        encoded = json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(encoded).hexdigest()


#: How GraphMessage reads ``receivedDateTime`` (ISO 8601 with an offset or "Z"), for fields read on their own.
_AWARE_DATETIME = TypeAdapter(AwareDatetime)


def utc_day(value: object) -> dt.date:
    """The UTC day of a timestamp, read exactly as :class:`GraphMessage` reads ``receivedDateTime``.

    Raises pydantic's ValidationError (a ValueError) for anything else, a timestamp without an offset
    included: which day it is depends on a time zone nobody stated."""
    return _AWARE_DATETIME.validate_python(value).astimezone(dt.timezone.utc).date()


def validation_problems(exc: ValidationError, whole: str = "record") -> str:
    """Every problem pydantic found, on one line: ``field.path: message; ...`` (``whole`` for the value itself)."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in exc.errors())


def _address_pair(recipient: Recipient | None) -> list[str]:
    if recipient is None:
        return ["", ""]
    return [recipient.email_address.name or "", (recipient.email_address.address or "").lower()]
