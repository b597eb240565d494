"""A Microsoft Graph mail + Entra ID compatible HTTPS server on 127.0.0.1 for tests, driven by the real
``msal`` and ``requests`` libraries: the identity endpoints MSAL calls for the client-credentials flow, and
Graph's mail listing, mail folders and per-folder delta, in the real wire format with the real error bodies.

    with GraphServer(corpus_records(mailboxes={"kay.mann@enron.com"})) as server:
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides session.verify
        session.verify = str(server.ca_bundle_path)
        app = msal.ConfidentialClientApplication(server.client_id, client_credential=server.client_secret,
                                                 authority=f"{server.authority_host}/{server.tenant_id}",
                                                 instance_discovery=False, http_client=session)
        token = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])["access_token"]
        page = session.get(f"{server.api_url}/users/kay.mann@enron.com/messages",
                           headers={"Authorization": f"Bearer {token}"}).json()

Every wire detail here comes from docs/reference/graph_api_facts.md (cited by section as "facts §n");
what that file marks unconfirmed, or what it does not cover and this server had to choose, says so where
it is done. One port serves both identity and Graph; TLS uses a throwaway CA from ``trustme``, whose PEM is
``ca_bundle_path``.

Identity (facts §6): ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and
``POST /{tenant}/oauth2/v2.0/token`` (client credentials). Entra's error bodies for an unknown tenant
(AADSTS90002), a wrong or missing secret (401 invalid_client, AADSTS7000215/7000216), an unknown client
(AADSTS700016) and a scope other than ``https://graph.microsoft.com/.default`` (400 invalid_scope).
Tokens live until ``expire_tokens()``; then Graph answers 401 InvalidAuthenticationToken. MSAL keeps a token
in its own cache for about an hour, so a client that meets that 401 must drop it from MSAL's cache
(``remove_tokens_for_client()``) or build a new application before asking again.

Graph (all under ``/v1.0``; facts §1-§5):
  GET /users/{upn}/messages                         whole mailbox: $filter $orderby $select $top $skip $count
  GET /users/{upn}/mailFolders/{folder}/messages    the same, one folder
  GET /users/{upn}/messages/{id}                    one message ($select)
  GET /users/{upn}/mailFolders/{folder}             {"id", "displayName", ...}
  GET /users/{upn}/mailFolders/{folder}/messages/delta   delta rounds (skiptoken / deltatoken)
``{upn}`` is case-insensitive; ``{folder}`` is a well-known name (inbox, sentitems, deleteditems, drafts,
archive), a folder id, or (a convenience real Graph lacks) the name a record gave in its ``folder`` field.

Errors use Graph's envelope ``{"error": {"code", "message", "innerError": {"date", "request-id",
"client-request-id"}}}`` with a ``request-id`` response header and ``client-request-id`` echoed; the 429
``ApplicationThrottled`` body is sent verbatim as captured, without innerError (facts §4).

Bodies are served as HTML unless the request says ``Prefer: outlook.body-content-type="text"`` (facts §5): a
text body becomes ``<html><head>..</head><body>`` + the escaped text with ``<br>`` for each line break and
``&nbsp;`` for each space HTML would collapse, which ``atom_pipelines.mail.cleaning.body_text`` turns back into
the same text (up to tabs and runs of spaces; checked over the whole corpus). An HTML body asked for as text is
its visible text (BeautifulSoup, ``<br>`` as line breaks).

Scripted faults (``add_fault(Fault(kind, ...))``; ``FAULT_KINDS`` lists them) hit Graph requests only, in
order of addition, each the first ``times`` requests it matches. A request meets them after its token is
checked and it is admitted under the concurrency limit (a 401 or a concurrency 429 spends no fault), and at
most one fault hits a request. The identity endpoints are exercised through
their real error answers instead (MSAL caches some identity errors in the application, facts §6, which makes
scripted identity faults more confusing than useful).

Observability: ``request_log`` (every request: method, raw path, raw query exactly as received, status,
mailbox, page item count, the fault that hit it, the request-id answered), ``token_requests``, ``graph_requests``,
``retry_after_total_s``, ``max_concurrent_by_mailbox``, ``messages(mailbox)`` and ``errors`` (tracebacks of
bugs in this server, each answered 500; a test may assert it is empty).
"""

from __future__ import annotations

import base64
import collections
import copy
import datetime as dt
import hashlib
import html
import json
import re
import secrets
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import Message as HeaderMessage
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlencode

import trustme
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning

from atom_pipelines_tests.servers.http import BackgroundServer, QuietHandler

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
#: Metadata contexts name graph.microsoft.com, as real responses do: they identify, they are not followed.
METADATA = "https://graph.microsoft.com/v1.0/$metadata"
DEFAULT_PAGE_SIZE = 10  # facts §1: $top defaults to 10; delta pages default to the same here
MAX_TOP = 1000  # facts §1: the documented $top range is 1-1000
WELL_KNOWN_FOLDERS = {
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "drafts": "Drafts",
    "archive": "Archive",
}
DEFAULT_FOLDER = "inbox"

FaultKind = Literal[
    "throttle",
    "unavailable",
    "gateway_timeout",
    "expired_token",
    "access_denied",
    "empty_page",
    "missing_value",
    "repeat_item",
    "reset",
    "slow",
]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))

# Verbatim messages (facts §1, §3, §4, §6).
EXPIRED_TOKEN = "Access token has expired or is not yet valid."
THROTTLED_BODY = {
    "error": {"code": "ApplicationThrottled", "message": "Application is over its MailboxConcurrency limit."}
}
ACCESS_DENIED = "Access to OData is disabled."
INVALID_USER = "The requested user '{upn}' is invalid."
INEFFICIENT_FILTER = "The restriction or sort order is too complex for this operation."
INCOMPATIBLE_TYPES = (
    "Invalid filter clause: A binary operator with incompatible types was detected. Found operand types "
    "'{left}' and '{right}' for operator kind '{kind}'."
)
DATETIME_FORMAT = (
    "Invalid filter clause: The DateTimeOffset text '{text}' should be in format "
    "'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is within valid range."
)
UNKNOWN_PROPERTY = "Could not find a property named '{name}' on type '{type}'."
DELTA_FILTER = (
    "The '$filter' parameter value is not supported for 'Messages' resource; only a value of "
    "'receivedDateTime ge value' is supported."
)
# Not in the facts file, worded as Exchange words them as far as we know [unconfirmed]:
ITEM_NOT_FOUND = "The specified object was not found in the store."
SYNC_STATE_NOT_FOUND = "The sync state is not found or has expired; start a new sync from the Location header."

_OPERATOR_KINDS = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}

# Property types of microsoft.graph.message (facts §5), for $filter typing, $orderby and $select checks.
_DATE, _STRING, _BOOL = "Edm.DateTimeOffset", "Edm.String", "Edm.Boolean"
_MESSAGE_TYPE = "microsoft.graph.message"
_PROPERTY_TYPES: dict[str, dict[str, str]] = {
    _MESSAGE_TYPE: {
        "id": _STRING,
        "createdDateTime": _DATE,
        "lastModifiedDateTime": _DATE,
        "changeKey": _STRING,
        "categories": "Collection(Edm.String)",
        "receivedDateTime": _DATE,
        "sentDateTime": _DATE,
        "hasAttachments": _BOOL,
        "internetMessageId": _STRING,
        "subject": _STRING,
        "bodyPreview": _STRING,
        "importance": "microsoft.graph.importance",
        "parentFolderId": _STRING,
        "conversationId": _STRING,
        "conversationIndex": "Edm.Binary",
        "isDeliveryReceiptRequested": _BOOL,
        "isReadReceiptRequested": _BOOL,
        "isRead": _BOOL,
        "isDraft": _BOOL,
        "webLink": _STRING,
        "inferenceClassification": "microsoft.graph.inferenceClassificationType",
        "body": "microsoft.graph.itemBody",
        "uniqueBody": "microsoft.graph.itemBody",
        "sender": "microsoft.graph.recipient",
        "from": "microsoft.graph.recipient",
        "toRecipients": "Collection(microsoft.graph.recipient)",
        "ccRecipients": "Collection(microsoft.graph.recipient)",
        "bccRecipients": "Collection(microsoft.graph.recipient)",
        "replyTo": "Collection(microsoft.graph.recipient)",
        "flag": "microsoft.graph.followupFlag",
        "internetMessageHeaders": "Collection(microsoft.graph.internetMessageHeader)",
    },
    "microsoft.graph.recipient": {"emailAddress": "microsoft.graph.emailAddress"},
    "microsoft.graph.emailAddress": {"name": _STRING, "address": _STRING},
    "microsoft.graph.itemBody": {"contentType": "microsoft.graph.bodyType", "content": _STRING},
    "microsoft.graph.followupFlag": {"flagStatus": "microsoft.graph.followupFlagStatus"},
}
# Enums compare with string literals in Graph filters (importance eq 'high').
_STRING_LIKE = {
    _STRING,
    "microsoft.graph.importance",
    "microsoft.graph.inferenceClassificationType",
    "microsoft.graph.bodyType",
    "microsoft.graph.followupFlagStatus",
}
_COMPARABLE = _STRING_LIKE | {_DATE, _BOOL}
# The order of a message's properties in Graph's JSON (facts §5 example); properties returned only when named in
# $select (uniqueBody, internetMessageHeaders) are left out of a full message.
_PROPERTY_ORDER = (
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
)
_SELECT_ONLY = ("uniqueBody", "internetMessageHeaders")

