"""Graph sync through a Graph-compatible server, driven by the real msal and requests.

The server (``servers/graph_server.py``) answers as Graph does, including the exact 400 a quoted date gets
(production bug #7), throttling with Retry-After, expired tokens, access policies, and pages cut off
mid-transfer. What these tests hold the client to:

- every partition of the corpus (corpus/) stored through Graph equals what the export source stores (same ids,
  days and content hashes), with and without injected faults;
- a quoted date is rejected by the server, and the client never sends one;
- errors fail the partition with Graph's code, message and request id, and store nothing;
- the completeness check turns red when Graph's pages lose a message;
- at most 4 requests per mailbox are in flight, across independent clients.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from atom_pipelines.mail.models import utc_day
from atom_pipelines.mail.msgraph import GraphAuthError, GraphMailSource, GraphRequestError, _delta_change
from atom_pipelines.mail.odata import NaiveDatetimeError, odata_datetime, received_window_filter
from atom_pipelines.mail.source import ExportMailSource
from atom_pipelines.mail.sync import sync_messages
from atom_pipelines.partitions import MailboxWindow
from atom_pipelines.store import schema
from atom_pipelines.store.resource import MailStore
from atom_pipelines_tests.conftest import corpus_records, write_export
from atom_pipelines_tests.servers.graph_server import Fault, GraphServer

MAILBOX = "kevin.hyatt@enron.com"
SMALL = {"kevin.hyatt@enron.com", "steven.harris@enron.com"}
UNQUOTED_WINDOW = re.compile(
    r"^receivedDateTime ge \d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z and receivedDateTime lt \d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"
)
QUOTED_DATE = re.compile(r"'\d{4}-\d{2}-\d{2}")


def received_day(record: dict) -> dt.date:
    return utc_day(record["receivedDateTime"])


def mailbox_windows(records: list[dict]) -> list[MailboxWindow]:
    """One window per mailbox over every day from its first to its last message (empty days included)."""
    days: dict[str, list[dt.date]] = defaultdict(list)
    for record in records:
        days[record["mailbox"]].append(received_day(record))
    windows = []
    for mailbox, seen in sorted(days.items()):
        first, last = min(seen), max(seen)
        span = tuple(first + dt.timedelta(days=n) for n in range((last - first).days + 1))
        windows.append(MailboxWindow(mailbox=mailbox, days=span))
    return windows


def stored_messages(database_url: str) -> set[tuple[str, str, dt.date, str]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("select mailbox, message_id, day, content_hash from messages"))
            return {(m, i, d if isinstance(d, dt.date) else dt.date.fromisoformat(d), h) for m, i, d, h in rows}
    finally:
        engine.dispose()


@pytest.fixture
def trust_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Start a server over the given records and make TLS trust its CA the way production is told to:
    REQUESTS_CA_BUNDLE (the client never turns verification off)."""
    servers: list[GraphServer] = []

    def start(records: list[dict], **options: Any) -> GraphServer:
        server = GraphServer(records, **options).start()
        servers.append(server)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_bundle_path))
        return server

    yield start
    for server in servers:
        server.stop()


def graph_source(
    server: GraphServer, gate_url: str, mailboxes: set[str] | None = None, **options: Any
) -> GraphMailSource:
    return GraphMailSource(
        tenant_id=server.tenant_id,
        client_id=server.client_id,
        client_secret=options.pop("client_secret", server.client_secret),
        authority_host=server.authority_host,
        api_url=server.api_url,
        mailboxes=",".join(sorted(mailboxes or [])),
        gate_database_url=gate_url,
        **options,
    )


# -- the filter builder ---------------------------------------------------------------------------------


def test_filter_dates_are_unquoted_utc_literals() -> None:
    start = dt.datetime(2001, 11, 27, tzinfo=dt.timezone.utc)
    berlin = dt.timezone(dt.timedelta(hours=1))
    assert received_window_filter(start, start + dt.timedelta(days=1)) == (
        "receivedDateTime ge 2001-11-27T00:00:00Z and receivedDateTime lt 2001-11-28T00:00:00Z"
    )
    assert odata_datetime(dt.datetime(2001, 11, 27, 1, 0, tzinfo=berlin)) == "2001-11-27T00:00:00Z"
    assert (
        odata_datetime(dt.datetime(2001, 11, 27, 0, 0, 0, 250000, tzinfo=dt.timezone.utc)) == "2001-11-27T00:00:00.25Z"
    )


