"""The Graph test server answers as Microsoft Graph and Entra ID answer (docs/reference/graph_api_facts.md), so
the sync client written against it (atom_pipelines/mail/msgraph.py) is tested against the real protocol, not against
our own guess of it.

Driven through the real ``msal`` and ``requests`` over real TLS: the client-credentials flow and MSAL's token
cache; the exact 400 bodies for a quoted or offset-less date (the production bug class this exists for); that
an unquoted filter returns exactly the messages of its window; the InefficientFilter ordering rules; $select,
$top, $count, the default page of 10 and nextLink paging that yields every message once; HTML bodies by
default and text on ``Prefer``; every scripted fault as the client sees it; delta rounds with creations,
updates, deletions, moves and 410 expiry; the per-mailbox concurrency limit; unknown users and folders.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import msal
import pytest
import requests

from atom_pipelines.mail.cleaning import body_text
from atom_pipelines.mail.models import ItemBody
from atom_pipelines_tests.conftest import corpus_records
from atom_pipelines_tests.servers.graph_server import (
    DATETIME_FORMAT,
    FAULT_KINDS,
    INCOMPATIBLE_TYPES,
    THROTTLED_BODY,
    Fault,
    GraphServer,
)

SCOPE = "https://graph.microsoft.com/.default"
KAY = "kay.mann@enron.com"  # 334 messages
SANDERS = "richard.sanders@enron.com"  # 92
KEAN = "steven.kean@enron.com"  # 85
MAILBOXES = {KAY, SANDERS, KEAN}
QUOTED_DATE = re.compile(r"'\d{4}-\d{2}-\d{2}")


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return corpus_records(mailboxes=MAILBOXES)


@pytest.fixture
def server(records: list[dict]) -> Iterator[GraphServer]:
    with GraphServer(records) as running:
        yield running
        assert running.errors == []


def received(record: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(record["receivedDateTime"])


def ids_of(records: list[dict], mailbox: str) -> set[str]:
    return {r["id"] for r in records if r["mailbox"] == mailbox}


def signed_in(server: GraphServer) -> requests.Session:
    """A session carrying a token from the real MSAL client-credentials flow."""
    session = server.session()
    app = server.confidential_client(session)
    result = app.acquire_token_for_client(scopes=[SCOPE])
    session.headers["Authorization"] = f"Bearer {result['access_token']}"
    return session


def collect(session: requests.Session, url: str, **kwargs) -> tuple[list[dict], list[dict]]:
    """Follow @odata.nextLink whole (facts §2): (every item, every page)."""
    items, pages = [], []
    response = session.get(url, **kwargs)
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        items.extend(page["value"])
        if "@odata.nextLink" not in page:
            return items, pages
        response = session.get(page["@odata.nextLink"], headers=kwargs.get("headers"))


def messages_url(server: GraphServer, mailbox: str) -> str:
    return f"{server.api_url}/users/{mailbox}/messages"


def assert_envelope(response: requests.Response, status: int, code: str, message: str) -> None:
    """Graph's error envelope, innerError tied to the response's request-id header."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body == {"error": {"code": code, "message": message, "innerError": body["error"]["innerError"]}}
    inner = body["error"]["innerError"]
    assert set(inner) == {"date", "request-id", "client-request-id"}
    assert inner["request-id"] == response.headers["request-id"]
    dt.datetime.strptime(inner["date"], "%Y-%m-%dT%H:%M:%S")


# -- identity ----------------------------------------------------------------------------------------


def test_msal_gets_a_token_and_then_serves_it_from_its_cache(server: GraphServer) -> None:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify (facts §6)
    session.verify = str(server.ca_bundle_path)
    app = msal.ConfidentialClientApplication(
        server.client_id,
        client_credential=server.client_secret,
        authority=f"{server.authority_host}/{server.tenant_id}",
        instance_discovery=False,
        http_client=session,
    )
    first = app.acquire_token_for_client(scopes=[SCOPE])
    second = app.acquire_token_for_client(scopes=[SCOPE])

    assert first["token_source"] == "identity_provider" and first["token_type"] == "Bearer"
    assert first["expires_in"] == 3599
    assert second["token_source"] == "cache" and second["access_token"] == first["access_token"]
    assert server.token_requests == 1
    assert [(r.method, r.path) for r in server.request_log] == [
        ("GET", f"/{server.tenant_id}/v2.0/.well-known/openid-configuration"),
        ("POST", f"/{server.tenant_id}/oauth2/v2.0/token"),
    ]
    response = session.get(messages_url(server, KAY), headers={"Authorization": f"Bearer {first['access_token']}"})
    assert response.status_code == 200 and server.graph_requests == 1
    # Real TLS with the test CA only: a client that trusts the system CAs refuses the certificate.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(messages_url(server, KAY), verify=True, timeout=5)


