"""A Graph page without its ``value`` array is an error naming the request, never an empty page (issue 10, item 8).

A 200 answer whose body lacks ``value`` is not what Graph documents for a collection; it is what a proxy, a
gateway or a truncating rewrite hands back. Read as empty, it was an empty day in the store (the listing), a
delta round that stored its deltaLink over changes never seen, and, worst, a mailbox the registration sensor
took for one with no history (``history_span`` -> None), which then never synced. The test server's
``missing_value`` fault serves such a page (the page as it would have been, ``value`` removed); everything runs
through the real ``msal``/``requests`` client over TLS. Each error must carry the ``request-id`` Graph answered
and the ``client-request-id`` the client sent, so support can find the request, and say what keys the body had.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import pytest

from atom_pipelines.mail.delta import note_changed_days
from atom_pipelines.mail.msgraph import GraphPageShapeError
from atom_pipelines.mail.sync import sync_messages
from atom_pipelines.partitions import MailboxWindow
from atom_pipelines.store import schema
from atom_pipelines.store.resource import MailStore
from atom_pipelines_tests.conftest import corpus_records
from atom_pipelines_tests.servers.graph_server import Fault, GraphServer, LoggedRequest
from atom_pipelines_tests.test_graph_sync import graph_source, mailbox_windows

MAILBOX = "kevin.hyatt@enron.com"
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphServer]:
    with GraphServer(corpus_records({MAILBOX})) as graph:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(graph.ca_bundle_path))
        yield graph
        assert graph.errors == []


def the_cut_request(server: GraphServer) -> LoggedRequest:
    (cut,) = [r for r in server.request_log if r.fault == "missing_value"]
    return cut


def assert_names_the_request(error: GraphPageShapeError, cut: LoggedRequest, keys: list[str]) -> None:
    """The error names both request ids of exactly the page that lacked ``value``, its path and its keys."""
    assert cut.status == 200 and cut.request_id
    assert error.request_id == cut.request_id
    assert error.client_request_id == cut.headers["client-request-id"]
    message = str(error)
    assert f"request-id {cut.request_id}" in message
    assert f"client-request-id {cut.headers['client-request-id']}" in message
    assert f"GET {cut.path}" in message
    assert "collection page with no 'value' list" in message
    assert f"its keys: {', '.join(repr(k) for k in keys)}" in message


def test_a_listing_page_without_value_fails_the_window_and_stores_nothing(
    server: GraphServer, sqlite_database_url: str
) -> None:
    records = corpus_records({MAILBOX})
    store = MailStore(database_url=sqlite_database_url)
    # A later page: the pages before it were whole, and must not be stored as the day's listing either.
    server.add_fault(Fault("missing_value", path_contains="%24skip="))

    with pytest.raises(GraphPageShapeError) as raised:
        sync_messages(graph_source(server, sqlite_database_url, page_size=25), store, mailbox_windows(records))

    cut = the_cut_request(server)
    assert "%24skip=25" in cut.query
    assert_names_the_request(raised.value, cut, ["@odata.context", "@odata.count", "@odata.nextLink"])
    assert str(raised.value).startswith(f"listing {MAILBOX} ")
    assert " page 2: HTTP 200 UnexpectedShape: " in str(raised.value)
    assert store.count(schema.messages) == 0


def test_a_last_listing_page_without_value_is_not_an_empty_day(server: GraphServer, sqlite_database_url: str) -> None:
    """One page, no nextLink: without its ``value`` nothing says whether the day held mail."""
    day = dt.date(2001, 10, 17)
    store = MailStore(database_url=sqlite_database_url)
    server.add_fault(Fault("missing_value"))

    with pytest.raises(GraphPageShapeError) as raised:
        sync_messages(graph_source(server, sqlite_database_url), store, [MailboxWindow(MAILBOX, (day,))])

    assert_names_the_request(raised.value, the_cut_request(server), ["@odata.context", "@odata.count"])
    assert store.message_counts([MailboxWindow(MAILBOX, (day,))]) == {}


def test_history_span_of_a_mailbox_whose_probe_lacks_value_raises_instead_of_no_history(
    server: GraphServer, sqlite_database_url: str
) -> None:
    """The registration sensor reads ``history_span``: None there means "nothing to sync, ever"."""
    source = graph_source(server, sqlite_database_url)
    since = dt.date(2001, 1, 1)
    first = min(dt.date.fromisoformat(r["receivedDateTime"][:10]) for r in corpus_records({MAILBOX}))
    assert source.history_span(MAILBOX, since) == (first, None)  # the control: the probe reads a whole page
    server.add_mailbox("nobody.yet@enron.com")
    assert source.history_span("nobody.yet@enron.com", since) is None  # only an empty "value" means no history

    server.add_fault(Fault("missing_value", mailbox=MAILBOX))
    with pytest.raises(GraphPageShapeError) as raised:
        source.history_span(MAILBOX, since)

    assert_names_the_request(raised.value, the_cut_request(server), ["@odata.context"])
    assert str(raised.value).startswith(f"oldest message of {MAILBOX}: HTTP 200 UnexpectedShape: ")
    assert source.history_span(MAILBOX, since) == (first, None)  # the fault spent, the same answer again


def test_a_delta_page_without_value_keeps_the_previous_delta_link(
    server: GraphServer, sqlite_database_url: str
) -> None:
    """Read as no changes, the page's deltaLink would be stored and the message created meanwhile never noted."""
    source = graph_source(server, sqlite_database_url, delta_folders="inbox")
    store = MailStore(database_url=sqlite_database_url)
    log = logging.getLogger(__name__)
    note_changed_days(log, source, store, MAILBOX, NOW)  # baseline round
    baseline_link = store.delta_link(MAILBOX, "inbox")
    assert baseline_link
    server.add_message(
        {"mailbox": MAILBOX, "id": "created-meanwhile", "receivedDateTime": "2002-03-25T09:00:00Z", "subject": "New"}
    )
    server.add_fault(Fault("missing_value", path_contains="/messages/delta"))

    with pytest.raises(GraphPageShapeError) as raised:
        note_changed_days(log, source, store, MAILBOX, NOW)

    assert_names_the_request(raised.value, the_cut_request(server), ["@odata.context", "@odata.deltaLink"])
    assert str(raised.value).startswith(f"delta {MAILBOX}/inbox page 1: ")
    assert store.delta_link(MAILBOX, "inbox") == baseline_link
    assert store.pending_days() == []
    note_changed_days(log, source, store, MAILBOX, NOW)  # the next tick, from the same link, sees the creation
    assert [(row["day"], row["reason"]) for row in store.pending_days()] == [
        (dt.date(2002, 3, 25), "inbox: created-meanwhile created")
    ]