def test_naive_datetimes_and_empty_windows_are_refused() -> None:
    with pytest.raises(NaiveDatetimeError, match="naive datetime 2001-11-27T00:00:00"):
        received_window_filter(dt.datetime(2001, 11, 27), dt.datetime(2001, 11, 28, tzinfo=dt.timezone.utc))
    start = dt.datetime(2001, 11, 27, tzinfo=dt.timezone.utc)
    with pytest.raises(ValueError, match="empty window"):
        received_window_filter(start, start)
    with pytest.raises(TypeError):
        odata_datetime("2001-11-27T00:00:00Z")  # type: ignore[arg-type]


def test_a_delta_item_whose_date_cannot_place_it_fails_naming_the_request() -> None:
    request = "delta kevin.hyatt@enron.com/inbox page 1"
    # Read as the export reads it: any offset, "Z" included, decides the UTC day.
    late = _delta_change({"id": "m1", "receivedDateTime": "2001-11-27T23:30:00-05:00"}, request)
    assert late.received_day == dt.date(2001, 11, 28) and not late.removed
    for received, problem in [
        ("2001-11-27T10:00:00", "Input should have timezone info"),  # no offset: which day is unknown
        ("yesterday", "Input should be a valid datetime"),
    ]:
        with pytest.raises(GraphRequestError) as raised:
            _delta_change({"id": "m2", "receivedDateTime": received}, request)
        assert str(raised.value).startswith(
            f"{request}: HTTP 200 UnexpectedShape: unreadable receivedDateTime {received!r} of item m2 "
            f"(receivedDateTime: {problem}"
        )


# -- bug #7: the server rejects quoted dates, the client never sends them -------------------------------