def test_entra_answers_a_wrong_secret_scope_or_tenant_with_its_real_error_bodies(server: GraphServer) -> None:
    result = server.confidential_client(client_secret="not-the-secret").acquire_token_for_client(scopes=[SCOPE])
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided. ")
    assert result["error_codes"] == [7000215]
    assert result["error_uri"] == "https://login.microsoftonline.com/error?code=7000215"
    assert {"timestamp", "trace_id", "correlation_id"} <= result.keys()
    assert [r.status for r in server.request_log if r.method == "POST"] == [401]

    session = server.session()
    token_url = f"{server.authority}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": server.client_id, "client_secret": server.client_secret}
    wrong_scope = session.post(token_url, data={**form, "scope": "Mail.Read"})
    assert wrong_scope.status_code == 400 and wrong_scope.json()["error"] == "invalid_scope"
    right_scope = session.post(token_url, data={**form, "scope": SCOPE})
    assert right_scope.status_code == 200 and right_scope.json()["access_token"]
    unknown = session.get(f"{server.authority_host}/no-such-tenant/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [90002]
    assert unknown.json()["error_description"].startswith("AADSTS90002: Tenant 'no-such-tenant' not found.")
    assert server.token_requests == 3


def test_expired_missing_and_unknown_tokens_get_401_until_a_new_token_is_fetched(server: GraphServer) -> None:
    session = server.session()
    app = server.confidential_client(session)
    token = app.acquire_token_for_client(scopes=[SCOPE])["access_token"]
    url = messages_url(server, KAY)
    assert session.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200

    server.expire_tokens()
    expired = session.get(url, headers={"Authorization": f"Bearer {token}", "client-request-id": "cid-1"})
    assert_envelope(expired, 401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
    assert expired.headers["client-request-id"] == "cid-1"
    assert expired.json()["error"]["innerError"]["client-request-id"] == "cid-1"
    for headers in ({}, {"Authorization": "Bearer made-up"}):
        assert_envelope(
            session.get(url, headers=headers),
            401,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        )

    # MSAL still holds the expired token; the client has to drop it to get a new one.
    assert app.acquire_token_for_client(scopes=[SCOPE])["access_token"] == token
    app.remove_tokens_for_client()
    fresh = app.acquire_token_for_client(scopes=[SCOPE])
    assert fresh["token_source"] == "identity_provider" and fresh["access_token"] != token
    assert session.get(url, headers={"Authorization": f"Bearer {fresh['access_token']}"}).status_code == 200


# -- $filter -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op, kind",
    [
        ("ge", "GreaterThanOrEqual"),
        ("gt", "GreaterThan"),
        ("le", "LessThanOrEqual"),
        ("lt", "LessThan"),
        ("eq", "Equal"),
    ],
)
def test_a_quoted_date_is_the_exact_400(server: GraphServer, op: str, kind: str) -> None:
    response = signed_in(server).get(
        messages_url(server, KAY), params={"$filter": f"receivedDateTime {op} '2001-05-01T00:00:00Z'"}
    )
    assert_envelope(
        response, 400, "BadRequest", INCOMPATIBLE_TYPES.format(left="Edm.DateTimeOffset", right="Edm.String", kind=kind)
    )
    if op == "ge":  # the verbatim text from the facts file, not just our template
        assert response.json()["error"]["message"] == (
            "Invalid filter clause: A binary operator with incompatible types was detected. Found operand types "
            "'Edm.DateTimeOffset' and 'Edm.String' for operator kind 'GreaterThanOrEqual'."
        )
    logged = server.request_log[-1]
    assert "%27" in logged.query and QUOTED_DATE.search(logged.filter or "")  # raw as sent, decodable


@pytest.mark.parametrize(
    "raw_filter, literal",
    [
        ("receivedDateTime%20ge%202026-07-01T00:00:00", "2026-07-01T00:00:00"),  # no offset
        ("receivedDateTime+ge+2026-07-01T00:00:00+02:00", "2026-07-01T00:00:00"),  # '+' not encoded: a space
        ("receivedDateTime%20ge%202026-13-01T00:00:00Z", "2026-13-01T00:00:00Z"),  # month out of range
        ("receivedDateTime%20ge%202026-07-01", "2026-07-01"),  # a date alone
    ],
)
def test_an_offset_less_or_malformed_date_is_400(server: GraphServer, raw_filter: str, literal: str) -> None:
    response = signed_in(server).get(f"{messages_url(server, KAY)}?$filter={raw_filter}")
    assert_envelope(response, 400, "BadRequest", DATETIME_FORMAT.format(text=literal))
    if literal == "2026-07-01T00:00:00":
        assert response.json()["error"]["message"] == (
            "Invalid filter clause: The DateTimeOffset text '2026-07-01T00:00:00' should be in format "
            "'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is within valid range."
        )


@pytest.mark.parametrize(
    "bad",
    [
        "receivedDateTime ge",
        "receivedDateTime between 2001-01-01T00:00:00Z",
        "(receivedDateTime ge 2001-01-01T00:00:00Z)",
        "subject eq 'unterminated",
    ],
)
def test_an_unparseable_filter_is_400(server: GraphServer, bad: str) -> None:
    response = signed_in(server).get(messages_url(server, KAY), params={"$filter": bad})
    assert response.status_code == 400 and response.json()["error"]["code"] == "BadRequest"
    assert response.json()["error"]["message"].startswith("Invalid filter clause: Syntax error")


def test_an_unquoted_filter_returns_exactly_the_messages_of_its_window(
    server: GraphServer, records: list[dict]
) -> None:
    session = signed_in(server)
    mine = sorted((r for r in records if r["mailbox"] == KAY), key=received)
    start, end = received(mine[40]), received(mine[200])
    expected = {r["id"] for r in mine if start <= received(r) < end}
    assert 100 < len(expected) < len(mine)

    def window(lower: str, upper: str, op: str = "ge") -> set[str]:
        items, _ = collect(
            session,
            messages_url(server, KAY),
            params={"$filter": f"receivedDateTime {op} {lower} and receivedDateTime lt {upper}", "$top": "50"},
        )
        return {item["id"] for item in items}

    z = "%Y-%m-%dT%H:%M:%SZ"
    assert window(start.strftime(z), end.strftime(z)) == expected
    # The same instants with an offset (requests encodes '+' as %2B, facts §1) and fractional seconds.
    plus_two = dt.timezone(dt.timedelta(hours=2))
    lower = start.astimezone(plus_two).strftime("%Y-%m-%dT%H:%M:%S.0000000+02:00")
    assert window(lower, end.strftime("%Y-%m-%dT%H:%M:%S.5Z")) == expected | {
        r["id"] for r in mine if received(r) == end
    }
    assert "%2B02%3A00" in server.request_log[-1].query
    # gt excludes the boundary message itself.
    assert window(start.strftime(z), end.strftime(z), op="gt") == expected - {
        r["id"] for r in mine if received(r) == start
    }
    assert not any(QUOTED_DATE.search(r.filter or "") for r in server.request_log)


def test_string_literals_escape_quotes_and_compare_like_exchange(server: GraphServer) -> None:
    server.add_message(
        {
            "mailbox": KEAN,
            "id": "msg-lets-meet",
            "subject": "Let's meet",
            "receivedDateTime": "2001-06-01T10:00:00Z",
            "from": {"emailAddress": {"name": "Jeff", "address": "Jeff.Nobody@Example.com"}},
        }
    )
    session = signed_in(server)
    by_subject = session.get(messages_url(server, KEAN), params={"$filter": "subject eq 'let''s meet'"})
    assert [m["id"] for m in by_subject.json()["value"]] == ["msg-lets-meet"]
    by_sender = session.get(
        messages_url(server, KEAN),
        params={
            "$filter": "from/emailAddress/address eq 'jeff.nobody@example.com' and receivedDateTime ge "
            "2001-06-01T00:00:00Z"
        },
    )
    assert [m["id"] for m in by_sender.json()["value"]] == ["msg-lets-meet"]
    unknown = session.get(messages_url(server, KEAN), params={"$filter": "sender/emailAddress/adress eq 'x'"})
    assert_envelope(
        unknown, 400, "BadRequest", "Could not find a property named 'adress' on type 'microsoft.graph.emailAddress'."
    )
    wrong_type = session.get(messages_url(server, KEAN), params={"$filter": "subject eq 2001-06-01T00:00:00Z"})
    assert_envelope(
        wrong_type,
        400,
        "BadRequest",
        INCOMPATIBLE_TYPES.format(left="Edm.String", right="Edm.DateTimeOffset", kind="Equal"),
    )


# -- $orderby with $filter ---------------------------------------------------------------------------


def frequent_sender(records: list[dict], mailbox: str) -> str:
    senders = [r["from"]["emailAddress"]["address"] for r in records if r["mailbox"] == mailbox and r.get("from")]
    return max(set(senders), key=senders.count)


@pytest.mark.parametrize(
    "filter_, orderby",
    [
        ("from/emailAddress/address eq '{x}' and receivedDateTime ge 2000-01-01T00:00:00Z", "receivedDateTime desc"),
        ("receivedDateTime ge 2000-01-01T00:00:00Z", "subject"),
        ("receivedDateTime ge 2000-01-01T00:00:00Z and subject ne 'x'", "subject,receivedDateTime desc"),
    ],
    ids=["orderby-after-another-property", "orderby-not-in-filter", "orderby-in-another-order"],
)
def test_orderby_breaking_the_filter_rules_is_inefficient_filter(
    server: GraphServer, records: list[dict], filter_: str, orderby: str
) -> None:
    response = signed_in(server).get(
        messages_url(server, KAY),
        params={"$filter": filter_.format(x=frequent_sender(records, KAY)), "$orderby": orderby},
    )
    assert_envelope(
        response, 400, "InefficientFilter", "The restriction or sort order is too complex for this operation."
    )


def test_orderby_following_the_filter_rules_sorts(server: GraphServer, records: list[dict]) -> None:
    session = signed_in(server)
    sender = frequent_sender(records, KAY)
    items, _ = collect(
        session,
        messages_url(server, KAY),
        params={
            "$filter": f"receivedDateTime ge 2000-01-01T00:00:00Z and from/emailAddress/address eq '{sender}'",
            "$orderby": "receivedDateTime desc",
            "$top": "25",
        },
    )
    expected = [
        r
        for r in records
        if r["mailbox"] == KAY
        and r["from"]["emailAddress"]["address"] == sender
        and received(r) >= dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    ]
    assert len(items) == len(expected) > 10
    times = [item["receivedDateTime"] for item in items]
    assert times == sorted(times, reverse=True)
    ascending, _ = collect(session, messages_url(server, KEAN), params={"$orderby": "receivedDateTime", "$top": "40"})
    keys = [(m["receivedDateTime"], m["id"]) for m in ascending]
    assert keys == sorted(keys) and len(keys) == len(ids_of(records, KEAN))


# -- $select, $top, $skip, $count, paging --------------------------------------------------------------


def test_the_default_page_is_ten_newest_first_with_a_full_next_link(server: GraphServer, records: list[dict]) -> None:
    response = signed_in(server).get(messages_url(server, KAY))
    page = response.json()
    newest = sorted((r for r in records if r["mailbox"] == KAY), key=lambda r: r["id"])
    newest.sort(key=received, reverse=True)
    assert [m["id"] for m in page["value"]] == [r["id"] for r in newest[:10]]
    assert page["@odata.nextLink"] == f"{messages_url(server, KAY)}?%24skip=10"
    assert page["@odata.context"] == f"https://graph.microsoft.com/v1.0/$metadata#users('{KAY}')/messages"
    assert "@odata.count" not in page and "Preference-Applied" not in response.headers
    served = page["value"][0]
    assert "mailbox" not in served and "folder" not in served
    assert served["@odata.etag"] == f'W/"{served["changeKey"]}"'
    assert served["parentFolderId"] and served["lastModifiedDateTime"] and served["sender"] == served["from"]
    assert [m["id"] for m in server.messages(KAY)[:10]] == [m["id"] for m in page["value"]]


def test_select_top_skip_count_and_paging_yield_every_message_exactly_once(
    server: GraphServer, records: list[dict]
) -> None:
    session = signed_in(server)
    url = messages_url(server, KAY)
    items, pages = collect(session, url, params={"$select": "subject,from", "$top": "7", "$count": "true"})
    expected = ids_of(records, KAY)
    assert len(items) == len(expected) and {m["id"] for m in items} == expected
    assert len(pages) == math.ceil(len(expected) / 7)
    assert all(page["@odata.count"] == len(expected) for page in pages)
    assert all(set(m) == {"@odata.etag", "id", "subject", "from"} for m in items)
    assert pages[0]["@odata.context"].endswith(f"users('{KAY}')/messages(subject,from)")
    followed = [r for r in server.request_log if "%24skip=" in r.query]
    assert len(followed) == len(pages) - 1
    assert all(parse_qs(r.query)["$top"] == ["7"] and parse_qs(r.query)["$count"] == ["true"] for r in followed)
    assert all(urlsplit(p["@odata.nextLink"]).path == urlsplit(url).path for p in pages[:-1])

    skipped = session.get(url, params={"$skip": "5", "$top": "3"}).json()
    assert [m["id"] for m in skipped["value"]] == [m["id"] for m in server.messages(KAY)[5:8]]
    assert session.get(url, params={"$top": "1000"}).status_code == 200

    for top in ("0", "1001", "ten"):
        response = session.get(url, params={"$top": top})
        assert response.status_code == 400 and response.json()["error"]["code"] == "BadRequest"
    bogus = session.get(url, params={"$select": "subject,mailbox"})
    assert_envelope(
        bogus, 400, "BadRequest", "Could not find a property named 'mailbox' on type 'microsoft.graph.message'."
    )


# -- bodies ------------------------------------------------------------------------------------------


def comparable(text: str) -> str:
    """What HTML cannot carry exactly: tabs, non-breaking spaces, space runs, spaces at line ends."""
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    return re.sub(r" ?\n ?", "\n", text)


def test_bodies_are_html_by_default_and_text_when_preferred(server: GraphServer, records: list[dict]) -> None:
    session = signed_in(server)
    originals = {r["id"]: r["body"]["content"] for r in records if r["mailbox"] == SANDERS}
    url = messages_url(server, SANDERS)

    as_html = session.get(url, params={"$select": "body,uniqueBody", "$top": "100"})
    assert "Preference-Applied" not in as_html.headers
    for message in as_html.json()["value"]:
        assert message["body"]["contentType"] == "html" and message["body"]["content"].startswith("<html>")
        assert message["uniqueBody"] == message["body"]
        # The round trip through the pipeline's own HTML cleaning gives back the text.
        from_html = body_text(ItemBody.model_validate(message["body"]))
        from_text = body_text(ItemBody(contentType="text", content=originals[message["id"]]))
        assert comparable(from_html) == comparable(from_text)

    as_text = session.get(
        url, params={"$select": "body", "$top": "100"}, headers={"Prefer": 'outlook.body-content-type="text"'}
    )
    assert as_text.headers["Preference-Applied"] == 'outlook.body-content-type="text"'
    assert {m["id"]: m["body"] for m in as_text.json()["value"]} == {
        id_: {"contentType": "text", "content": content} for id_, content in originals.items()
    }

    server.add_message(
        {
            "mailbox": SANDERS,
            "id": "msg-html",
            "receivedDateTime": "2030-01-01T00:00:00Z",
            "body": {
                "contentType": "html",
                "content": "<html><head><style>p{}</style></head><body><p>Hello<br>world</p></body></html>",
            },
        }
    )
    newest = session.get(url, params={"$top": "1"}, headers={"Prefer": 'outlook.body-content-type="text"'}).json()
    assert newest["value"][0]["body"] == {"contentType": "text", "content": "Hello\nworld"}
    html_again = session.get(url, params={"$top": "1"}).json()["value"][0]["body"]
    assert html_again["content"].startswith("<html><head><style>")  # an HTML body is served as stored


# -- faults ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, status, code, retry_after",
    [
        (Fault("throttle"), 429, "ApplicationThrottled", "1"),
        (Fault("throttle", retry_after=None), 429, "ApplicationThrottled", None),
        (Fault("unavailable", retry_after=3), 503, "serviceNotAvailable", "3"),
        (Fault("unavailable", retry_after=None), 503, "serviceNotAvailable", None),
        (Fault("gateway_timeout"), 504, "UnknownError", None),
        (Fault("expired_token"), 401, "InvalidAuthenticationToken", None),
        (Fault("access_denied"), 403, "ErrorAccessDenied", None),
    ],
    ids=lambda value: value.kind if isinstance(value, Fault) else None,
)
def test_error_faults_answer_once_then_the_request_succeeds(
    server: GraphServer, fault: Fault, status: int, code: str, retry_after: str | None
) -> None:
    session = signed_in(server)
    server.add_fault(fault)
    assert server.faults_pending() == 1
    url = messages_url(server, KAY)
    response = session.get(url)
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert response.headers.get("Retry-After") == retry_after
    assert server.retry_after_total_s == int(retry_after or 0)
    if fault.kind == "throttle":
        assert response.json() == THROTTLED_BODY
    if fault.kind == "access_denied":
        assert response.json()["error"]["message"] == "Access to OData is disabled."
    if fault.kind == "expired_token":
        assert response.json()["error"]["message"] == "Access token has expired or is not yet valid."
    assert server.request_log[-1].fault == fault.kind
    assert server.faults_pending() == 0
    assert session.get(url).status_code == 200  # spent; the same token still works


