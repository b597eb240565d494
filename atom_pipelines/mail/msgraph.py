"""Microsoft Graph as the mail source: client-credentials tokens from MSAL, pages from ``requests``.

One ``GraphMailSource`` resource instance owns one ``msal.ConfidentialClientApplication`` (so its token
cache is used across every request of a run or sensor tick) and one ``requests.Session`` with explicit
timeouts and urllib3 retries on 429/503/504 that honour ``Retry-After``. Every request passes the
per-mailbox gate (``gate.py``) that keeps Graph's 4-concurrent-requests-per-mailbox limit across processes.

Failure is loud and specific: a Graph error carries Graph's ``code``, ``message`` and ``request-id``; a token
error carries MSAL's ``error``, ``error_description`` and ``correlation_id``; nothing carries the secret or
the bearer token. A window whose listing fails on any page raises, so a partition never stores a listing
with a page missing. A 200 page that is not the page Graph documents (a collection without its ``value``
list: a proxy's or gateway's answer, a truncated rewrite) is such a failure too, ``GraphPageShapeError`` with
the URL, both request ids and the keys the body did have: read as empty it would be an empty day, or a
mailbox with no history.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import msal
import requests
from pydantic import Field, PrivateAttr, ValidationError
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from atom_pipelines import config
from atom_pipelines.mail.gate import FileGate, PostgresGate, gate_for
from atom_pipelines.mail.models import GraphMessage, printable, utc_day, validation_problems
from atom_pipelines.mail.odata import (
    DELTA_FIELDS,
    MESSAGE_FIELDS,
    received_on_or_after_filter,
    received_window_filter,
    select,
)
from atom_pipelines.mail.source import (
    RAW_EXCERPT_CHARS,
    MailSource,
    RejectedRecord,
    SourcedMessage,
    WindowBatch,
    normalize_mailbox,
)
from atom_pipelines.partitions import MailboxWindow, contiguous_spans

log = logging.getLogger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_API_URL = "https://graph.microsoft.com/v1.0"
#: Graph's own limit on concurrent requests per app and mailbox.
GRAPH_MAILBOX_CONCURRENCY = 4
PREFER_TEXT_BODY = 'outlook.body-content-type="text"'
#: A page whose body was cut off mid-transfer (connection reset) is asked for again this many times.
#: urllib3's Retry covers failures before the response; a body that dies half way is past its reach.
TRUNCATED_PAGE_RETRIES = 3


class GraphError(RuntimeError):
    """Graph or the identity platform refused or failed a request; the message says which and why."""


class GraphAuthError(GraphError):
    """No token: MSAL's error, description and correlation id (never the client secret)."""


class GraphRequestError(GraphError):
    """A Graph request ended in an error status, after every retry it was due."""

    def __init__(self, request_name: str, status: int, code: str, message: str, request_id: str | None) -> None:
        self.status, self.code, self.graph_message, self.request_id = status, code, message, request_id
        super().__init__(f"{request_name}: HTTP {status} {code}: {message} (request-id {request_id or 'none'})")


class GraphPageShapeError(GraphRequestError):
    """A 200 answer that is not what Graph documents for the request: a collection page without a ``value``
    list, a link that is not a string, a folder without an id. Never read as "nothing there"."""

    def __init__(self, request_name: str, response: requests.Response, problem: str) -> None:
        self.url = response.url
        # Graph echoes the client-request-id it was sent; a proxy in between may not, and ours is still ours.
        self.client_request_id = response.headers.get("client-request-id") or response.request.headers.get(
            "client-request-id"
        )
        parts = urlsplit(response.url)
        where = parts.path + (f"?{parts.query}" if parts.query else "")
        super().__init__(
            request_name,
            response.status_code,
            "UnexpectedShape",
            f"{problem}; GET {where[:300]}, client-request-id {self.client_request_id or 'none'}",
            response.headers.get("request-id"),
        )


class DeltaTokenExpiredError(GraphError):
    """Graph no longer knows the delta token (410 Gone / ``syncStateNotFound``): a full resync is due."""