# A DateTimeOffset literal: seconds required, fraction optional, offset required (facts §1).
_DATETIME_LITERAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
_DATE_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FILTER_TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<word>[^\s()']+)|(?P<other>\S))")
_COLLAPSIBLE_SPACE = re.compile(r"(?:^|(?<= )) ")
_PROPERTY_PATH = re.compile(r"[A-Za-z_][\w]*(?:/[A-Za-z_][\w]*)*")
_LIST_OPTIONS = frozenset({"$filter", "$orderby", "$select", "$top", "$skip", "$count"})
_DELTA_OPTIONS = frozenset({"$filter", "$orderby", "$select", "$top", "$skiptoken", "$deltatoken"})
_DELTA_FILTER_SHAPE = re.compile(r"\s*receivedDateTime (?:ge|gt) \S+\s*$")
_DELTA_CHANGE_TYPES = ("created", "updated", "deleted")
_MESSAGE_ODATA_TYPE = "#microsoft.graph.message"
#: What a delta round's tokens carry besides the resume point: which folder, and the first request's parameters.
_ROUND_STATE = ("mailbox", "folder", "upn", "folder_segment", "params")


@dataclass(frozen=True)
class Fault:
    """A scripted misbehaviour for the next Graph requests that match.

    kind: one of ``FAULT_KINDS``:
      throttle         429, ``Retry-After`` (when ``retry_after`` is not None), the ApplicationThrottled body
      unavailable      503 serviceNotAvailable, ``Retry-After`` when ``retry_after`` is not None
      gateway_timeout  504 (facts §4: may come with 503 on large pages)
      expired_token    401 InvalidAuthenticationToken (the token itself stays valid)
      access_denied    403 ErrorAccessDenied "Access to OData is disabled." (an application access policy)
      empty_page       200 with ``"value": []`` and a nextLink to the same offset, so nothing is lost (a page
                       that would have been empty and last anyway is answered as it is)
      missing_value    200 with the page as it would have been (``@odata.context``, ``@odata.count``, the
                       nextLink or deltaLink) but without its ``value`` array: what a proxy or gateway that
                       rewrites or truncates a body hands back. Graph itself documents no such page; a client
                       must not read it as an empty page
      repeat_item      the page also repeats, first, the last item of the previous page (a replay); on a first
                       page there is nothing to repeat and the fault is spent without effect
      reset            status line and headers with the full Content-Length, half the body, then the socket is
                       closed abruptly (SO_LINGER 0: a TCP RST, no TLS close_notify)
      slow             sleep ``delay_s`` before answering normally (the request stays in flight meanwhile)
    mailbox: only requests for this mailbox (None: any). path_contains: only requests whose raw target (path,
    "?", raw query as sent) contains this, e.g. "/messages/delta" or "%24skip=" for later pages.
    times: how many matching requests it hits before it is spent.
    """

    kind: str
    mailbox: str | None = None
    path_contains: str | None = None
    times: int = 1
    retry_after: int | None = 1
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
        if self.times < 1 or self.delay_s < 0 or (self.retry_after is not None and self.retry_after < 0):
            raise ValueError(f"times must be >= 1, delay_s and retry_after >= 0: {self!r}")


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the server saw it. ``query`` is the raw query string exactly as received (undecoded);
    ``items`` the number of items in the page answered (list and delta pages only); ``fault`` the scripted
    fault kind that hit it, or "concurrency" for a 429 from the mailbox concurrency limit; ``request_id`` the
    ``request-id`` header answered (what a client's error must name for support)."""

    method: str
    path: str
    query: str
    status: int
    mailbox: str | None
    items: int | None
    fault: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    request_id: str | None = None

    @property
    def params(self) -> dict[str, str]:
        """The query decoded as the server decodes it ('+' is a space, as in any form-encoded query)."""
        return dict(parse_qsl(self.query, keep_blank_values=True))

    @property
    def filter(self) -> str | None:
        """The decoded ``$filter``, if any."""
        return self.params.get("$filter")


class GraphError(Exception):
    """A Graph error answer, raised inside request handling and turned into the envelope."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


@dataclass
class _Request:
    method: str
    raw_path: str
    query: str
    headers: HeaderMessage
    body: bytes
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def target(self) -> str:
        return f"{self.raw_path}?{self.query}" if self.query else self.raw_path

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))


@dataclass
class _Reply:
    status: int
    body: dict | None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    items: int | None = None
    reset: bool = False
    fault: str | None = None
    admitted_mailbox: str | None = None  # in flight for the concurrency limit until the answer is written
    mailbox: str | None = None


@dataclass
class _Message:
    mailbox: str
    data: dict  # Graph fields as served (without @odata.etag); nested values are replaced, never mutated
    version: int = 0


@dataclass(frozen=True)
class _Folder:
    id: str
    name: str  # the key it is found by: a well-known name or the record's folder name, lower case
    display_name: str


@dataclass(frozen=True)
class _Clause:
    path: str
    op: str
    value: Any  # datetime, str, bool, int or None, typed as the property
    type: str


@dataclass(frozen=True)
class _Filter:
    groups: tuple[tuple[_Clause, ...], ...]  # OR of ANDs
    properties: tuple[str, ...]  # in order of first appearance: the InefficientFilter rule reads it

    def matches(self, data: dict) -> bool:
        return any(all(_compare(data, clause) for clause in group) for group in self.groups)


@dataclass
class _Round:
    """A delta round: what it lists was fixed when it began (``seq``); its deltaLink resumes from ``seq``."""

    id: str
    entries: list[tuple[str, dict]]  # (kind: created | updated | deleted, message data or {"id"} when deleted)
    seq: int
    epoch: int
    state: dict  # what every token of the round carries (mailbox, folder, params)


@dataclass
class _FaultSlot:
    fault: Fault
    left: int


class GraphServer(BackgroundServer):
    """A real HTTPS server on 127.0.0.1 (a free port) that speaks Entra ID's client-credentials flow and
    Microsoft Graph's mail endpoints. Start it with ``with GraphServer(records) as server:`` (or
    ``start()``/``stop()``). Everything is thread-safe.

    records: Graph message dicts in the export shape; each names its owner in ``mailbox`` (lower-cased) and
    may name its folder in ``folder`` (default inbox); neither is served. Missing Graph fields get Graph's
    defaults (sender = from, isRead true, importance normal, ...); ``changeKey``, ``@odata.etag``,
    ``parentFolderId`` and ``lastModifiedDateTime`` are the server's.
    mailbox_concurrency_limit: requests in flight per mailbox above which Graph answers 429 (facts §4: 4 per
    app and mailbox); None: no limit. page_delay_s: a sleep before every list or delta page, in flight.
    """

    def __init__(
        self,
        records: Iterable[dict],
        *,
        tenant_id: str = "atom-test-tenant",
        client_id: str = "atom-test-client",
        client_secret: str = "atom-test-secret",
        mailbox_concurrency_limit: int | None = 4,
        page_delay_s: float = 0.0,
    ) -> None:
        if mailbox_concurrency_limit is not None and mailbox_concurrency_limit < 1:
            raise ValueError("mailbox_concurrency_limit must be at least 1 (or None for no limit)")
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.mailbox_concurrency_limit = mailbox_concurrency_limit
        self.page_delay_s = page_delay_s
        self._lock = threading.RLock()
        self._mailboxes: dict[str, dict[str, _Message]] = {}
        self._folders: dict[str, dict[str, _Folder]] = {}  # mailbox -> name or id -> folder
        self._seq = 0
        self._folder_log: dict[tuple[str, str], list[tuple[int, str, str]]] = collections.defaultdict(list)
        self._rounds: dict[str, _Round] = {}
        self._delta_epoch = 0
        self._tokens: set[str] = set()
        self._faults: list[_FaultSlot] = []
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._max_concurrent: dict[str, int] = {}
        self._log: list[LoggedRequest] = []
        self._errors: list[str] = []
        self._token_requests = 0
        self._graph_requests = 0
        self._retry_after_total_s = 0
        for record in records:
            self.add_message(record)

        self._tls_dir = Path(tempfile.mkdtemp(prefix="atom-graph-tls-"))
        ca = trustme.CA()
        self.ca_bundle_path: Path = self._tls_dir / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_bundle_path))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        httpd = _TLSServer(("127.0.0.1", 0), _Handler)
        httpd.ssl_context = context
        httpd.app = self
        self._serve_in_background(httpd, "graph-test-server")

    # -- lifecycle --------------------------------------------------------------------------------------

    @property
    def authority_host(self) -> str:
        """``https://127.0.0.1:PORT``; the MSAL authority is ``f"{authority_host}/{tenant_id}"``."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def api_url(self) -> str:
        """``https://127.0.0.1:PORT/v1.0``: where ``https://graph.microsoft.com/v1.0`` would be."""
        return f"{self.authority_host}/v1.0"

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self._tls_dir, ignore_errors=True)

    def session(self) -> Any:
        """A ``requests.Session`` that trusts this server's CA and ignores REQUESTS_CA_BUNDLE (facts §6)."""
        import requests

        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.ca_bundle_path)
        return session

    def confidential_client(self, session: Any = None, client_secret: str | None = None) -> Any:
        """A real ``msal.ConfidentialClientApplication`` for this server's tenant (it runs OIDC discovery now)."""
        import msal

        return msal.ConfidentialClientApplication(
            self.client_id,
            client_credential=self.client_secret if client_secret is None else client_secret,
            authority=self.authority,
            instance_discovery=False,
            http_client=session if session is not None else self.session(),
        )

    # -- mailbox contents (tests mutate these between requests) -----------------------------------------

    def add_mailbox(self, mailbox: str) -> None:
        """A mailbox with the well-known folders and no messages (a mailbox appears with its first message too)."""
        mailbox = mailbox.lower()
        with self._lock:
            if mailbox in self._mailboxes:
                return
            self._mailboxes[mailbox] = {}
            self._folders[mailbox] = {}
            for name, display_name in WELL_KNOWN_FOLDERS.items():
                self._folder(mailbox, name, display_name)
            self._folder(mailbox, "msgfolderroot", "Top of Information Store")

    def add_message(self, record: dict) -> str:
        """Add a message (export shape: ``mailbox``, optional ``folder``, Graph fields with an ``id``); it
        shows in listings and as created in the next delta round of its folder. Returns its id."""
        if not record.get("mailbox") or not record.get("id") or not record.get("receivedDateTime"):
            raise ValueError(f"a record needs mailbox, id and receivedDateTime: {str(record)[:200]}")
        mailbox = record["mailbox"].lower()
        with self._lock:
            self.add_mailbox(mailbox)
            if record["id"] in self._mailboxes[mailbox]:
                raise ValueError(f"message {record['id']!r} already exists in {mailbox}")
            folder = self._folder(mailbox, record.get("folder") or DEFAULT_FOLDER)
            message = _Message(mailbox, _graph_fields(record, folder.id))
            self._stamp(message, modified=record.get("lastModifiedDateTime") or record["receivedDateTime"])
            self._mailboxes[mailbox][message.data["id"]] = message
            self._log_change(mailbox, folder.id, message.data["id"], "add")
            return message.data["id"]

    def update_message(self, mailbox: str, message_id: str, **fields: Any) -> None:
        """Change fields of a message (``update_message(mb, id, isRead=True, **{"from": ...})``): a new
        changeKey and lastModifiedDateTime; it shows as updated in the next delta round."""
        if {"id", "changeKey", "parentFolderId"} & fields.keys():
            raise ValueError("id, changeKey and parentFolderId are the server's (use move_message for the folder)")
        with self._lock:
            message = self._message(mailbox, message_id)
            message.data.update(fields)
            self._stamp(message)
            self._log_change(message.mailbox, message.data["parentFolderId"], message_id, "change")

    def delete_message(self, mailbox: str, message_id: str) -> None:
        """Remove a message: gone from every listing, ``@removed`` in the next delta round of its folder."""
        with self._lock:
            message = self._message(mailbox, message_id)
            del self._mailboxes[message.mailbox][message_id]
            self._log_change(message.mailbox, message.data["parentFolderId"], message_id, "remove")

    def move_message(self, mailbox: str, message_id: str, folder: str) -> None:
        """Move a message to ``folder`` (well-known name, folder id, or a new folder name): ``@removed`` in
        the old folder's next delta round, created in the new one's. Real Graph may give a moved message a
        new id (facts §5); this server keeps the id, so a test that needs a new id deletes and adds instead."""
        with self._lock:
            message = self._message(mailbox, message_id)
            target = self._folder(message.mailbox, folder)
            source = message.data["parentFolderId"]
            if target.id == source:
                return
            message.data["parentFolderId"] = target.id
            self._stamp(message)
            self._log_change(message.mailbox, source, message_id, "remove")
            self._log_change(message.mailbox, target.id, message_id, "add")

    def folder_id(self, mailbox: str, folder: str) -> str:
        """The id of a mailbox's folder (well-known name, id or record folder name)."""
        with self._lock:
            found = self._folders.get(mailbox.lower(), {}).get(folder.lower()) or self._folders.get(
                mailbox.lower(), {}
            ).get(folder)
            if found is None:
                raise KeyError(f"no folder {folder!r} in mailbox {mailbox!r}")
            return found.id

    def messages(self, mailbox: str) -> list[dict]:
        """The messages the mailbox serves now, every default property, bodies as stored (the corpus: text),
        in the default order (receivedDateTime desc, then id). Copies."""
        with self._lock:
            found = list(self._mailboxes.get(mailbox.lower(), {}).values())
            ordered = _sorted(found, None)
            return [_render(dict(m.data), None, None) for m in ordered]

    @property
    def mailboxes(self) -> list[str]:
        with self._lock:
            return sorted(self._mailboxes)

    # -- tokens, faults -----------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every access token issued so far is rejected from now on (401 InvalidAuthenticationToken)."""
        with self._lock:
            self._tokens.clear()

    def expire_delta_tokens(self) -> None:
        """Every delta and skip token issued so far now gets 410 Gone with a ``Location`` to start again."""
        with self._lock:
            self._delta_epoch += 1
            self._rounds.clear()

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(_FaultSlot(fault, fault.times))

    def faults_pending(self) -> int:
        """Hits still to come: the sum of what is left of each fault's ``times``."""
        with self._lock:
            return sum(slot.left for slot in self._faults)

    # -- counters -----------------------------------------------------------------------------------

    @property
    def request_log(self) -> list[LoggedRequest]:
        """Every request answered (identity and Graph), logged as its answer is written. A copy."""
        with self._lock:
            return list(self._log)

    @property
    def token_requests(self) -> int:
        """POSTs to the token endpoint (successful or not)."""
        with self._lock:
            return self._token_requests

    @property
    def graph_requests(self) -> int:
        """Requests under /v1.0, whatever their answer."""
        with self._lock:
            return self._graph_requests

    @property
    def retry_after_total_s(self) -> int:
        """The sum of every Retry-After (seconds) sent: a client that honours them waited at least this long."""
        with self._lock:
            return self._retry_after_total_s

    @property
    def max_concurrent_by_mailbox(self) -> dict[str, int]:
        """The most Graph requests in flight at once per mailbox, counting the admitted ones only: with a
        concurrency limit set it never exceeds the limit, and the excess shows as 429s in ``request_log``
        (fault "concurrency"); with no limit it is the client's real parallelism."""
        with self._lock:
            return dict(self._max_concurrent)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of bugs in this server (each also answered 500)."""
        with self._lock:
            return list(self._errors)

    # -- state helpers (callers hold the lock) ----------------------------------------------------------

    def _folder(self, mailbox: str, name: str, display_name: str | None = None) -> _Folder:
        folders = self._folders[mailbox]
        found = folders.get(name.lower()) or folders.get(name)
        if found is None:
            digest = hashlib.sha256(f"{mailbox}/{name.lower()}".encode()).digest()
            folder_id = "AQMkA" + base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")
            found = _Folder(folder_id, name.lower(), display_name or WELL_KNOWN_FOLDERS.get(name.lower(), name))
            folders[found.name] = folders[folder_id] = found
        return found

    def _message(self, mailbox: str, message_id: str) -> _Message:
        try:
            return self._mailboxes[mailbox.lower()][message_id]
        except KeyError:
            raise KeyError(f"no message {message_id!r} in mailbox {mailbox!r}") from None

    def _stamp(self, message: _Message, modified: str | None = None) -> None:
        message.version += 1
        # surrogatepass: a test may serve an id Graph cut inside a surrogate pair (served as its \u escape).
        stamped = f"{message.mailbox}/{message.data['id']}/{message.version}".encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(stamped).digest()
        message.data["changeKey"] = "CQAAABYAAA" + base64.b64encode(digest[:18]).decode()
        message.data["lastModifiedDateTime"] = modified or _now()

    def _log_change(self, mailbox: str, folder_id: str, message_id: str, event: str) -> None:
        self._seq += 1
        self._folder_log[(mailbox, folder_id)].append((self._seq, message_id, event))

    # -- request handling (handler threads) ----------------------------------------------------------

    def _handle(self, request: _Request) -> _Reply:
        path = request.raw_path
        if path == "/v1.0" or path.startswith("/v1.0/"):
            return self._graph(request)
        return self._identity(request)

    def _record(self, request: _Request, reply: _Reply) -> None:
        """Log a request before its answer is written: a client that has its answer finds it logged."""
        with self._lock:
            self._log.append(
                LoggedRequest(
                    request.method,
                    request.raw_path,
                    request.query,
                    reply.status,
                    reply.mailbox,
                    reply.items,
                    reply.fault,
                    dict(request.headers.items()),
                    reply.headers.get("request-id"),
                )
            )

    def _release(self, reply: _Reply) -> None:
        """The request is no longer in flight. Called just before the answer is written (and again, harmlessly,
        when writing failed), so a client that sends its next request as soon as it has an answer never finds
        its previous request still counted: four workers on one mailbox never see a spurious 429."""
        if reply.admitted_mailbox is not None:
            with self._lock:
                self._in_flight[reply.admitted_mailbox] -= 1
            reply.admitted_mailbox = None

    def _record_bug(self) -> _Reply:
        with self._lock:
            self._errors.append(traceback.format_exc())
        last = traceback.format_exc(limit=1).strip().splitlines()[-1]
        return _Reply(500, {"error": {"code": "generalException", "message": f"graph_server bug: {last}"}})

    # identity ------------------------------------------------------------------------------------

    def _identity(self, request: _Request) -> _Reply:
        segments = request.raw_path.strip("/").split("/")
        tenant = unquote(segments[0]) if segments else ""
        rest = "/".join(segments[1:])
        if request.method == "GET" and rest == "v2.0/.well-known/openid-configuration":
            if tenant.lower() != self.tenant_id.lower():
                return self._unknown_tenant(tenant)
            base = f"{self.authority_host}/{tenant}"
            return _Reply(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_post",
                        "private_key_jwt",
                        "client_secret_basic",
                    ],
                    "jwks_uri": f"{base}/discovery/v2.0/keys",
                    "response_modes_supported": ["query", "fragment", "form_post"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                    "issuer": f"{base}/v2.0",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                    "tenant_region_scope": "EU",
                    "cloud_instance_name": "microsoftonline.com",
                },
            )
        if request.method == "POST" and rest == "oauth2/v2.0/token":
            with self._lock:
                self._token_requests += 1
            if tenant.lower() != self.tenant_id.lower():
                return self._unknown_tenant(tenant)
            return self._token(request)
        return _Reply(404, {"error": "not_found", "error_description": f"No identity endpoint at {request.raw_path}"})

    def _token(self, request: _Request) -> _Reply:
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        grant_type = form.get("grant_type")
        if grant_type != "client_credentials":
            return _entra_error(
                400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant_type}'."
            )
        if form.get("client_id") != self.client_id:
            return _entra_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier "
                f"'{form.get('client_id')}' was not found in the directory '{self.tenant_id}'. This can "
                "happen if the application has not been installed by the administrator of the tenant "
                "or consented to by any user in the tenant. You may have sent your authentication "
                "request to the wrong tenant.",
            )
        secret = form.get("client_secret")
        if not secret:
            return _entra_error(
                401,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            )
        if secret != self.client_secret:
            return _entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret "
                f"being sent in the request is the client secret value, not the client secret ID, for "
                f"a secret added to app '{self.client_id}'.",
            )
        scopes = (form.get("scope") or "").split()
        if scopes != [GRAPH_SCOPE]:
            scope = form.get("scope") or ""
            if len(scopes) == 1 and scope.endswith("/.default"):
                return _entra_error(
                    400,
                    "invalid_resource",
                    500011,
                    f"The resource principal named "
                    f"{scope.removesuffix('/.default')} was not found in the tenant named "
                    f"{self.tenant_id}. This can happen if the application has not been installed by "
                    "the administrator of the tenant or consented to by any user in the tenant. You "
                    "might have sent your authentication request to the wrong tenant.",
                )
            return _entra_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. "
                "Client credential flows must have a scope value with /.default suffixed to the "
                "resource identifier (application ID URI).",
            )
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens.add(token)
        return _Reply(
            200,
            {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token},
            {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

    def _unknown_tenant(self, tenant: str) -> _Reply:
        return _entra_error(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have "
            "the correct tenant ID and are signing into the correct cloud. Check with your "
            "subscription administrator, this may happen if there are no active subscriptions for "
            "the tenant.",
        )

    # graph ----------------------------------------------------------------------------------------

    def _graph(self, request: _Request) -> _Reply:
        with self._lock:
            self._graph_requests += 1
        segments = [unquote(s) for s in request.raw_path.removeprefix("/v1.0").strip("/").split("/")]
        is_user = len(segments) >= 2 and segments[0].lower() == "users"
        try:
            reply = self._graph_unchecked(request, segments)
        except GraphError as error:
            reply = _Reply(error.status, _envelope(error.code, error.message), error.headers)
        reply.mailbox = segments[1].lower() if is_user else None
        reply.headers.setdefault("request-id", request.request_id)
        client_request_id = request.headers.get("client-request-id") or request.request_id
        reply.headers.setdefault("client-request-id", client_request_id)
        if reply.body and "error" in reply.body and "innerError" in reply.body["error"]:
            reply.body["error"]["innerError"] = {
                "date": _now().removesuffix("Z"),
                "request-id": request.request_id,
                "client-request-id": client_request_id,
            }
        return reply

    def _graph_unchecked(self, request: _Request, segments: list[str]) -> _Reply:
        token = (request.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        with self._lock:
            authorized = bool(token) and token in self._tokens
        if not authorized:
            raise _expired_token()
        if len(segments) < 3 or segments[0].lower() != "users":
            resource = segments[0] if segments and segments[0] else "v1.0"
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{resource}'.")
        upn, route = segments[1], [s.lower() for s in segments[2:]]
        mailbox = upn.lower()
        refused = self._admit(mailbox)
        if refused is not None:
            return refused
        try:
            fault = self._take_fault(mailbox, request.target)
            reply = self._route(request, upn, mailbox, route, segments[2:], fault)
        except GraphError as error:
            reply = _Reply(error.status, _envelope(error.code, error.message), error.headers)
        except BaseException:
            with self._lock:
                self._in_flight[mailbox] -= 1
            raise
        reply.admitted_mailbox = mailbox
        return reply

    def _admit(self, mailbox: str) -> _Reply | None:
        """Count the request in flight for its mailbox, or answer 429 when that would pass the limit."""
        with self._lock:
            in_flight = self._in_flight[mailbox] + 1
            limit = self.mailbox_concurrency_limit
            if limit is not None and in_flight > limit:
                self._retry_after_total_s += 1
                return _Reply(429, _throttled_body(), {"Retry-After": "1"}, fault="concurrency")
            self._in_flight[mailbox] = in_flight
            self._max_concurrent[mailbox] = max(self._max_concurrent.get(mailbox, 0), in_flight)
            return None

    def _take_fault(self, mailbox: str, target: str) -> Fault | None:
        with self._lock:
            for slot in self._faults:
                fault = slot.fault
                if slot.left <= 0:
                    continue
                if fault.mailbox is not None and fault.mailbox.lower() != mailbox:
                    continue
                if fault.path_contains is not None and fault.path_contains not in target:
                    continue
                slot.left -= 1
                if fault.kind in ("throttle", "unavailable") and fault.retry_after is not None:
                    self._retry_after_total_s += fault.retry_after
                return fault
            return None

    def _route(
        self, request: _Request, upn: str, mailbox: str, route: list[str], raw_route: list[str], fault: Fault | None
    ) -> _Reply:
        if request.method != "GET":
            raise GraphError(405, "BadRequest", f"This test server does not implement {request.method} on Graph.")
        retry = {"Retry-After": str(fault.retry_after)} if fault and fault.retry_after is not None else {}
        kind = fault.kind if fault else None
        if kind == "throttle":
            return _Reply(429, _throttled_body(), retry, fault=kind)
        if kind == "unavailable":
            # errors.md's code for 503 [message unconfirmed]
            return _Reply(
                503, _envelope("serviceNotAvailable", "The service is temporarily unavailable."), retry, fault=kind
            )
        if kind == "gateway_timeout":
            return _Reply(504, _envelope("UnknownError", "Gateway Timeout"), fault=kind)  # [body unconfirmed]
        if kind == "expired_token":
            error = _expired_token()
            return _Reply(error.status, _envelope(error.code, error.message), error.headers, fault=kind)
        if kind == "access_denied":
            return _Reply(403, _envelope("ErrorAccessDenied", ACCESS_DENIED), fault=kind)
        with self._lock:
            known = mailbox in self._mailboxes
        if not known:
            raise GraphError(404, "ErrorInvalidUser", INVALID_USER.format(upn=upn))
        if route == ["messages"]:
            reply = self._list(request, upn, mailbox, None, kind)
        elif len(route) == 2 and route[0] == "messages":
            reply = self._one(request, mailbox, raw_route[1])
        elif len(route) == 2 and route[0] == "mailfolders":
            reply = self._folder_reply(upn, mailbox, raw_route[1])
        elif len(route) == 3 and route[0] == "mailfolders" and route[2] == "messages":
            reply = self._list(request, upn, mailbox, raw_route[1], kind)
        elif len(route) == 4 and route[0] == "mailfolders" and route[2:] == ["messages", "delta"]:
            reply = self._delta(request, upn, mailbox, raw_route[1], kind)
        else:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{raw_route[-1]}'.")
        if kind == "reset":
            reply.reset = True
        if kind == "slow":
            reply.delay_s += fault.delay_s if fault else 0.0
        if kind is not None:
            reply.fault = kind
        return reply

    def _resolve_folder(self, mailbox: str, segment: str) -> _Folder:
        with self._lock:
            folders = self._folders[mailbox]
            found = folders.get(segment) or folders.get(segment.lower())
        if found is None:
            raise GraphError(404, "ErrorItemNotFound", ITEM_NOT_FOUND)
        return found

    def _folder_reply(self, upn: str, mailbox: str, segment: str) -> _Reply:
        folder = self._resolve_folder(mailbox, segment)
        with self._lock:
            messages = [m for m in self._mailboxes[mailbox].values() if m.data["parentFolderId"] == folder.id]
            root = self._folders[mailbox]["msgfolderroot"].id
        unread = sum(1 for m in messages if not m.data.get("isRead", True))
        return _Reply(
            200,
            {
                "@odata.context": f"{METADATA}#users('{upn}')/mailFolders/$entity",
                "id": folder.id,
                "displayName": folder.display_name,
                "parentFolderId": root,
                "childFolderCount": 0,
                "unreadItemCount": unread,
                "totalItemCount": len(messages),
                "sizeInBytes": sum(len(json.dumps(m.data)) for m in messages),
                "isHidden": False,
            },
        )

    def _one(self, request: _Request, mailbox: str, message_id: str) -> _Reply:
        params = request.params
        select = _parse_select(params.get("$select"))
        with self._lock:
            message = self._mailboxes[mailbox].get(message_id)
            data = dict(message.data) if message else None
        if data is None:
            raise GraphError(404, "ErrorItemNotFound", ITEM_NOT_FOUND)
        body_type, applied = _body_preference(request.headers)
        reply = _Reply(200, _render(data, select, body_type))
        if applied:
            reply.headers["Preference-Applied"] = applied
        return reply

    def _list(self, request: _Request, upn: str, mailbox: str, folder_segment: str | None, fault: str | None) -> _Reply:
        params = request.params
        for name in params:
            if name.startswith("$") and name not in _LIST_OPTIONS:
                raise GraphError(400, "BadRequest", f"This test server does not implement the query option '{name}'.")
        filter_ = _parse_filter(params["$filter"]) if "$filter" in params else None
        orderby = _parse_orderby(params["$orderby"]) if "$orderby" in params else None
        if filter_ is not None and orderby:
            # facts §1: every $orderby property in $filter, in the same order, before any other property.
            wanted = tuple(path for path, _ in orderby)
            if filter_.properties[: len(wanted)] != wanted:
                raise GraphError(400, "InefficientFilter", INEFFICIENT_FILTER)
        select = _parse_select(params.get("$select"))
        top = _parse_int(params, "$top", DEFAULT_PAGE_SIZE, 1, MAX_TOP)
        skip = _parse_int(params, "$skip", 0, 0, None)
        count = params.get("$count", "false").lower()
        if count not in ("true", "false"):
            raise GraphError(
                400,
                "BadRequest",
                f"Invalid value '{params['$count']}' for $count query option found. "
                "Valid values are 'true' and 'false'.",
            )
        folder = self._resolve_folder(mailbox, folder_segment) if folder_segment is not None else None
        with self._lock:
            found = [
                m
                for m in self._mailboxes[mailbox].values()
                if (folder is None or m.data["parentFolderId"] == folder.id)
                and (filter_ is None or filter_.matches(m.data))
            ]
            ordered = [dict(m.data) for m in _sorted(found, orderby)]
        total = len(ordered)
        page = ordered[skip : skip + top]
        next_skip: int | None = skip + top if skip + top < total else None
        if fault == "repeat_item" and 0 < skip <= total:
            page = [ordered[skip - 1], *page]
        if fault == "empty_page" and (page or next_skip is not None):
            page, next_skip = [], skip
        body_type, applied = _body_preference(request.headers)
        body: dict[str, Any] = {"@odata.context": _list_context(upn, folder_segment, params.get("$select"))}
        if count == "true":
            body["@odata.count"] = total
        body["value"] = [_render(data, select, body_type) for data in page]
        if next_skip is not None:
            body["@odata.nextLink"] = self._next_link(request, next_skip)
        if fault == "missing_value":
            del body["value"]
        reply = _Reply(200, body, items=len(body.get("value", ())), delay_s=self.page_delay_s)
        if applied:
            reply.headers["Preference-Applied"] = applied
        return reply

    def _next_link(self, request: _Request, skip: int) -> str:
        """The request's own URL with every original parameter as sent, and ``%24skip=N`` (facts §2)."""
        kept = [pair for pair in request.query.split("&") if pair and unquote_plus(pair.split("=", 1)[0]) != "$skip"]
        return f"{self.authority_host}{request.raw_path}?{'&'.join([*kept, f'%24skip={skip}'])}"

    # delta ----------------------------------------------------------------------------------------

    def _delta(self, request: _Request, upn: str, mailbox: str, folder_segment: str, fault: str | None) -> _Reply:
        params = request.params
        folder = self._resolve_folder(mailbox, folder_segment)
        if "$skiptoken" in params or "$deltatoken" in params:
            token_name = "$skiptoken" if "$skiptoken" in params else "$deltatoken"
            state = _decode_token(params[token_name])
            with self._lock:
                epoch = self._delta_epoch
                round_ = self._rounds.get(state.get("round", "")) if token_name == "$skiptoken" else None
            if state["epoch"] != epoch or (token_name == "$skiptoken" and round_ is None):
                raise GraphError(
                    410, "syncStateNotFound", SYNC_STATE_NOT_FOUND, {"Location": self._initial_delta_url(state)}
                )
            if token_name == "$deltatoken":
                round_ = self._new_round({key: state[key] for key in _ROUND_STATE}, since=state["seq"])
            assert round_ is not None
            offset = state.get("offset", 0)
        else:
            state = {
                "mailbox": mailbox,
                "folder": folder.id,
                "upn": upn,
                "folder_segment": folder_segment,
                "params": self._delta_params(request, params),
            }
            round_ = self._new_round(state, since=None)
            offset = 0
        delta_params = round_.state["params"]
        page_size = delta_params["page_size"]
        entries = round_.entries[offset : offset + page_size]
        next_offset: int | None = offset + page_size if offset + page_size < len(round_.entries) else None
        if fault == "repeat_item" and 0 < offset <= len(round_.entries):
            entries = [round_.entries[offset - 1], *entries]
        if fault == "empty_page":
            entries, next_offset = [], offset
        body_type, applied = _body_preference(request.headers)
        select = delta_params["select"]
        value = []
        for kind, data in entries:
            if kind == "deleted":
                value.append({"@odata.type": _MESSAGE_ODATA_TYPE, "id": data["id"], "@removed": {"reason": "deleted"}})
            else:
                value.append({"@odata.type": _MESSAGE_ODATA_TYPE, **_render(data, select, body_type)})
        base = f"{self.api_url}/users/{quote(round_.state['upn'], safe='@')}/mailFolders/"
        base += f"{quote(round_.state['folder_segment'], safe='')}/messages/delta"
        body: dict[str, Any] = {"@odata.context": f"{METADATA}#Collection(message)", "value": value}
        if next_offset is not None:
            token = _encode_token({**round_.state, "round": round_.id, "offset": next_offset, "epoch": round_.epoch})
            body["@odata.nextLink"] = f"{base}?%24skiptoken={token}"
        else:
            token = _encode_token({**round_.state, "seq": round_.seq, "epoch": round_.epoch})
            body["@odata.deltaLink"] = f"{base}?%24deltatoken={token}"
        if fault == "missing_value":
            del body["value"]
        reply = _Reply(200, body, items=len(body.get("value", ())), delay_s=self.page_delay_s)
        preferences = [applied] if applied else []
        if delta_params["max_page_size_preferred"]:
            preferences.append(f"odata.maxpagesize={page_size}")
        if preferences:
            reply.headers["Preference-Applied"] = ", ".join(preferences)
        return reply

    def _delta_params(self, request: _Request, params: dict[str, str]) -> dict:
        """Validate a first delta request's parameters (facts §3); the round's tokens carry them."""
        for name in params:
            if name.startswith("$") and name not in _DELTA_OPTIONS:
                raise GraphError(
                    400, "BadRequest", f"This test server does not implement the query option '{name}' on delta."
                )
        filter_text = params.get("$filter")
        if filter_text is not None:
            try:
                parsed = _parse_filter(filter_text)
            except GraphError:
                # A quoted or offset-less date in the one supported shape fails as it does on /messages (the
                # OData parser answers before the resource does); any other unparseable filter is unsupported.
                if _DELTA_FILTER_SHAPE.match(filter_text):
                    raise
                raise GraphError(400, "ErrorInvalidUrlQuery", DELTA_FILTER) from None
            clauses = [clause for group in parsed.groups for clause in group]
            if (
                len(parsed.groups) != 1
                or len(clauses) != 1
                or clauses[0].path != "receivedDateTime"
                or (clauses[0].op not in ("ge", "gt"))
            ):
                raise GraphError(400, "ErrorInvalidUrlQuery", DELTA_FILTER)
        orderby = params.get("$orderby")
        if orderby is not None and " ".join(orderby.split()) != "receivedDateTime desc":
            # facts §3: only receivedDateTime desc. [error code and message unconfirmed]
            raise GraphError(
                400,
                "ErrorInvalidUrlQuery",
                "The '$orderby' parameter value is not supported for "
                "'Messages' resource; only a value of 'receivedDateTime desc' is supported.",
            )
        select = _parse_select(params.get("$select"))
        change_type = params.get("changeType")
        if change_type is not None and change_type not in _DELTA_CHANGE_TYPES:
            raise GraphError(
                400,
                "BadRequest",
                f"Invalid value '{change_type}' for changeType; expected created, updated or deleted.",
            )
        max_page_size = _preferences(request.headers).get("odata.maxpagesize")
        page_size = _parse_int(params, "$top", 0, 1, MAX_TOP) or None
        preferred = False
        if page_size is None and max_page_size is not None:
            if not max_page_size.isdigit() or int(max_page_size) < 1:
                raise GraphError(400, "BadRequest", f"Invalid odata.maxpagesize preference '{max_page_size}'.")
            page_size, preferred = int(max_page_size), True
        return {
            "select": select,
            "filter": filter_text,
            "change_type": change_type,
            "top": params.get("$top"),
            "orderby": orderby,
            "page_size": page_size or DEFAULT_PAGE_SIZE,
            "max_page_size_preferred": preferred,
        }

    def _new_round(self, state: dict, since: int | None) -> _Round:
        """The entries of a delta round from ``since`` (None: an initial round listing the folder)."""
        params = state["params"]
        filter_ = _parse_filter(params["filter"]) if params["filter"] else None
        mailbox, folder_id = state["mailbox"], state["folder"]
        with self._lock:
            messages = self._mailboxes.get(mailbox, {})
            entries: list[tuple[str, dict]] = []
            if since is None:
                current = [m for m in messages.values() if m.data["parentFolderId"] == folder_id]
                entries = [("created", dict(m.data)) for m in _sorted(current, None)]
            else:
                first_event: dict[str, str] = {}
                last_seq: dict[str, int] = {}
                for seq, message_id, event in self._folder_log[(mailbox, folder_id)]:
                    if seq > since:
                        first_event.setdefault(message_id, event)
                        last_seq[message_id] = seq
                for message_id in sorted(last_seq, key=last_seq.__getitem__):
                    # Present at `since` unless its first change after it was being added to the folder.
                    was_there = first_event[message_id] != "add"
                    message = messages.get(message_id)
                    is_there = message is not None and message.data["parentFolderId"] == folder_id
                    if is_there and message is not None:
                        entries.append(("updated" if was_there else "created", dict(message.data)))
                    elif was_there:
                        entries.append(("deleted", {"id": message_id}))
            round_ = _Round(uuid.uuid4().hex, [], self._seq, self._delta_epoch, state)
            self._rounds[round_.id] = round_
        # A filter narrows created/updated items; a removal is always reported (its received date is gone).
        round_.entries = [
            (kind, data)
            for kind, data in entries
            if (kind == "deleted" or filter_ is None or filter_.matches(data))
            and (params["change_type"] is None or params["change_type"] == kind)
        ]
        return round_

    def _initial_delta_url(self, state: dict) -> str:
        """Where a client starts again after 410: the first request of the round, with its parameters."""
        params = state.get("params", {})
        query = [
            (name, value)
            for name, value in (
                ("$select", ",".join(params["select"]) if params.get("select") else None),
                ("$filter", params.get("filter")),
                ("$orderby", params.get("orderby")),
                ("$top", params.get("top")),
                ("changeType", params.get("change_type")),
            )
            if value
        ]
        url = f"{self.api_url}/users/{quote(state['upn'], safe='@')}/mailFolders/"
        url += f"{quote(state['folder_segment'], safe='')}/messages/delta"
        return f"{url}?{urlencode(query, quote_via=quote, safe='')}" if query else url