def test_a_reset_cuts_the_body_half_way(server: GraphServer) -> None:
    session = signed_in(server)
    server.add_fault(Fault("reset"))
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        session.get(messages_url(server, KAY))
    assert session.get(messages_url(server, KAY)).status_code == 200


def test_a_slow_fault_delays_the_answer(server: GraphServer) -> None:
    session = signed_in(server)
    server.add_fault(Fault("slow", delay_s=0.3))
    started = time.perf_counter()
    assert session.get(messages_url(server, KAY)).status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_an_empty_page_keeps_its_next_link_so_nothing_is_lost(server: GraphServer, records: list[dict]) -> None:
    session = signed_in(server)
    server.add_fault(Fault("empty_page", path_contains="%24skip="))
    items, pages = collect(session, messages_url(server, KEAN), params={"$top": "20"})
    assert pages[1]["value"] == [] and pages[1]["@odata.nextLink"] == pages[0]["@odata.nextLink"]
    assert len(items) == len({m["id"] for m in items}) == len(ids_of(records, KEAN))
    assert len(pages) == math.ceil(len(items) / 20) + 1


def test_a_missing_value_page_is_the_page_without_its_value_array(server: GraphServer, records: list[dict]) -> None:
    session = signed_in(server)
    url = messages_url(server, KEAN)
    params = {"$top": "20", "$count": "true"}
    whole = session.get(url, params=params).json()
    server.add_fault(Fault("missing_value", path_contains="/messages?"))
    server.add_fault(Fault("missing_value", path_contains="/messages/delta"))

    cut = session.get(url, params=params)
    assert cut.status_code == 200
    assert cut.json() == {key: value for key, value in whole.items() if key != "value"}
    assert set(cut.json()) == {"@odata.context", "@odata.count", "@odata.nextLink"}
    assert server.request_log[-1].fault == "missing_value" and server.request_log[-1].items == 0
    assert server.request_log[-1].request_id == cut.headers["request-id"]
    delta = session.get(f"{server.api_url}/users/{KEAN}/mailFolders/inbox/messages/delta")
    assert delta.status_code == 200 and set(delta.json()) == {"@odata.context", "@odata.nextLink"}
    assert session.get(url, params=params).json() == whole  # spent