@dataclass
class WindowListing:
    """Everything Graph listed for one contiguous span of days, with how the listing went."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> the last version listed
    # Pages listed, one request each when nothing fails; Graph may have been asked more often (urllib3's retries
    # on 429/503/504, a page asked again after a cut-off transfer), which no counter here claims to count.
    pages: int = 0
    repeated_ids: list[str] = field(default_factory=list)  # listed on more than one page
    reported_count: int | None = None  # Graph's @odata.count, when it gives one
    # id -> "page N, request-id R" of the page that listed its last version: how a quarantined item is found again
    listed_on: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeltaChange:
    message_id: str
    removed: bool
    received_day: dt.date | None = None
    change_key: str | None = None


@dataclass
class DeltaRound:
    changes: list[DeltaChange]
    delta_link: str
    pages: int


def _utc_bounds(days: tuple[dt.date, ...]) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(days[0], dt.time(), tzinfo=dt.timezone.utc)
    return start, dt.datetime.combine(days[-1], dt.time(), tzinfo=dt.timezone.utc) + dt.timedelta(days=1)


class GraphClient:
    """Tokens and requests for one tenant. Built once per resource instance (one MSAL token cache)."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        authority_host: str,
        api_url: str,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_retries: int,
        gate: PostgresGate | FileGate,
    ) -> None:
        self.tenant_id = tenant_id
        self.api_url = api_url.rstrip("/")
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.gate = gate
        self.session = requests.Session()
        retry = Retry(
            total=max_retries,
            connect=max_retries,
            read=max_retries,
            status=max_retries,
            status_forcelist=(429, 503, 504),
            allowed_methods=frozenset({"GET"}),  # MSAL handles its own token POST's 429/5xx
            backoff_factor=0.5,  # when Graph sends no Retry-After: 0.5, 1, 2, 4 ... s (capped at 60)
            backoff_max=60,
            respect_retry_after_header=True,
            raise_on_status=False,  # hand back the last answer, so the error names Graph's code
        )
        self.session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=GRAPH_MAILBOX_CONCURRENCY))
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        try:
            self.app = msal.ConfidentialClientApplication(
                client_id,
                client_credential=client_secret,
                authority=authority,
                # Instance discovery asks login.microsoftonline.com about the authority; a sovereign cloud
                # or a test authority is not in its list.
                instance_discovery=authority_host.rstrip("/") == DEFAULT_AUTHORITY_HOST,
                http_client=self.session,
                timeout=self.timeout,
            )
        except (ValueError, requests.RequestException, msal.exceptions.MsalServiceError) as exc:
            raise GraphAuthError(f"cannot reach the identity platform at {authority}: {exc}") from exc
        self.token_requests = 0

    # -- tokens ----------------------------------------------------------------------------------------

    def token(self) -> str:
        try:
            result = self.app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
        except (requests.RequestException, msal.exceptions.MsalServiceError, json.JSONDecodeError) as exc:
            raise GraphAuthError(f"token request for tenant {self.tenant_id} failed: {exc}") from exc
        if "access_token" not in result:
            raise GraphAuthError(
                f"token request for tenant {self.tenant_id} refused: {result.get('error')}: "
                f"{result.get('error_description')} (correlation_id {result.get('correlation_id')})"
            )
        if result.get("token_source") == "identity_provider":
            self.token_requests += 1
        return result["access_token"]

    def drop_cached_tokens(self) -> None:
        """Forget this app's cached access tokens, so the next ``token()`` asks the identity platform (MSAL
        refuses ``force_refresh`` for client credentials)."""
        self.app.remove_tokens_for_client()

    # -- requests ----------------------------------------------------------------------------------------

    def get(
        self,
        url: str,
        mailbox: str,
        request_name: str,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[dict[str, Any], requests.Response]:
        """One GET with retries, a fresh token once on 401, the mailbox's gate held; the JSON body."""
        refreshed = False
        truncated = 0
        while True:
            request_headers = {
                "Authorization": f"Bearer {self.token()}",
                "client-request-id": str(uuid.uuid4()),
                "Accept": "application/json",
                **(headers or {}),
            }
            try:
                with self.gate.slot(mailbox):
                    response = self.session.get(url, params=params, headers=request_headers, timeout=self.timeout)
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
                truncated += 1
                if truncated > TRUNCATED_PAGE_RETRIES:
                    raise GraphError(f"{request_name}: the page was cut off {truncated} times: {exc}") from exc
                log.warning("%s: page cut off mid-transfer (%s), asking again", request_name, type(exc).__name__)
                continue
            except requests.exceptions.RetryError as exc:
                raise GraphError(f"{request_name}: retries exhausted: {exc}") from exc
            except requests.RequestException as exc:
                raise GraphError(f"{request_name}: {type(exc).__name__}: {exc}") from exc
            if response.status_code == 401 and not refreshed and _error_code(response) == "InvalidAuthenticationToken":
                log.info("%s: token rejected as expired, asking for a fresh one", request_name)
                self.drop_cached_tokens()
                refreshed = True
                continue
            if response.status_code >= 400:
                raise _request_error(request_name, response)
            try:
                return response.json(), response
            except requests.JSONDecodeError as exc:
                raise GraphRequestError(
                    request_name,
                    response.status_code,
                    "UnparsableResponse",
                    f"body is not JSON: {exc}",
                    response.headers.get("request-id"),
                ) from exc

    def list_span(
        self, mailbox: str, days: tuple[dt.date, ...], page_size: int, use_select: bool, text_bodies: bool
    ) -> WindowListing:
        """Every message received in the span's days, every ``@odata.nextLink`` followed whole."""
        start, end = _utc_bounds(days)
        params = {
            "$filter": received_window_filter(start, end),
            "$orderby": "receivedDateTime asc",
            "$top": str(page_size),
            "$count": "true",
        }
        if use_select:
            params["$select"] = select(MESSAGE_FIELDS)
        headers = {"Prefer": PREFER_TEXT_BODY} if text_bodies else {}
        url: str | None = f"{self.api_url}/users/{quote(mailbox)}/messages"
        listing = WindowListing()
        request_name = f"listing {mailbox} {days[0]}..{days[-1]}"
        while url:
            page_name = f"{request_name} page {listing.pages + 1}"
            page, response = self.get(url, mailbox, page_name, params, headers)
            values = _collection_page(page, response, page_name)
            params = None  # a nextLink carries every query option already
            listing.pages += 1
            listed_on = f"page {listing.pages}, request-id {response.headers.get('request-id') or 'none'}"
            if listing.reported_count is None and isinstance(page.get("@odata.count"), int):
                listing.reported_count = page["@odata.count"]
            for item in values:
                item_id = item.get("id") if isinstance(item, dict) else None
                if not isinstance(item_id, str):
                    # Kept: validation turns it into a quarantined record named by its page.
                    item_id = f"<no id: page {listing.pages} #{len(listing.items)}>"
                elif item_id in listing.items:
                    listing.repeated_ids.append(item_id)
                listing.items[item_id] = item
                listing.listed_on[item_id] = listed_on
            url = page.get("@odata.nextLink")
        return listing

    def folder_id(self, mailbox: str, folder: str) -> str:
        """The id of a folder named by its well-known name (``inbox``) or id, as messages' parentFolderId says it."""
        url = f"{self.api_url}/users/{quote(mailbox)}/mailFolders/{quote(folder)}"
        request_name = f"folder {mailbox}/{folder}"
        page, response = self.get(url, mailbox, request_name, {"$select": "id"})
        if not isinstance(page, dict) or not isinstance(page.get("id"), str):
            raise GraphPageShapeError(request_name, response, f"the folder has no id ({_shape(page)})")
        return page["id"]

    def oldest_day(self, mailbox: str, not_before: dt.date) -> dt.date | None:
        """The UTC day of the oldest message received on or after ``not_before`` (one request, one item)."""
        start = dt.datetime.combine(not_before, dt.time(), tzinfo=dt.timezone.utc)
        params = {
            "$filter": received_on_or_after_filter(start),
            "$orderby": "receivedDateTime asc",
            "$top": "1",
            "$select": "id,receivedDateTime",
        }
        request_name = f"oldest message of {mailbox}"
        page, response = self.get(f"{self.api_url}/users/{quote(mailbox)}/messages", mailbox, request_name, params)
        # Only a page with an empty "value" says the mailbox has nothing: without one, the registration sensor
        # would take a mailbox whose probe failed for a mailbox with no history, and never sync it.
        values = _collection_page(page, response, request_name)
        if not values:
            return None
        request_id = response.headers.get("request-id")
        change = _delta_change(values[0], request_name, request_id)  # the same reading as a delta item's
        if change.received_day is None:
            raise GraphRequestError(
                request_name, 200, "UnexpectedShape", f"no readable receivedDateTime: {values[0]!r:.200}", request_id
            )
        return change.received_day

    def delta_round(self, mailbox: str, folder: str, delta_link: str | None, page_size: int) -> DeltaRound:
        """One delta round of a folder: from ``delta_link``, or an initial round listing the whole folder."""
        request_name = f"delta {mailbox}/{folder}"
        if delta_link:
            url, params = delta_link, None
        else:
            url = f"{self.api_url}/users/{quote(mailbox)}/mailFolders/{quote(folder)}/messages/delta"
            params = {"$select": select(DELTA_FIELDS)}
        headers = {"Prefer": f"odata.maxpagesize={page_size}"}
        changes: list[DeltaChange] = []
        pages = 0
        while True:
            page_name = f"{request_name} page {pages + 1}"
            try:
                page, response = self.get(url, mailbox, page_name, params, headers)
            except GraphRequestError as exc:
                if exc.status == 410 or exc.code.lower() in ("syncstatenotfound", "syncstateinvalid"):
                    raise DeltaTokenExpiredError(f"{request_name}: delta token expired ({exc})") from exc
                raise
            # A delta page without "value" read as no changes would store its deltaLink over changes never seen.
            values = _collection_page(page, response, page_name)
            params = None
            pages += 1
            for item in values:
                changes.append(_delta_change(item, page_name, response.headers.get("request-id")))
            if page.get("@odata.nextLink"):
                url = page["@odata.nextLink"]
                continue
            if page.get("@odata.deltaLink"):
                return DeltaRound(changes=changes, delta_link=page["@odata.deltaLink"], pages=pages)
            raise GraphPageShapeError(
                page_name, response, f"the page has neither nextLink nor deltaLink ({_shape(page)})"
            )


def _shape(body: object) -> str:
    """What a body was, for an error about its shape: the keys of an object (escaped, at most 20), else its type."""
    if isinstance(body, dict):
        keys = sorted(body, key=str)
        listed = ", ".join(repr(key) for key in keys[:20]) + (f" and {len(keys) - 20} more" if len(keys) > 20 else "")
        return f"its keys: {listed}" if keys else "an empty object"
    return f"a JSON {type(body).__name__}, not an object"


def _collection_page(page: object, response: requests.Response, request_name: str) -> list[Any]:
    """The items of a 200 collection page (a listing, a delta round), or a GraphPageShapeError: a page without a
    ``value`` list, or whose links are not strings, is not an empty page."""
    if not isinstance(page, dict) or not isinstance(page.get("value"), list):
        has = "'value' is not a list" if isinstance(page, dict) and "value" in page else "no 'value' list"
        raise GraphPageShapeError(request_name, response, f"collection page with {has} ({_shape(page)})")
    for link in ("@odata.nextLink", "@odata.deltaLink"):
        if link in page and not isinstance(page[link], str):
            raise GraphPageShapeError(
                request_name, response, f"{link} is a {type(page[link]).__name__}, not a URL ({_shape(page)})"
            )
    return page["value"]


def _delta_change(item: dict[str, Any], request_name: str, request_id: str | None = None) -> DeltaChange:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise GraphRequestError(
            request_name, 200, "UnexpectedShape", f"delta item without an id: {item!r:.200}", request_id
        )
    if "@removed" in item:
        return DeltaChange(message_id=item["id"], removed=True)
    received = item.get("receivedDateTime")
    day = None
    if received is not None:
        try:
            day = utc_day(received)
        except ValidationError as exc:  # unreadable, or without an offset: which day it is cannot be told
            raise GraphRequestError(
                request_name,
                200,
                "UnexpectedShape",
                f"unreadable receivedDateTime {received!r} of item {printable(item['id'])} "
                f"({validation_problems(exc, 'receivedDateTime')})",
                request_id,
            ) from exc
    return DeltaChange(message_id=item["id"], removed=False, received_day=day, change_key=item.get("changeKey"))


def _error_code(response: requests.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def _request_error(request_name: str, response: requests.Response) -> GraphRequestError:
    code, message = f"HTTP{response.status_code}", response.text[:300]
    try:
        error = response.json()["error"]
        code, message = str(error.get("code")), str(error.get("message"))
        request_id = (error.get("innerError") or {}).get("request-id")
    except (ValueError, KeyError, TypeError, AttributeError):
        request_id = None
    if response.status_code in (429, 503, 504):
        request_name = f"{request_name}: retries exhausted"
    return GraphRequestError(
        request_name, response.status_code, code, message, response.headers.get("request-id") or request_id
    )


class GraphMailSource(MailSource):
    """Mailboxes in a Microsoft 365 tenant, read with application permission ``Mail.Read``.

    Chosen by ``resources.py`` when ``ATOM_GRAPH_TENANT_ID``, ``ATOM_GRAPH_CLIENT_ID`` and
    ``ATOM_GRAPH_CLIENT_SECRET`` are set (each through ``EnvVar``). ``authority_host`` and ``api_url`` point it
    at any Graph-compatible server; TLS is always verified (the system store, or ``REQUESTS_CA_BUNDLE``).
    """

    tenant_id: str = Field(description="Entra ID tenant (ATOM_GRAPH_TENANT_ID).")
    client_id: str = Field(description="Application (client) id (ATOM_GRAPH_CLIENT_ID).")
    client_secret: str = Field(description="Client secret (ATOM_GRAPH_CLIENT_SECRET); pass as EnvVar.")
    authority_host: str = Field(default=DEFAULT_AUTHORITY_HOST, description="ATOM_GRAPH_AUTHORITY_HOST")
    api_url: str = Field(default=DEFAULT_API_URL, description="ATOM_GRAPH_API_URL")
    mailboxes: str = Field(default="", description="Comma-separated mailboxes to sync (ATOM_GRAPH_MAILBOXES).")
    page_size: int = Field(default=250, ge=1, le=1000, description="$top per page (ATOM_GRAPH_PAGE_SIZE).")
    use_select: bool = Field(default=True, description="$select only the stored fields (benchmarks turn it off).")
    text_bodies: bool = Field(
        default=True, description='Ask for text bodies (Prefer: outlook.body-content-type="text").'
    )
    delta_folders: str = Field(
        default="inbox,sentitems", description="Folders whose delta the sensor follows (ATOM_GRAPH_DELTA_FOLDERS)."
    )
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    max_retries: int = Field(default=8, description="Retries per request on 429/503/504 and connection errors.")
    # No default, as for MailStore: the code location passes the store's database (resources.py).
    gate_database_url: str = Field(
        description="Database holding the per-mailbox request gate (advisory locks on PostgreSQL, else lock files).",
    )
    gate_wait_timeout_s: float = 600.0

    _client: GraphClient | None = PrivateAttr(default=None)

    @property
    def client(self) -> GraphClient:
        if self._client is None:
            gate = gate_for(
                self.gate_database_url,
                config.load_settings().dagster_home / "graph_gate",
                GRAPH_MAILBOX_CONCURRENCY,
                self.gate_wait_timeout_s,
            )
            self._client = GraphClient(
                tenant_id=self.tenant_id,
                client_id=self.client_id,
                client_secret=self.client_secret,
                authority_host=self.authority_host,
                api_url=self.api_url,
                connect_timeout_s=self.connect_timeout_s,
                read_timeout_s=self.read_timeout_s,
                max_retries=self.max_retries,
                gate=gate,
            )
        return self._client

    def list_mailboxes(self) -> list[str]:
        return sorted({normalize_mailbox(m) for m in self.mailboxes.split(",") if m.strip()})

    @property
    def follows_delta(self) -> bool:
        return True

    def folders(self) -> list[str]:
        return [f.strip() for f in self.delta_folders.split(",") if f.strip()]

    def fetch_window(self, window: MailboxWindow) -> WindowBatch:
        batch = WindowBatch(window=window)
        stats = {"pages": 0, "repeated_items": 0, "listed_items": 0}
        for span in contiguous_spans(window.days):
            listing = self.client.list_span(window.mailbox, span, self.page_size, self.use_select, self.text_bodies)
            stats["pages"] += listing.pages
            stats["repeated_items"] += len(listing.repeated_ids)
            stats["listed_items"] += len(listing.items)
            self._distribute(window.mailbox, span, listing, batch)
        batch.stats = stats
        return batch

    def _distribute(self, mailbox: str, span: tuple[dt.date, ...], listing: WindowListing, batch: WindowBatch) -> None:
        for day in span:
            batch.messages_by_day.setdefault(day, [])
            batch.rejected_by_day.setdefault(day, [])
        # Where a message was read; the same whichever window listed it, so re-runs store identical rows.
        origin = f"graph:/users/{mailbox}/messages"
        for item_id, item in listing.items.items():
            try:
                message = GraphMessage.model_validate(item)
            except ValidationError as exc:
                problems = validation_problems(exc)
                # ensure_ascii: a lone surrogate Graph sent stays the escape it came as, storable and findable.
                excerpt = json.dumps(item, ensure_ascii=True)[:RAW_EXCERPT_CHARS]
                for day in span:  # an unreadable item may belong to any day of the span: nothing hides
                    batch.rejected_by_day[day].append(
                        RejectedRecord(
                            f"{origin} {span[0]}..{span[-1]} id {printable(item_id)}",
                            f"invalid message: {problems} (Graph {listing.listed_on[item_id]})",
                            excerpt,
                            mailbox,
                            day,
                        )
                    )
                continue
            day = message.received_day
            if day not in batch.messages_by_day:
                raise GraphError(
                    f"{origin} {span[0]}..{span[-1]}: Graph listed message {item_id} received {message.received_utc.isoformat()}, outside "
                    "the filtered window (the filter was not applied?)"
                )
            batch.messages_by_day[day].append(SourcedMessage(mailbox=mailbox, message=message, origin=origin))
        for day in span:
            batch.listed_by_day[day] = len(batch.messages_by_day[day])
        stored_total = len(listing.items)
        if listing.reported_count is not None and listing.reported_count != stored_total:
            problem = (
                f"Graph reported {listing.reported_count} messages for {span[0]}..{span[-1]} but its pages held "
                f"{stored_total} distinct ones ({listing.pages} pages)"
            )
            for day in span:
                batch.incomplete_by_day[day] = problem

    def history_span(self, mailbox: str, not_before: dt.date) -> tuple[dt.date, dt.date | None] | None:
        first = self.client.oldest_day(mailbox, not_before)
        return None if first is None else (first, None)  # a live mailbox: up to yesterday

    def folder_id(self, mailbox: str, folder: str) -> str:
        return self.client.folder_id(mailbox, folder)

    def delta_round(self, mailbox: str, folder: str, delta_link: str | None) -> DeltaRound:
        return self.client.delta_round(mailbox, folder, delta_link, self.page_size)