def test_the_server_rejects_a_quoted_date_exactly_as_graph_does(trust_server: Any, sqlite_database_url: str) -> None:
    server = trust_server(corpus_records({MAILBOX}))
    source = graph_source(server, sqlite_database_url)
    token = source.client.token()
    response = requests.get(
        f"{server.api_url}/users/{MAILBOX}/messages",
        params={"$filter": "receivedDateTime ge '2001-11-27T00:00:00Z'"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert error["message"] == (
        "Invalid filter clause: A binary operator with incompatible types was detected. Found operand types "
        "'Edm.DateTimeOffset' and 'Edm.String' for operator kind 'GreaterThanOrEqual'."
    )
    # The same query through the client's own request path fails loudly with Graph's code and request id.
    with pytest.raises(
        GraphRequestError, match=r"HTTP 400 BadRequest: Invalid filter clause: A binary operator"
    ) as info:
        source.client.get(
            f"{server.api_url}/users/{MAILBOX}/messages",
            MAILBOX,
            "quoted probe",
            {"$filter": "receivedDateTime ge '2001-11-27T00:00:00Z'"},
        )
    assert info.value.request_id


def test_the_client_never_sends_a_quoted_or_offsetless_date(trust_server: Any, sqlite_database_url: str) -> None:
    records = corpus_records(SMALL)
    server = trust_server(records)
    sync_messages(
        graph_source(server, sqlite_database_url), MailStore(database_url=sqlite_database_url), mailbox_windows(records)
    )

    filters = [r.filter for r in server.request_log if r.filter is not None]
    assert filters, "no listing request reached the server"
    assert not [f for f in filters if QUOTED_DATE.search(f)]
    assert all(UNQUOTED_WINDOW.match(f) for f in filters), filters
    assert {r.status for r in server.request_log} == {200}


# -- the corpus, every partition ------------------------------------------------------------------------


@pytest.mark.postgres
def test_every_partition_of_the_corpus_stores_what_the_export_stores(
    trust_server: Any, tmp_path: Any, postgres_database_url: str, sqlite_database_url: str
) -> None:
    records = corpus_records()
    windows = mailbox_windows(records)
    server = trust_server(records)

    graph_report = sync_messages(
        graph_source(server, postgres_database_url, page_size=1000),
        MailStore(database_url=postgres_database_url),
        windows,
    )
    export_report = sync_messages(
        ExportMailSource(export_dir=str(write_export(tmp_path / "export", records))),
        MailStore(database_url=sqlite_database_url),
        windows,
    )

    via_graph, via_export = stored_messages(postgres_database_url), stored_messages(sqlite_database_url)
    assert len(via_export) == len(records)
    assert via_graph == via_export
    assert graph_report.messages_per_partition == export_report.messages_per_partition
    assert sum(len(w.days) for w in windows) == len(graph_report.messages_per_partition)
    assert not graph_report.incomplete and not graph_report.duplicate_ids and not graph_report.quarantined
    assert graph_report.source_stats["pages"] == server.graph_requests  # without faults, one request a page
    assert server.token_requests == 1  # one token, then MSAL's cache


def sync_through_faults(
    server: GraphServer, records: list[dict], tmp_path: Any, database_url: str, page_size: int
) -> tuple[Any, str]:
    """Sync the records' mailboxes through the (faulty) server into ``database_url`` and the export of the same
    records into another database; the Graph sync's report and the export database's URL."""
    windows = mailbox_windows(records)
    export_url = f"sqlite:///{tmp_path / 'export.sqlite'}"
    # Pages small enough to have later pages to hit; a read timeout under the slow page's delay.
    report = sync_messages(
        graph_source(server, database_url, page_size=page_size, read_timeout_s=1.5, max_retries=4),
        MailStore(database_url=database_url),
        windows,
    )
    sync_messages(
        ExportMailSource(export_dir=str(write_export(tmp_path / "export", records))),
        MailStore(database_url=export_url),
        windows,
    )
    return report, export_url


def test_every_partition_of_the_corpus_survives_every_fault_at_once(
    trust_server: Any, tmp_path: Any, sqlite_database_url: str
) -> None:
    records = corpus_records()
    server = trust_server(records)
    for fault in FAULTS:
        server.add_fault(fault)

    report, export_url = sync_through_faults(server, records, tmp_path, sqlite_database_url, page_size=100)

    assert server.faults_pending() == 0
    assert stored_messages(sqlite_database_url) == stored_messages(export_url)
    assert len(stored_messages(sqlite_database_url)) == len(records)
    assert not report.incomplete and not report.duplicate_ids and not report.quarantined


FAULTS = [
    Fault("throttle", retry_after=1, times=2),
    Fault("unavailable", retry_after=1),
    Fault("gateway_timeout"),
    Fault("expired_token"),
    Fault("empty_page", path_contains="%24skip="),
    Fault("repeat_item", path_contains="%24skip="),
    Fault("reset", path_contains="%24skip="),
    Fault("slow", delay_s=3.0),
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.kind)
def test_a_fault_changes_nothing_in_what_is_stored(
    fault: Fault, trust_server: Any, tmp_path: Any, sqlite_database_url: str
) -> None:
    records = corpus_records(SMALL)
    server = trust_server(records)
    server.add_fault(fault)

    report, export_url = sync_through_faults(server, records, tmp_path, sqlite_database_url, page_size=25)

    assert server.faults_pending() == 0, "the fault never hit a request"
    assert stored_messages(sqlite_database_url) == stored_messages(export_url)
    assert not report.incomplete
    if fault.kind != "slow":  # a slow answer goes to a client that has hung up: the server logs no status
        assert len([r for r in server.request_log if r.fault == fault.kind]) == fault.times
    if fault.kind == "repeat_item":
        assert report.source_stats["repeated_items"] == 1  # seen, named in metadata, stored once
    if fault.kind == "expired_token":
        assert server.token_requests == 2  # one fresh token after the 401, not one per request


def test_the_retry_after_delays_are_honoured(trust_server: Any, sqlite_database_url: str) -> None:
    server = trust_server(corpus_records({MAILBOX}))
    server.add_fault(Fault("throttle", retry_after=2, times=1))
    started = dt.datetime.now()
    sync_messages(
        graph_source(server, sqlite_database_url),
        MailStore(database_url=sqlite_database_url),
        mailbox_windows(corpus_records({MAILBOX})),
    )
    assert (dt.datetime.now() - started).total_seconds() >= 2.0


# -- loud, specific errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault("access_denied"), "ErrorAccessDenied"),
        (Fault("throttle", retry_after=0, times=4), "ApplicationThrottled"),
        (Fault("unavailable", retry_after=0, times=4), "HTTP503"),
    ],
    ids=["access-policy", "throttled-retries-exhausted", "unavailable-retries-exhausted"],
)
def test_a_graph_error_fails_the_window_with_code_and_request_id_and_stores_nothing(
    fault: Fault, code: str, trust_server: Any, sqlite_database_url: str
) -> None:
    records = corpus_records({MAILBOX})
    server = trust_server(records)
    server.add_fault(fault)
    store = MailStore(database_url=sqlite_database_url)
    source = graph_source(server, sqlite_database_url, max_retries=3)

    with pytest.raises(GraphRequestError) as info:
        sync_messages(source, store, mailbox_windows(records))

    error = info.value
    assert error.request_id, "the error must carry Graph's request id for support"
    if code.startswith("HTTP"):
        assert error.status == int(code[4:])
    else:
        assert error.code == code
    if fault.kind != "access_denied":
        assert "retries exhausted" in str(error)
    assert store.count(schema.messages) == 0