def test_a_lone_surrogate_goes_out_as_its_json_escape(server: GraphServer) -> None:
    """Graph cuts text by UTF-16 code units; a cut inside a pair leaves one half, which JSON carries only as
    a \\u escape. The server sends exactly that, and the client's JSON reader gives it back as a lone surrogate."""
    server.add_message(
        {"mailbox": KEAN, "id": "cut\udce9", "subject": "caf\udce9", "receivedDateTime": "2002-01-01T00:00:00Z"}
    )
    session = signed_in(server)
    response = session.get(messages_url(server, KEAN), params={"$filter": "receivedDateTime ge 2002-01-01T00:00:00Z"})
    assert response.status_code == 200
    assert b'"subject":"caf\\udce9"' in response.content and b'"id":"cut\\udce9"' in response.content
    (message,) = response.json()["value"]
    assert message["subject"] == "caf\udce9" and message["id"] == "cut\udce9"


def test_a_repeated_item_replays_the_last_item_of_the_previous_page(server: GraphServer, records: list[dict]) -> None:
    session = signed_in(server)
    server.add_fault(Fault("repeat_item", path_contains="%24skip="))
    items, pages = collect(session, messages_url(server, KEAN), params={"$top": "20"})
    assert pages[1]["value"][0]["id"] == pages[0]["value"][-1]["id"]
    assert len(items) == len(ids_of(records, KEAN)) + 1
    assert {m["id"] for m in items} == ids_of(records, KEAN)