# -- pure helpers ------------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _throttled_body() -> dict:
    return copy.deepcopy(THROTTLED_BODY)


def _envelope(code: str, message: str) -> dict:
    """Graph's error envelope; innerError is filled in (date, request-id, client-request-id) per request."""
    return {"error": {"code": code, "message": message, "innerError": {}}}


def _expired_token() -> GraphError:
    return GraphError(
        401,
        "InvalidAuthenticationToken",
        EXPIRED_TOKEN,
        {
            "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/'
            'authorize", client_id="00000003-0000-0000-c000-000000000000"',
        },
    )


def _entra_error(status: int, error: str, code: int, description: str) -> _Reply:
    """Entra ID's OAuth error body (facts §6), with the trace and correlation ids it always carries."""
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    timestamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return _Reply(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: {correlation_id} "
            f"Timestamp: {timestamp}",
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
    )


def _graph_fields(record: dict, folder_id: str) -> dict:
    """A record's Graph fields with Graph's defaults for what an export leaves out, in Graph's order."""
    given = {key: value for key, value in record.items() if key not in ("mailbox", "folder", "@odata.etag")}
    received = given["receivedDateTime"]
    defaults = {
        "createdDateTime": received,
        "categories": [],
        "sentDateTime": received,
        "hasAttachments": False,
        "subject": "",
        "bodyPreview": "",
        "importance": "normal",
        "isDeliveryReceiptRequested": False,
        "isReadReceiptRequested": False,
        "isRead": True,
        "isDraft": False,
        "webLink": f"https://outlook.office365.com/owa/?ItemID={quote(given['id'], safe='', errors='surrogatepass')}"
        "&exvsurl=1"
        "&viewmodel=ReadMessageItem",
        "inferenceClassification": "focused",
        "body": {"contentType": "text", "content": ""},
        "sender": given.get("from"),
        "toRecipients": [],
        "ccRecipients": [],
        "bccRecipients": [],
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
    }
    merged = {**defaults, **given, "parentFolderId": folder_id}
    ordered = {key: merged[key] for key in _PROPERTY_ORDER if key in merged}
    ordered.update((key, value) for key, value in merged.items() if key not in ordered)
    return ordered


