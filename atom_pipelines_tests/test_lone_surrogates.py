"""Text cut inside a UTF-16 surrogate pair never takes a day down (issue 10, item 8).

Graph cuts text by UTF-16 code units; a cut between the halves of a pair leaves a lone surrogate, which JSON
carries as an escape (``"caf\\udce9"``) and Python reads as a str no UTF-8 encoder accepts. Before, one such
message crashed ``outlook_messages`` with UnicodeEncodeError at the store write (psycopg's COPY on PostgreSQL,
sqlite3 on SQLite), and the good messages of its day were not stored either.

What is held here, for every field of the corpus's Graph message shape (the meta-test below fails when the
model reads a field no case covers), through the export source and the Graph source (the test server sends
the cut as Graph does, a ``\\u`` escape), on SQLite and on the real PostgreSQL:

- text the pipeline reads (subject, body, display names) is stored with U+FFFD for each lone half, and counted
  per partition and message in the sync report (``repaired_text``) and the asset's metadata;
- an identifier (ids, addresses, the export's mailbox) or a typed value (content type, dates) so cut is not
  repaired, since a repaired id is another id: the record is quarantined with its ``file:line`` (export) or
  its Graph page and request id, and the field that failed;
- a property the pipeline does not read (``bodyPreview``, Graph's ``sender``) changes nothing;
- in every case the day's good messages are stored.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance
from pydantic import BaseModel

from atom_pipelines.mail.models import GraphMessage, printable, utc_day
from atom_pipelines.mail.source import ExportMailSource, MailSource, SourcedMessage, parse_export_line
from atom_pipelines.mail.sync import SyncReport, sync_messages
from atom_pipelines.partitions import MailboxWindow, mailbox_day_key
from atom_pipelines.store import schema
from atom_pipelines.store.resource import MailStore
from atom_pipelines_tests.conftest import corpus_records, write_export
from atom_pipelines_tests.helpers import check_results, materialize_days, resources
from atom_pipelines_tests.servers.graph_server import GraphServer
from atom_pipelines_tests.test_graph_sync import graph_source

MAILBOX = "kevin.hyatt@enron.com"
DAY = dt.date(2001, 11, 27)  # five messages in the corpus
KEY = mailbox_day_key(MAILBOX, DAY)
WINDOW = MailboxWindow(MAILBOX, (DAY,))
CUT_ID = "cut-message"
LONE = "\udce9"  # the low half of a pair, alone: what json.loads makes of "\udce9"
REPLACED = "\ufffd"

Outcome = Literal["repaired", "quarantined", "not read"]


@dataclass(frozen=True)
class Cut:
    """A field of the message, dotted as Graph names it, and what a lone surrogate in it must come to."""

    path: str
    outcome: Outcome
    graph: bool = True  # False: the Graph source cannot carry the cut (the server's own fields, the filtered date)
    column: str | None = None  # repaired: the messages column holding the text (None: the model only, bcc)

    def __str__(self) -> str:
        return self.path


CUTS = [
    Cut("subject", "repaired", column="subject"),
    Cut("body.content", "repaired", column="body_raw"),
    Cut("from.emailAddress.name", "repaired", column="sender_name"),
    Cut("toRecipients.0.emailAddress.name", "repaired", column="to_recipients"),
    Cut("ccRecipients.0.emailAddress.name", "repaired", column="cc_recipients"),
    Cut("bccRecipients.0.emailAddress.name", "repaired"),
    Cut("id", "quarantined"),
    Cut("internetMessageId", "quarantined"),
    Cut("conversationId", "quarantined"),
    Cut("changeKey", "quarantined", graph=False),
    Cut("parentFolderId", "quarantined", graph=False),
    Cut("from.emailAddress.address", "quarantined"),
    Cut("toRecipients.0.emailAddress.address", "quarantined"),
    Cut("ccRecipients.0.emailAddress.address", "quarantined"),
    Cut("bccRecipients.0.emailAddress.address", "quarantined"),
    Cut("body.contentType", "quarantined", graph=False),  # the server renders bodies as the Prefer header asks
    Cut("receivedDateTime", "quarantined", graph=False),
    Cut("sentDateTime", "quarantined"),
    Cut("mailbox", "quarantined", graph=False),
    Cut("bodyPreview", "not read"),
    Cut("sender.emailAddress.name", "not read"),
    Cut("sender.emailAddress.address", "not read"),
]
#: What a message carries besides the fields GraphMessage reads: an export's owner, and properties nobody reads.
NOT_MODEL_FIELDS = {"mailbox", "bodyPreview", "sender.emailAddress.name", "sender.emailAddress.address"}


def model_leaves(annotation: Any, key: str) -> Iterator[str]:
    """The dotted paths (as Graph names them, lists at index 0) of every leaf value a model annotation reads."""
    origin = get_origin(annotation)
    if origin is list:
        yield from model_leaves(get_args(annotation)[0], f"{key}.0")
    elif origin in (Union, UnionType):
        for arg in get_args(annotation):
            if arg is not type(None):
                yield from model_leaves(arg, key)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            yield from model_leaves(field.annotation, f"{key}.{field.alias or name}".lstrip("."))
    else:
        yield key


def test_every_field_the_model_reads_has_a_case() -> None:
    """A field added to GraphMessage without deciding (and testing) repair or quarantine fails here."""
    read = set(model_leaves(GraphMessage, ""))
    assert read == {cut.path for cut in CUTS} - NOT_MODEL_FIELDS
    assert NOT_MODEL_FIELDS <= {cut.path for cut in CUTS}


def test_a_whole_pair_is_one_character_and_only_lone_halves_are_replaced() -> None:
    """JSON's escaped pair is an emoji, not two repairs; a high half cut off at the end of a truncated text and a
    low half alone are each one U+FFFD."""
    line = (
        '{"mailbox": "kevin.hyatt@enron.com", "id": "m1", "receivedDateTime": "2001-11-27T10:00:00Z", '
        '"subject": "ok \\ud83d\\ude00", "body": {"content": "cut \\ud83d"}, '
        '"toRecipients": [{"emailAddress": {"name": "caf\\udce9 \\udce9", "address": "a@enron.com"}}]}'
    )
    sourced = parse_export_line(line, "export.jsonl:1")
    assert isinstance(sourced, SourcedMessage)
    message = sourced.message
    assert message.subject == "ok \U0001f600"
    assert message.body.content == f"cut {REPLACED}"
    assert message.to_recipients[0].email_address.name == f"caf{REPLACED} {REPLACED}"
    assert message.text_repairs == {"body.content": 1, "toRecipients.0.emailAddress.name": 2}


# -- building the day ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def day_records() -> list[dict]:
    records = [r for r in corpus_records({MAILBOX}) if utc_day(r["receivedDateTime"]) == DAY]
    assert len(records) == 5
    return records


def message_with(record: dict, cut: Cut) -> dict:
    """A new message of the day (its own id) with every field the cases name, the cut one ending in a lone half."""
    message = copy.deepcopy(record)
    message["id"] = CUT_ID
    message["subject"] = "Re: caf"
    message["bodyPreview"] = "caf"
    message["body"] = {"contentType": "text", "content": "Meet at the caf"}
    message["internetMessageId"] = "<cut.1@enron.com>"
    message["changeKey"] = "CQAAABYAAAcut"
    message["parentFolderId"] = "AQMkAcut"
    for key, who in (("from", "from"), ("toRecipients", "to"), ("ccRecipients", "cc"), ("bccRecipients", "bcc")):
        recipient = {"emailAddress": {"name": f"Caf {who}", "address": f"{who}.person@enron.com"}}
        message[key] = recipient if key == "from" else [recipient]
    message["sender"] = copy.deepcopy(message["from"])
    *parents, name = cut.path.split(".")
    holder = leaf_holder(message, parents)
    holder[name] = f"{holder[name]}{LONE}"
    return message


def leaf_holder(message: dict, parents: list[str]) -> Any:
    holder: Any = message
    for part in parents:
        holder = holder[int(part)] if part.isdigit() else holder[part]
    return holder


def cut_text(message: dict, cut: Cut) -> str:
    """The cut field's text as sent (with its lone half)."""
    *parents, name = cut.path.split(".")
    return leaf_holder(message, parents)[name]


