"""Typed shapes at the mail boundary: what Graph (or an export of Graph objects) gives us.

Production bug #2 was an untyped response envelope; every record entering the pipeline is validated here
and a record that does not fit is rejected with the field that failed, never half-read.

Lone surrogates. Graph cuts long text by UTF-16 code units, so a cut can fall between the two halves of a
surrogate pair, and the JSON then holds a lone ``\\udce9`` escape. That is valid JSON and a valid Python str,
but no UTF-8 encoder accepts it: the store's write (psycopg's COPY, sqlite3) failed with UnicodeEncodeError
and took the good messages of the day with it. Both sources read every record through ``GraphMessage``, so it
is settled here, once: in text that is read (subject, body, display names) each lone surrogate becomes
U+FFFD and is counted in ``GraphMessage.text_repairs``, which the sync reports per message and partition; in
an identifier (message, conversation, internet message, change and folder ids, addresses) a repair would
make another identifier, so the record is refused and quarantined like any other record that does not fit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

#: Any surrogate code point left in a str is a lone one: ``json.loads`` (and pydantic's JSON reader) join a
#: well-formed ``\ud83d\ude00`` pair into one character, so what remains is a half that was cut off.
LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
REPLACEMENT_CHARACTER = "\ufffd"


def lone_surrogate_problem(value: object) -> str | None:
    """Why ``value`` cannot be an identifier, when it holds a lone surrogate (the surrogate escaped, so the
    reason itself can be stored and logged); None when it holds none or is not a str."""
    if not isinstance(value, str):
        return None
    found = LONE_SURROGATE.search(value)
    if found is None:
        return None
    return (
        f"lone surrogate {ascii(found.group())} at index {found.start()} (text cut inside a UTF-16 surrogate "
        "pair): an identifier cannot be repaired without becoming another one"
    )


def printable(value: str) -> str:
    """``value`` with any lone surrogate written as its escape, for origins, reasons and log lines built from
    source data (an id the source cut): a UTF-8 encoder takes it, and the text still says what was there."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _refuse_lone_surrogates(value: object) -> object:
    # Before pydantic's own str check, which says only "unable to parse raw data as a unicode string" for
    # constrained strings and lets plain ones through.
    problem = lone_surrogate_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


#: A str that identifies something (a Graph id, an address): refused, never repaired, when it holds a lone surrogate.
Identifier = Annotated[str, BeforeValidator(_refuse_lone_surrogates)]


class EmailAddress(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str | None = None  # text: repaired by GraphMessage, which counts it
    address: Identifier | None = None


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

    id: Identifier = Field(min_length=1)
    change_key: Identifier | None = Field(default=None, alias="changeKey")
    parent_folder_id: Identifier | None = Field(default=None, alias="parentFolderId")
    internet_message_id: Identifier | None = Field(default=None, alias="internetMessageId")
    conversation_id: Identifier | None = Field(default=None, alias="conversationId")
    subject: str | None = None
    body: ItemBody = Field(default_factory=ItemBody)
    sender: Recipient | None = Field(default=None, alias="from")
    to_recipients: list[Recipient] = Field(default_factory=list, alias="toRecipients")
    cc_recipients: list[Recipient] = Field(default_factory=list, alias="ccRecipients")
    bcc_recipients: list[Recipient] = Field(default_factory=list, alias="bccRecipients")
    received_at: AwareDatetime = Field(alias="receivedDateTime")
    sent_at: AwareDatetime | None = Field(default=None, alias="sentDateTime")

    _text_repairs: dict[str, int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _repair_cut_text(cls, data: Any, handler: ModelWrapValidatorHandler[GraphMessage]) -> GraphMessage:
        repairs: dict[str, int] = {}
        if isinstance(data, dict):
            data = _with_text_repaired(data, repairs)
        message = handler(data)
        message._text_repairs = repairs
        return message

    @property
    def text_repairs(self) -> dict[str, int]:
        """Lone surrogates replaced by U+FFFD while reading, per field path (``subject``, ``body.content``,
        ``toRecipients.0.emailAddress.name``); empty for a message whose text was whole."""
        return dict(self._text_repairs)

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


def _repaired(value: object, path: str, repairs: dict[str, int]) -> object:
    if not isinstance(value, str):
        return value  # not text: validation says what is wrong with it
    repaired, count = LONE_SURROGATE.subn(REPLACEMENT_CHARACTER, value)
    if count:
        repairs[path] = count
    return repaired


def _with_recipient_repaired(recipient: object, path: str, repairs: dict[str, int]) -> object:
    if not isinstance(recipient, dict) or not isinstance(recipient.get("emailAddress"), dict):
        return recipient
    address = recipient["emailAddress"]
    if "name" not in address:
        return recipient
    name = _repaired(address["name"], f"{path}.emailAddress.name", repairs)
    return {**recipient, "emailAddress": {**address, "name": name}}


def _with_text_repaired(data: dict[str, Any], repairs: dict[str, int]) -> dict[str, Any]:
    """A copy of a raw message whose read text fields hold no lone surrogate, each repair counted in ``repairs``.

    Only the text ``GraphMessage`` reads, under the key it reads it from (the alias first, as pydantic does,
    then the field name), so a cut in a property it never reads (``bodyPreview``) counts as no repair. The
    caller's dict is left as it was: a rejected record is quarantined as the source sent it."""
    data = dict(data)
    if "subject" in data:
        data["subject"] = _repaired(data["subject"], "subject", repairs)
    body = data.get("body")
    if isinstance(body, dict) and "content" in body:
        data["body"] = {**body, "content": _repaired(body["content"], "body.content", repairs)}
    for name, field in GraphMessage.model_fields.items():
        if name not in ("sender", "to_recipients", "cc_recipients", "bcc_recipients"):
            continue
        key = field.alias if field.alias in data else name
        if key not in data:
            continue
        if name == "sender":
            data[key] = _with_recipient_repaired(data[key], key, repairs)
        elif isinstance(data[key], list):
            data[key] = [_with_recipient_repaired(r, f"{key}.{i}", repairs) for i, r in enumerate(data[key])]
    return data


def _address_pair(recipient: Recipient | None) -> list[str]:
    if recipient is None:
        return ["", ""]
    return [recipient.email_address.name or "", (recipient.email_address.address or "").lower()]