def _render(data: dict, select: list[str] | None, body_type: str | None) -> dict:
    """A message as served: ``@odata.etag``, ``id``, then every default property or the selected ones; bodies
    as ``body_type`` ("html", "text", or None: as stored)."""
    served = {"@odata.etag": f'W/"{data["changeKey"]}"', "id": data["id"]}
    names = (
        [n for n in data if n not in _SELECT_ONLY and n != "id"] if select is None else [n for n in select if n != "id"]
    )
    for name in names:
        value = data.get("body") if name == "uniqueBody" and "uniqueBody" not in data else data.get(name)
        if name in ("body", "uniqueBody") and isinstance(value, dict) and body_type is not None:
            value = _convert_body(value, body_type)
        served[name] = value
    return served


def _convert_body(body: dict, body_type: str) -> dict:
    content_type = str(body.get("contentType") or "text").lower()
    content = body.get("content") or ""
    if content_type == body_type:
        return {"contentType": body_type, "content": content}
    if body_type == "html":
        return {"contentType": "html", "content": text_to_html(content)}
    return {"contentType": "text", "content": html_to_plain_text(content)}


def text_to_html(text: str) -> str:
    """A text body served as HTML: escaped, each line break a ``<br>`` (no newlines in the source, which HTML
    reads as spaces), and each space a browser would collapse (at a line start, or after another space) an
    ``&nbsp;``, so the visible text keeps every line and every space: a quoted-printable soft break
    ``"=\\n  We'd"`` must not lose its spaces and glue two words together."""
    lines = html.escape(text.replace("\r\n", "\n").replace("\r", "\n")).split("\n")
    escaped = "<br>".join(_COLLAPSIBLE_SPACE.sub("&nbsp;", line) for line in lines)
    return (
        '<html><head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        '<meta content="text/html; charset=us-ascii"><style type="text/css" style="display:none">'
        "<!-- P {margin-top:0;margin-bottom:0;} --></style></head>"
        f'<body dir="ltr"><div class="PlainText">{escaped}</div></body></html>'
    )