def origin_line(export_dir: Path) -> str:
    """``file:line`` of the cut message in the export (the one line holding a lone surrogate's escape)."""
    lines = (export_dir / "export.jsonl").read_text(encoding="utf-8").splitlines()
    (number,) = [n for n, line in enumerate(lines, start=1) if "\\udce9" in line]
    return f"export.jsonl:{number}"


def stored_rows(database_url: str) -> dict[str, dict[str, Any]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {row.message_id: dict(row._mapping) for row in conn.execute(sa.select(schema.messages))}
    finally:
        engine.dispose()


def quarantine_rows(database_url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.select(schema.quarantined_records))]
    finally:
        engine.dispose()


def repaired_value(row: dict[str, Any], cut: Cut) -> str:
    value = row[cut.column]
    if cut.column in ("to_recipients", "cc_recipients"):
        recipients = json.loads(value) if isinstance(value, str) else value
        return recipients[0]["name"]
    return value


# -- what every case must come to -----------------------------------------------------------------------


def assert_outcome(
    cut: Cut, sent: dict, report: SyncReport, database_url: str, good_ids: set[str], origin: str, reason_ends: str
) -> None:
    """``sent``: the cut message as the source had it; ``origin``/``reason_ends``: how its quarantine names it."""
    rows = stored_rows(database_url)
    assert good_ids <= set(rows), "the good messages of the day were not stored"
    if cut.outcome == "quarantined":
        assert set(rows) == good_ids
        assert report.repaired_text == {} and report.lone_surrogates_replaced == 0
        (record,) = report.quarantined[KEY]
        assert record.origin == origin
        field = "'mailbox' field" if cut.path == "mailbox" else f"{cut.path}:"
        assert field in record.reason and record.reason.endswith(reason_ends)
        if cut.path not in ("body.contentType", "receivedDateTime", "sentDateTime"):
            # An identifier: refused by name, the surrogate written as its escape.
            assert "lone surrogate '\\udce9'" in record.reason and "cannot be repaired" in record.reason
        (row,) = quarantine_rows(database_url)
        assert (row["mailbox"], row["day"], row["origin"], row["reason"]) == (MAILBOX, DAY, origin, record.reason)
        assert "\\udce9" in row["raw_excerpt"]  # the record as sent: the escape, findable
        assert row["record_mailbox"] == (None if cut.path == "mailbox" else MAILBOX)
        return
    assert set(rows) == good_ids | {CUT_ID}
    assert KEY not in report.quarantined and quarantine_rows(database_url) == []
    stored_cut = json.dumps(list(rows[CUT_ID].values()), default=str, ensure_ascii=False)
    if cut.outcome == "not read":
        assert report.repaired_text == {} and report.lone_surrogates_replaced == 0
        assert REPLACED not in stored_cut
        return
    assert report.repaired_text == {KEY: {CUT_ID: {cut.path: 1}}}
    assert report.repaired_messages == 1 and report.lone_surrogates_replaced == 1
    if cut.column is None:  # read, repaired and counted, but in no stored column (bcc)
        assert REPLACED not in stored_cut
    else:
        assert repaired_value(rows[CUT_ID], cut) == cut_text(sent, cut).replace(LONE, REPLACED)