def test_an_unknown_mailbox_names_graphs_error(trust_server: Any, sqlite_database_url: str) -> None:
    server = trust_server(corpus_records({MAILBOX}))
    source = graph_source(server, sqlite_database_url)
    window = MailboxWindow(mailbox="nobody@enron.com", days=(dt.date(2001, 11, 27),))
    with pytest.raises(GraphRequestError, match="ErrorInvalidUser: The requested user 'nobody@enron.com' is invalid"):
        source.fetch_window(window)


def test_an_orderby_graph_cannot_serve_is_reported_as_inefficient_filter(
    trust_server: Any, sqlite_database_url: str
) -> None:
    server = trust_server(corpus_records({MAILBOX}))
    source = graph_source(server, sqlite_database_url)
    with pytest.raises(GraphRequestError, match="InefficientFilter: The restriction or sort order is too complex"):
        source.client.get(
            f"{server.api_url}/users/{MAILBOX}/messages",
            MAILBOX,
            "bad ordering probe",
            {"$filter": "receivedDateTime ge 2001-01-01T00:00:00Z", "$orderby": "subject"},
        )


def test_a_refused_secret_names_msals_error_but_never_the_secret(trust_server: Any, sqlite_database_url: str) -> None:
    server = trust_server(corpus_records({MAILBOX}))
    wrong = "not-the-secret-6f1d2"
    source = graph_source(server, sqlite_database_url, client_secret=wrong)
    with pytest.raises(GraphAuthError) as info:
        source.fetch_window(MailboxWindow(mailbox=MAILBOX, days=(dt.date(2001, 11, 27),)))
    message = str(info.value)
    assert "invalid_client" in message and "AADSTS7000215" in message and "correlation_id" in message
    assert wrong not in message and server.client_secret not in message


# -- completeness ----------------------------------------------------------------------------------------


def test_a_message_lost_between_pages_turns_the_completeness_check_red(
    trust_server: Any, sqlite_database_url: str
) -> None:
    """Graph pages messages with $skip; a message removed while a listing is between pages shifts the rest,
    so one message is never listed. Graph's @odata.count (from the first page) then disagrees."""
    records = corpus_records({MAILBOX})
    windows = mailbox_windows(records)
    server = trust_server(records)
    first_listed = min(records, key=lambda r: r["receivedDateTime"])["id"]
    source = graph_source(server, sqlite_database_url, page_size=10)
    real_get = source.client.get
    pages = {"n": 0}

    def get_then_delete(*args: Any, **kwargs: Any) -> Any:
        answer = real_get(*args, **kwargs)
        pages["n"] += 1
        if pages["n"] == 1:  # the user deletes a message while the listing is between pages 1 and 2
            server.delete_message(MAILBOX, first_listed)
        return answer

    source.client.get = get_then_delete  # type: ignore[method-assign]
    report = sync_messages(source, MailStore(database_url=sqlite_database_url), windows)

    assert report.incomplete, "a listing that lost a message passed the completeness check"
    problem = next(iter(report.incomplete.values()))
    assert f"Graph reported {len(records)} messages" in problem
    assert f"pages held {len(records) - 1} distinct" in problem
    assert len(report.incomplete) == len(windows[0].days)  # every day of the listed span is suspect


# -- Graph's per-mailbox concurrency, across independent clients -----------------------------------------


@pytest.mark.parametrize("gate", ["postgres", "sqlite"])
def test_at_most_four_requests_per_mailbox_are_in_flight_across_clients(
    gate: str, trust_server: Any, request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate_url = request.getfixturevalue(f"{gate}_database_url")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))  # where the file gate keeps its locks
    records = corpus_records({MAILBOX})
    # A slow server: each page stays in flight long enough for clients to overlap.
    server = trust_server(records, page_delay_s=0.2, mailbox_concurrency_limit=None)
    windows = mailbox_windows(records)
    errors: list[BaseException] = []

    def one_client() -> None:
        try:  # a separate resource per thread: separate sessions and MSAL apps, as separate processes have
            graph_source(server, gate_url, page_size=10).fetch_window(windows[0])
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=one_client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors, errors
    assert server.max_concurrent_by_mailbox[MAILBOX] == 4  # reached, never exceeded
    assert all(r.status == 200 for r in server.request_log)


def test_without_the_gate_graph_would_have_throttled(trust_server: Any) -> None:
    """The control for the test above: the same load without a gate exceeds Graph's limit."""
    records = corpus_records({MAILBOX})
    server = trust_server(records, page_delay_s=0.2, mailbox_concurrency_limit=None)
    token = graph_source(server, "sqlite://").client.token()

    def one_request() -> None:
        requests.get(
            f"{server.api_url}/users/{MAILBOX}/messages", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    threads = [threading.Thread(target=one_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert server.max_concurrent_by_mailbox[MAILBOX] > 4