def test_faults_hit_only_matching_requests_in_order_and_times(server: GraphServer) -> None:
    session = signed_in(server)
    server.add_fault(Fault("access_denied", mailbox=SANDERS))
    server.add_fault(Fault("throttle", path_contains="/messages/delta", times=2))
    server.add_fault(Fault("unavailable", times=2))
    assert server.faults_pending() == 5
    delta = f"{server.api_url}/users/{KAY}/mailFolders/inbox/messages/delta"
    statuses = [
        session.get(messages_url(server, KAY)).status_code,  # the first matching fault: unavailable
        session.get(delta).status_code,  # throttle (it was added before unavailable)
        session.get(messages_url(server, SANDERS.upper())).status_code,  # access_denied: the mailbox matches
        session.get(delta).status_code,  # throttle, its second time
        session.get(delta).status_code,  # unavailable, its second time
        session.get(delta).status_code,  # all spent
    ]
    assert statuses == [503, 429, 403, 429, 503, 200]
    assert server.faults_pending() == 0
    assert set(FAULT_KINDS) == {
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
    }
    with pytest.raises(ValueError):
        Fault("teapot")


# -- delta -------------------------------------------------------------------------------------------


def delta_round(session: requests.Session, url: str, **kwargs) -> tuple[list[dict], list[dict], str]:
    """One delta round: (items, pages, deltaLink)."""
    items, pages = collect(session, url, **kwargs)
    assert all("%24skiptoken=" in page["@odata.nextLink"] for page in pages[:-1])
    delta_link = pages[-1]["@odata.deltaLink"]
    assert "%24deltatoken=" in delta_link and delta_link.startswith(server_api(url))
    return items, pages, delta_link