def html_to_plain_text(content: str) -> str:
    """An HTML body as Graph's text rendering approximates it: the visible text, ``<br>`` as line breaks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(content, "html.parser")
    for hidden in soup(["head", "style", "script", "title"]):
        hidden.decompose()
    for br in soup.find_all("br"):
        br.replace_with("\n")
    return soup.get_text()


def _preferences(headers: HeaderMessage) -> dict[str, str]:
    """``Prefer`` headers (possibly several, comma-separated) as {name: value without quotes}."""
    found: dict[str, str] = {}
    for header in headers.get_all("Prefer") or []:
        for part in header.split(","):
            name, _, value = part.strip().partition("=")
            if name:
                found[name.strip().lower()] = value.strip().strip('"')
    return found


def _body_preference(headers: HeaderMessage) -> tuple[str, str | None]:
    """(body content type to serve, Preference-Applied value or None); HTML unless asked for text (facts §5)."""
    wanted = _preferences(headers).get("outlook.body-content-type", "").lower()
    if wanted in ("text", "html"):
        return wanted, f'outlook.body-content-type="{wanted}"'
    return "html", None


def _list_context(upn: str, folder_segment: str | None, select: str | None) -> str:
    entity = f"users('{upn}')" + (f"/mailFolders('{folder_segment}')" if folder_segment else "") + "/messages"
    if select:
        entity += "(" + ",".join(name.strip() for name in select.split(",")) + ")"
    return f"{METADATA}#{entity}"


def _parse_int(params: dict[str, str], name: str, default: int, low: int, high: int | None) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"-?\d+", raw.strip()):
        raise GraphError(
            400,
            "BadRequest",
            f"Invalid value '{raw}' for {name} query option found. The {name} query "
            "option requires a non-negative integer value.",
        )
    value = int(raw)
    if value < low or (high is not None and value > high):
        # Graph documents $top as 1-1000 (facts §1); what it answers above 1000 is unconfirmed, this server
        # refuses so that a client never depends on it.
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise GraphError(
            400, "BadRequest", f"Invalid value '{raw}' for {name} query option found. The value must be {bound}."
        )
    return value


def _parse_select(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if not names:
        raise GraphError(400, "BadRequest", "The $select query option is empty.")
    for name in names:
        if name not in _PROPERTY_TYPES[_MESSAGE_TYPE]:
            raise GraphError(400, "BadRequest", UNKNOWN_PROPERTY.format(name=name, type=_MESSAGE_TYPE))
    return names


def _property_type(path: str) -> str:
    """The Edm type of a property path of message (``from/emailAddress/address``), or 400 if it is unknown."""
    type_ = _MESSAGE_TYPE
    for segment in path.split("/"):
        properties = _PROPERTY_TYPES.get(type_, {})
        if segment not in properties:
            raise GraphError(400, "BadRequest", UNKNOWN_PROPERTY.format(name=segment, type=type_))
        type_ = properties[segment]
    return type_


def _parse_datetime(text: str) -> dt.datetime:
    if not _DATETIME_LITERAL.fullmatch(text):
        raise GraphError(400, "BadRequest", DATETIME_FORMAT.format(text=text))
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:  # right shape, a field out of range (month 13)
        raise GraphError(400, "BadRequest", DATETIME_FORMAT.format(text=text)) from None


def _parse_filter(text: str) -> _Filter:
    """Parse ``prop op literal`` comparisons joined by ``and`` / ``or`` (no parentheses, no functions), typed
    against message's properties as OData types them (facts §1): a quoted date is an Edm.String, an unquoted
    one an Edm.DateTimeOffset that needs seconds and an offset."""

    def syntax_error(position: int) -> GraphError:
        return GraphError(400, "BadRequest", f"Invalid filter clause: Syntax error at position {position} in '{text}'.")

    tokens: list[tuple[str, str, int]] = []
    position = 0
    while position < len(text):
        match = _FILTER_TOKEN.match(text, position)
        if match is None:  # only trailing whitespace is left
            break
        kind = match.lastgroup or "other"
        if kind == "other" or (kind == "string" and len(match.group(kind)) < 2):
            raise syntax_error(match.start(kind))
        tokens.append((kind, match.group(kind), match.start(kind)))
        position = match.end()
    if not tokens:
        raise syntax_error(0)

    groups: list[list[_Clause]] = [[]]
    properties: list[str] = []
    index = 0
    while True:
        if index + 3 > len(tokens):
            raise syntax_error(tokens[index][2] if index < len(tokens) else len(text))
        (path_kind, path, path_at), (op_kind, op, op_at), (literal_kind, literal, literal_at) = tokens[
            index : index + 3
        ]
        if path_kind != "word" or not _PROPERTY_PATH.fullmatch(path):
            raise syntax_error(path_at)
        if op_kind != "word" or op not in _OPERATOR_KINDS:
            raise syntax_error(op_at)
        type_ = _property_type(path)
        if type_ not in _COMPARABLE:
            raise GraphError(400, "BadRequest", f"This test server does not implement filters on '{path}' ({type_}).")
        value, literal_type = _literal(literal_kind, literal, literal_at, syntax_error)
        compatible = (
            literal_type == "null" or literal_type == type_ or (type_ in _STRING_LIKE and literal_type == _STRING)
        )
        if not compatible:
            raise GraphError(
                400, "BadRequest", INCOMPATIBLE_TYPES.format(left=type_, right=literal_type, kind=_OPERATOR_KINDS[op])
            )
        groups[-1].append(_Clause(path, op, value, type_))
        if path not in properties:
            properties.append(path)
        index += 3
        if index == len(tokens):
            break
        kind, word, at = tokens[index]
        if kind != "word" or word not in ("and", "or"):
            raise syntax_error(at)
        if word == "or":
            groups.append([])
        index += 1
    return _Filter(tuple(tuple(group) for group in groups), tuple(properties))


def _literal(kind: str, text: str, at: int, syntax_error: Any) -> tuple[Any, str]:
    if kind == "string":
        return text[1:-1].replace("''", "'"), _STRING
    if _DATE_LIKE.match(text):
        return _parse_datetime(text), _DATE
    if text in ("true", "false"):
        return text == "true", _BOOL
    if text == "null":
        return None, "null"
    if re.fullmatch(r"-?\d+", text):
        return int(text), "Edm.Int32"
    if _PROPERTY_PATH.fullmatch(text):  # OData reads a bare word as a property of the message
        type_ = _property_type(text)
        raise GraphError(
            400, "BadRequest", f"This test server does not implement comparing two properties ('{text}', {type_})."
        )
    raise syntax_error(at)


def _value(data: dict, path: str) -> Any:
    value: Any = data
    for segment in path.split("/"):
        value = value.get(segment) if isinstance(value, dict) else None
    return value


def _comparable(value: Any, type_: str) -> Any:
    if value is None:
        return None
    if type_ == _DATE:
        return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if type_ in _STRING_LIKE:
        return str(value).casefold()  # Exchange compares strings case-insensitively (addresses, subjects)
    return value


def _compare(data: dict, clause: _Clause) -> bool:
    left = _comparable(_value(data, clause.path), clause.type)
    right = _comparable(clause.value, clause.type)
    if left is None or right is None:
        same = left is None and right is None
        return same if clause.op in ("eq", "ge", "le") else (not same if clause.op == "ne" else False)
    if clause.op == "eq":
        return left == right
    if clause.op == "ne":
        return left != right
    if clause.op == "gt":
        return left > right
    if clause.op == "ge":
        return left >= right
    if clause.op == "lt":
        return left < right
    return left <= right


def _parse_orderby(raw: str) -> list[tuple[str, bool]]:
    """``prop [asc|desc], ...`` as [(path, descending)]."""
    keys = []
    for part in raw.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise GraphError(400, "BadRequest", f"Syntax error in $orderby '{raw}'.")
        if _property_type(words[0]) not in _COMPARABLE:
            raise GraphError(400, "BadRequest", f"This test server does not implement ordering by '{words[0]}'.")
        keys.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    return keys


def _sorted(messages: list[_Message], orderby: list[tuple[str, bool]] | None) -> list[_Message]:
    """In $orderby order, ties by id; without $orderby receivedDateTime desc then id (deterministic paging)."""
    keys = orderby or [("receivedDateTime", True)]
    ordered = sorted(messages, key=lambda m: m.data["id"])
    for path, descending in reversed(keys):
        type_ = _property_type(path)

        def key(message: _Message, path: str = path, type_: str = type_) -> tuple:
            value = _comparable(_value(message.data, path), type_)
            return (value is not None, value if value is not None else 0)

        ordered.sort(key=key, reverse=descending)
    return ordered


def _encode_token(state: dict) -> str:
    """Delta tokens are opaque to clients (facts §3): here base64url of the server state they resume."""
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_token(token: str) -> dict:
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(state, dict) or "epoch" not in state or "params" not in state:
            raise ValueError("not a token of this server")
        return state
    except ValueError:  # binascii.Error and JSONDecodeError are ValueErrors
        # What Graph answers for a mangled token is unconfirmed; a 400 makes the client bug visible.
        raise GraphError(400, "BadRequest", "The delta or skip token is malformed.") from None


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    ssl_context: ssl.SSLContext
    app: GraphServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up, refused our certificate or idled out is the client's business; anything else
        # is a bug in this server, kept for server.errors.
        if isinstance(sys.exc_info()[1], OSError):
            return
        with self.app._lock:
            self.app._errors.append(traceback.format_exc())


class _Handler(QuietHandler):
    server_version = "atom-graph-test"
    timeout = 60  # an idle keep-alive connection (or a stalled TLS handshake) frees its thread after this
    server: _TLSServer

    def setup(self) -> None:
        # The TLS handshake runs here, in the connection's own thread, not in the accept loop.
        self.request.settimeout(self.timeout)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = self.server.ssl_context.wrap_socket(self.request, server_side=True)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.connection.close()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        raw_path, _, query = self.path.partition("?")
        request = _Request(method, raw_path, query, self.headers, body)
        app = self.server.app
        try:
            reply = app._handle(request)
        except Exception:  # noqa: BLE001 - a bug in this server: recorded in server.errors and answered 500,
            # never a dropped connection that the client would retry as a network error
            reply = app._record_bug()
        try:
            if reply.delay_s:
                time.sleep(reply.delay_s)
            app._record(request, reply)
            # ensure_ascii: a lone surrogate (text Graph cut inside a UTF-16 pair) goes out as the \u escape Graph
            # sends, the only way JSON can carry it.
            payload = (
                json.dumps(reply.body, separators=(",", ":"), ensure_ascii=True).encode()
                if reply.body is not None
                else b""
            )
            self.send_response(reply.status)
            content_type = (
                "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
                if raw_path.startswith("/v1.0")
                else "application/json; charset=utf-8"
            )
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            app._release(reply)
            self.end_headers()
            if reply.reset:
                self.wfile.write(payload[: len(payload) // 2])
                # SO_LINGER 0: close() sends a TCP RST at once, with no TLS close_notify: an abrupt cut.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
            else:
                self.wfile.write(payload)
        finally:
            app._release(reply)