# -- the export source ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", CUTS, ids=str)
def test_export_record_with_a_lone_surrogate(
    cut: Cut, day_records: list[dict], database_url: str, tmp_path: Path
) -> None:
    bad = message_with(day_records[0], cut)
    export = write_export(tmp_path / "export", [*day_records[:2], bad, *day_records[2:]])  # json.dumps: the escape
    assert "\\udce9" in (export / "export.jsonl").read_text(encoding="utf-8")

    report = sync_messages(ExportMailSource(export_dir=str(export)), MailStore(database_url=database_url), [WINDOW])

    assert_outcome(cut, bad, report, database_url, {r["id"] for r in day_records}, origin_line(export), "")


# -- the Graph source -----------------------------------------------------------------------------------


@pytest.fixture
def graph_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    servers: list[GraphServer] = []

    def start(records: list[dict]) -> GraphServer:
        server = GraphServer(records).start()
        servers.append(server)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_bundle_path))
        return server

    yield start
    for server in servers:
        assert server.errors == []
        server.stop()


@pytest.mark.parametrize("cut", [c for c in CUTS if c.graph], ids=str)
def test_graph_message_with_a_lone_surrogate(
    cut: Cut, day_records: list[dict], database_url: str, graph_server: Any
) -> None:
    bad = message_with(day_records[0], cut)
    server = graph_server([*day_records, bad])
    # A property the source does not $select would never reach it: ask for whole messages, so it does.
    source: MailSource = graph_source(server, database_url, use_select=cut.outcome != "not read")

    report = sync_messages(source, MailStore(database_url=database_url), [WINDOW])

    (listing,) = [r for r in server.request_log if r.path.endswith("/messages") and r.status == 200]
    assert listing.request_id
    origin = f"graph:/users/{MAILBOX}/messages {DAY}..{DAY} id {printable(bad['id'])}"
    assert_outcome(
        cut,
        bad,
        report,
        database_url,
        {r["id"] for r in day_records},
        origin,
        f"(Graph page 1, request-id {listing.request_id})",
    )


# -- the asset ------------------------------------------------------------------------------------------


def test_outlook_messages_stores_the_day_and_shows_the_repairs_in_its_metadata(
    instance: DagsterInstance, day_records: list[dict], database_url: str, tmp_path: Path
) -> None:
    bad = message_with(day_records[0], Cut("subject", "repaired"))
    bad["body"]["content"] += f" and a second cut {LONE}{LONE}"
    export = write_export(tmp_path / "export", [*day_records, bad])

    result = materialize_days(instance, resources(export, database_url), MAILBOX, DAY)

    assert result.success and check_results(result)["no_quarantined_records"] is True
    (materialization,) = [
        e.materialization for e in result.get_asset_materialization_events() if e.asset_key.path == ["outlook_messages"]
    ]
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["dagster/row_count"] == len(day_records) + 1
    assert metadata["text_repaired_messages"] == 1
    assert metadata["lone_surrogates_replaced"] == 3
    assert metadata["text_repairs"] == {KEY: {CUT_ID: {"subject": 1, "body.content": 2}}}
    row = stored_rows(database_url)[CUT_ID]
    assert row["subject"] == f"Re: caf{REPLACED}" and row["body_raw"].endswith(f"{REPLACED}{REPLACED}")