def server_api(url: str) -> str:
    return url.split("/v1.0/")[0] + "/v1.0/"


def test_delta_rounds_list_the_folder_then_its_changes(records: list[dict]) -> None:
    kean = [r for r in records if r["mailbox"] == KEAN]
    sent = {r["id"] for r in kean[:5]}
    seeded = [{**r, "folder": "sentitems"} if r["id"] in sent else r for r in kean]
    with GraphServer(seeded) as server:
        session = signed_in(server)
        inbox_url = f"{server.api_url}/users/{KEAN}/mailFolders/inbox/messages/delta"
        sent_url = f"{server.api_url}/users/{KEAN}/mailFolders/SentItems/messages/delta"
        inbox_id = session.get(f"{server.api_url}/users/{KEAN}/mailFolders/inbox").json()["id"]

        items, pages, inbox_link = delta_round(session, inbox_url, headers={"Prefer": "odata.maxpagesize=20"})
        assert {m["id"] for m in items} == {r["id"] for r in kean} - sent and len(items) == len(kean) - 5
        assert len(pages) == math.ceil(len(items) / 20)
        assert all(m["@odata.type"] == "#microsoft.graph.message" and m["parentFolderId"] == inbox_id for m in items)
        assert pages[0]["@odata.context"] == "https://graph.microsoft.com/v1.0/$metadata#Collection(message)"
        sent_items, _, sent_link = delta_round(session, sent_url)
        assert {m["id"] for m in sent_items} == sent

        inbox_ids = [m["id"] for m in items]
        updated, deleted, moved = inbox_ids[:3]
        old_key = next(m["changeKey"] for m in items if m["id"] == updated)
        server.add_message(
            {"mailbox": KEAN, "id": "msg-new", "subject": "New", "receivedDateTime": "2002-01-01T00:00:00Z"}
        )
        server.update_message(KEAN, updated, subject="Changed", isRead=False)
        server.delete_message(KEAN, deleted)
        server.move_message(KEAN, moved, "sentitems")

        changes, _, inbox_link = delta_round(session, inbox_link)
        by_id = {m["id"]: m for m in changes}
        assert set(by_id) == {"msg-new", updated, deleted, moved}
        assert by_id["msg-new"]["subject"] == "New" and by_id["msg-new"]["body"]["contentType"] == "html"
        assert by_id[updated]["subject"] == "Changed" and by_id[updated]["isRead"] is False
        assert by_id[updated]["changeKey"] != old_key
        for gone in (deleted, moved):
            assert by_id[gone] == {
                "@odata.type": "#microsoft.graph.message",
                "id": gone,
                "@removed": {"reason": "deleted"},
            }
        assert deleted not in {m["id"] for m in server.messages(KEAN)}

        sent_changes, _, _ = delta_round(session, sent_link)
        assert [m["id"] for m in sent_changes] == [moved] and "@removed" not in sent_changes[0]

        nothing, _, _ = delta_round(session, inbox_link)
        assert nothing == []


def test_delta_select_change_type_and_filter(server: GraphServer, records: list[dict]) -> None:
    session = signed_in(server)
    url = f"{server.api_url}/users/{KAY}/mailFolders/inbox/messages/delta"
    only_deletions, _, link = delta_round(session, url, params={"changeType": "deleted", "$select": "subject"})
    assert only_deletions == []
    kept, gone = sorted(ids_of(records, KAY))[:2]
    server.update_message(KAY, kept, subject="ignored: an update")
    server.delete_message(KAY, gone)
    changes, _, _ = delta_round(session, link)
    assert changes == [{"@odata.type": "#microsoft.graph.message", "id": gone, "@removed": {"reason": "deleted"}}]

    since = dt.datetime(2001, 3, 1, tzinfo=dt.timezone.utc)
    items, _, _ = delta_round(
        session,
        url,
        params={
            "$filter": "receivedDateTime ge 2001-03-01T00:00:00Z",
            "$select": "subject,receivedDateTime",
            "$top": "50",
        },
    )
    expected = {r["id"] for r in records if r["mailbox"] == KAY and received(r) >= since} - {gone}
    assert {m["id"] for m in items} == expected and 0 < len(expected) < len(ids_of(records, KAY))
    assert all(set(m) == {"@odata.type", "@odata.etag", "id", "subject", "receivedDateTime"} for m in items)

    for unsupported in (
        "receivedDateTime lt 2001-03-01T00:00:00Z",
        "subject eq 'x'",
        "receivedDateTime ge 2001-03-01T00:00:00Z and isRead eq false",
        "(receivedDateTime ge 2001-03-01T00:00:00Z)",
        "sender/nonesuch eq 'x'",
    ):
        response = session.get(url, params={"$filter": unsupported})
        assert_envelope(
            response,
            400,
            "ErrorInvalidUrlQuery",
            "The '$filter' parameter value is not supported for 'Messages' resource; only a value of "
            "'receivedDateTime ge value' is supported.",
        )
    quoted = session.get(url, params={"$filter": "receivedDateTime gt '2001-03-01T00:00:00Z'"})
    assert_envelope(
        quoted,
        400,
        "BadRequest",
        INCOMPATIBLE_TYPES.format(left="Edm.DateTimeOffset", right="Edm.String", kind="GreaterThan"),
    )


def test_expired_delta_tokens_get_410_with_a_location_to_start_again(server: GraphServer, records: list[dict]) -> None:
    session = signed_in(server)
    url = f"{server.api_url}/users/{SANDERS}/mailFolders/inbox/messages/delta"
    first = session.get(url, params={"$select": "subject", "$top": "30"}).json()
    skip_link = first["@odata.nextLink"]
    _, _, delta_link = delta_round(session, skip_link)

    server.expire_delta_tokens()
    for link in (skip_link, delta_link):
        gone = session.get(link, allow_redirects=False)
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "syncStateNotFound"
        assert gone.headers["Location"].startswith(url + "?")
    restart = session.get(skip_link, allow_redirects=False).headers["Location"]
    items, _, _ = delta_round(session, restart)
    assert {m["id"] for m in items} == ids_of(records, SANDERS)
    assert all(set(m) == {"@odata.type", "@odata.etag", "id", "subject"} for m in items)
    assert parse_qs(urlsplit(restart).query) == {"$select": ["subject"], "$top": ["30"]}


# -- concurrency, users, folders ----------------------------------------------------------------------


def parallel_gets(sessions: list[requests.Session], urls: list[str]) -> list[requests.Response]:
    barrier = threading.Barrier(len(urls))
    responses: list[requests.Response | None] = [None] * len(urls)

    def get(index: int) -> None:
        barrier.wait()
        responses[index] = sessions[index].get(urls[index])

    threads = [threading.Thread(target=get, args=(i,)) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r for r in responses if r is not None]


@pytest.mark.parametrize("limit", [4, None])
def test_more_than_four_requests_in_flight_on_one_mailbox_get_429(records: list[dict], limit: int | None) -> None:
    with GraphServer(records, mailbox_concurrency_limit=limit, page_delay_s=0.8) as server:
        token = signed_in(server).headers["Authorization"]
        sessions = [server.session() for _ in range(7)]
        for session in sessions:
            session.headers["Authorization"] = token
            session.get(f"{server.api_url}/users/{KEAN}/mailFolders/inbox")  # TLS handshake before the race
        urls = [messages_url(server, KAY)] * 6 + [messages_url(server, SANDERS)]
        responses = parallel_gets(sessions, urls)

        statuses = sorted(r.status_code for r in responses[:6])
        assert responses[6].status_code == 200  # another mailbox is not limited by this one's load
        if limit is None:
            assert statuses == [200] * 6 and server.max_concurrent_by_mailbox[KAY] == 6
            return
        assert statuses == [200] * 4 + [429] * 2
        for refused in (r for r in responses if r.status_code == 429):
            assert refused.headers["Retry-After"] == "1"
            assert refused.json() == {
                "error": {
                    "code": "ApplicationThrottled",
                    "message": "Application is over its MailboxConcurrency limit.",
                }
            }
        assert server.max_concurrent_by_mailbox[KAY] == 4 and server.retry_after_total_s == 2
        assert [r.fault for r in server.request_log if r.status == 429] == ["concurrency", "concurrency"]
        assert server.errors == []


def test_unknown_users_folders_and_paths(server: GraphServer) -> None:
    session = signed_in(server)
    missing = session.get(messages_url(server, "Nobody@Enron.com"))
    assert_envelope(missing, 404, "ErrorInvalidUser", "The requested user 'Nobody@Enron.com' is invalid.")
    assert session.get(messages_url(server, "Kay.Mann@ENRON.com")).status_code == 200  # UPNs are case-insensitive

    inbox = session.get(f"{server.api_url}/users/{KAY}/mailFolders/Inbox").json()
    assert inbox["displayName"] == "Inbox" and inbox["totalItemCount"] == len(server.messages(KAY))
    assert session.get(f"{server.api_url}/users/{KAY}/mailFolders/{inbox['id']}").json()["id"] == inbox["id"]
    assert {m["parentFolderId"] for m in server.messages(KAY)} == {inbox["id"]}
    for folder in ("sentitems", "deleteditems", "drafts", "archive"):
        assert session.get(f"{server.api_url}/users/{KAY}/mailFolders/{folder}").status_code == 200
    assert_envelope(
        session.get(f"{server.api_url}/users/{KAY}/mailFolders/nonesuch"),
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
    one = session.get(f"{messages_url(server, KAY)}/{server.messages(KAY)[0]['id']}", params={"$select": "subject"})
    assert set(one.json()) == {"@odata.etag", "id", "subject"}
    assert session.get(f"{server.api_url}/me/messages").status_code == 400
    assert {r.mailbox for r in server.request_log if r.path.startswith("/v1.0/users/")} == {KAY, "nobody@enron.com"}
