"""The graph build (``atom_pipelines.entity_graph.analysis``) on small stores whose graph is worked out by hand.

What must hold: an e-mail held by two mailboxes counts once in every weight; kinds stay apart and keep their
direction (``sent_to`` alice -> bob is not bob -> alice, ``co_mention`` has none); any edge leads back to its
e-mails with one SQL join; body names resolved to the one correspondent they name replace their
``person-name:`` node; communities and every table are the same on a re-run; an incremental build keeps the
stored communities and seats a new node with its strongest neighbour; and each entity_graph check fails on
the broken input it exists for.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from sqlalchemy import select, text, update

from atom_pipelines.checks.entity_graph import entity_graph_check_results
from atom_pipelines.entity_graph import exports
from atom_pipelines.entity_graph.analysis import GraphOptions, build_entity_graph, graph_check_facts
from atom_pipelines.partitions import MailboxWindow
from atom_pipelines.store import schema
from atom_pipelines.store.resource import MailStore
from atom_pipelines_tests.helpers import entity_row, link_row, message_row

ALICE = "person:alice@enron.com"
BOB = "person:bob@enron.com"
CAROL = "person:carol@example.com"
DAVE_NAME = "person-name:dave"
ENRON = "organization:enron.com"
MONEY = "money:usd:2500"
A, B = "alice@enron.com", "bob@enron.com"
DAY_1, DAY_2, DAY_3 = dt.date(2001, 10, 1), dt.date(2001, 10, 2), dt.date(2001, 10, 3)


def sent(mailbox: str, message_id: str, day: dt.date, internet_id: str | None, subject: str, **parts: Any):
    """One message's rows: alice/bob headers as given, plus text entities; links as the link builder makes them."""
    return {
        "message": message_row(mailbox, message_id, day, internet_id, subject),
        "entities": [entity_row(mailbox, message_id, day, *e) for e in parts.get("entities", [])],
        "links": [link_row(mailbox, message_id, day, *link) for link in parts.get("links", [])],
    }


def alice_to_bob(mailbox: str, message_id: str) -> dict[str, Any]:
    """The e-mail <m1@enron.com>: alice to bob, cc carol; in alice's Sent Items and in bob's Inbox alike."""
    return sent(
        mailbox,
        message_id,
        DAY_1,
        "<m1@enron.com>",
        "Q4 forecast",
        entities=[
            (ALICE, "Alice Archer", "person", "sender"),
            (BOB, "Bob Baker", "person", "to"),
            (CAROL, "Carol Cole", "person", "cc"),
            (ENRON, "enron.com", "organization", "domain"),
        ],
        links=[(ALICE, BOB, "sent_to"), (ALICE, CAROL, "cc_to"), (ALICE, ENRON, "works_at"), (BOB, ENRON, "works_at")],
    )


def bob_replies() -> dict[str, Any]:
    """Bob to alice, naming "Alice" (a correspondent of bob's mailbox) and "Dave" (nobody's) beside a fee."""
    return sent(
        B,
        "b2",
        DAY_2,
        "<m2@enron.com>",
        "Re: Q4 forecast",
        entities=[
            (BOB, "Bob Baker", "person", "sender"),
            (ALICE, "alice@enron.com", "person", "to"),
            (ENRON, "enron.com", "organization", "domain"),
            ("person-name:alice", "Alice", "person", "greeting"),
            (DAVE_NAME, "Dave", "person", "text"),
            (MONEY, "$2,500", "money", "text"),
        ],
        links=[
            (BOB, ALICE, "sent_to"),
            (ALICE, ENRON, "works_at"),
            (BOB, ENRON, "works_at"),
            (MONEY, "person-name:alice", "co_mention"),
            (DAVE_NAME, MONEY, "co_mention"),
            (DAVE_NAME, "person-name:alice", "co_mention"),
        ],
    )


def store_messages(store: MailStore, messages: list[dict[str, Any]]) -> None:
    by_mailbox: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        by_mailbox.setdefault(message["message"]["mailbox"], []).append(message)
    for mailbox, items in by_mailbox.items():
        days = tuple(sorted({m["message"]["day"] for m in items}))
        store.replace_partitions(
            [MailboxWindow(mailbox, days)],
            {
                schema.messages: [m["message"] for m in items],
                schema.entities: [e for m in items for e in m["entities"]],
                schema.entity_links: [link for m in items for link in m["links"]],
            },
        )


def rows(store: MailStore, table) -> list[dict[str, Any]]:  # noqa: ANN001 - a sqlalchemy Table
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).order_by(*table.primary_key.columns))]


def edges_by_key(store: MailStore) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(e["source_key"], e["target_key"], e["kind"]): e for e in rows(store, schema.graph_edges)}


@pytest.fixture
def store(database_url: str) -> MailStore:
    store = MailStore(database_url=database_url)
    store_messages(store, [alice_to_bob(A, "a1"), alice_to_bob(B, "b1"), bob_replies()])
    return store


def options(tmp_path: Path, **overrides: Any) -> GraphOptions:
    return GraphOptions(export_dir=tmp_path / "exports", **overrides)


# -- one count per e-mail, typed and directed edges ----------------------------------------------------------------


def test_an_email_in_two_mailboxes_counts_once_and_kinds_keep_their_direction(store: MailStore, tmp_path: Path) -> None:
    report = build_entity_graph(store, options(tmp_path))
    edges = edges_by_key(store)
    # <m1> is linked twice (alice's and bob's copy): once in every weight.
    assert edges[(ALICE, BOB, "sent_to")]["weight"] == 1
    assert edges[(ALICE, CAROL, "cc_to")]["weight"] == 1
    # Bob's reply is another e-mail, and the other direction: its own edge.
    assert edges[(BOB, ALICE, "sent_to")]["weight"] == 1
    assert edges[(ALICE, BOB, "sent_to")]["directed"] and not edges[(MONEY, ALICE, "co_mention")]["directed"]
    # works_at from two e-mails (m1 once, m2 once), not three copies.
    assert edges[(ALICE, ENRON, "works_at")]["weight"] == 2
    assert (edges[(ALICE, ENRON, "works_at")]["first_seen"], edges[(ALICE, ENRON, "works_at")]["last_seen"]) == (
        DAY_1,
        DAY_2,
    )
    # The four links of bob's copy of <m1> are what one-count-per-e-mail removed.
    assert report.copies_removed == 4
    nodes = {n["entity_key"]: n for n in rows(store, schema.graph_nodes)}
    assert nodes[ALICE]["message_count"] == 2  # <m1> and <m2>, though three stored messages mention her
    assert nodes[CAROL]["message_count"] == 1


def test_copies_with_their_own_message_ids_count_once_by_content_within_a_day(
    database_url: str, tmp_path: Path
) -> None:
    """The shared corpus's export gave each mailbox's copy its own Message-ID: the content says they are one."""
    store = MailStore(database_url=database_url)
    copy_a, copy_b = alice_to_bob(A, "a1"), alice_to_bob(B, "b1")
    copy_b["message"]["internet_message_id"] = "<another-id-for-the-same-mail@enron.com>"
    copy_b["message"]["received_at"] += dt.timedelta(minutes=3)
    later = alice_to_bob(A, "a9")  # the same text again a week later: another e-mail
    later["message"]["internet_message_id"] = None
    later["message"]["received_at"] += dt.timedelta(days=7)
    store_messages(store, [copy_a, copy_b, later])
    report = build_entity_graph(store, options(tmp_path))
    assert edges_by_key(store)[(ALICE, BOB, "sent_to")]["weight"] == 2  # a1 and a9; b1 is a1's copy
    assert report.copies_removed == 4


def test_any_edge_leads_to_its_emails_with_one_join(store: MailStore, tmp_path: Path) -> None:
    build_entity_graph(store, options(tmp_path))
    query = text(
        "SELECT m.mailbox, m.message_id, m.subject FROM graph_edge_messages g "
        "JOIN messages m ON m.mailbox = g.mailbox AND m.message_id = g.message_id "
        "WHERE g.source_key = :source AND g.target_key = :target AND g.kind = :kind ORDER BY g.day DESC"
    )
    with store.engine.connect() as conn:
        works_at = conn.execute(query, {"source": ALICE, "target": ENRON, "kind": "works_at"}).fetchall()
        sent_to = conn.execute(query, {"source": ALICE, "target": BOB, "kind": "sent_to"}).fetchall()
    # The latest first; the copy counted is the first mailbox's (alice's), the same on every build.
    assert [tuple(r) for r in works_at] == [(B, "b2", "Re: Q4 forecast"), (A, "a1", "Q4 forecast")]
    assert [tuple(r) for r in sent_to] == [(A, "a1", "Q4 forecast")]


def test_edge_messages_are_capped_per_edge(database_url: str, tmp_path: Path) -> None:
    store = MailStore(database_url=database_url)
    store_messages(
        store,
        [
            sent(
                A,
                f"a{n}",
                DAY_1 + dt.timedelta(days=n),
                f"<n{n}@enron.com>",
                f"note {n}",
                entities=[(ALICE, "Alice", "person", "sender"), (BOB, "Bob", "person", "to")],
                links=[(ALICE, BOB, "sent_to")],
            )
            for n in range(5)
        ],
    )
    build_entity_graph(store, options(tmp_path, edge_messages=3))
    assert edges_by_key(store)[(ALICE, BOB, "sent_to")]["weight"] == 5
    kept = [r["message_id"] for r in rows(store, schema.graph_edge_messages)]
    assert sorted(kept) == ["a2", "a3", "a4"]  # the three latest


# -- identity resolution in the graph --------------------------------------------------------------------------------


def test_a_body_name_of_one_correspondent_becomes_that_person(store: MailStore, tmp_path: Path) -> None:
    report = build_entity_graph(store, options(tmp_path))
    nodes = {n["entity_key"]: n for n in rows(store, schema.graph_nodes)}
    assert "person-name:alice" not in nodes
    assert "Alice" in nodes[ALICE]["names"]
    # The label is the display name seen with her address, not the body name or the bare address.
    assert nodes[ALICE]["label"] == "Alice Archer"
    # The co-mentions now join the fee and the Dave mention to alice (smaller key first, as before).
    edges = edges_by_key(store)
    assert (MONEY, ALICE, "co_mention") in edges and (DAVE_NAME, ALICE, "co_mention") in edges
    assert not any("person-name:alice" in key for key in edges)
    # Nobody of bob's correspondents is a Dave: that name stays apart, and the refusal is a row.
    assert DAVE_NAME in nodes and nodes[DAVE_NAME]["addresses"] == []
    decisions = {(d["mailbox"], d["message_id"], d["mention_key"]): d for d in rows(store, schema.identity_decisions)}
    merged = decisions[(B, "b2", "person-name:alice")]
    assert (merged["decision"], merged["person_key"]) == ("merged", ALICE)
    refused = decisions[(B, "b2", DAVE_NAME)]
    assert (refused["decision"], refused["person_key"]) == ("refused", None)
    assert (report.name_mentions, report.names_merged) == (2, 1)
    assert report.people_before == 5 and report.people_after == 4  # alice, bob, carol, dave's name


def test_an_alias_makes_two_addresses_one_person(database_url: str, tmp_path: Path) -> None:
    store = MailStore(database_url=database_url)
    store_messages(
        store,
        [
            sent(
                A,
                "a1",
                DAY_1,
                "<x1@enron.com>",
                "hi",
                entities=[(ALICE, "Alice Archer", "person", "sender"), (BOB, "Bob", "person", "to")],
                links=[(ALICE, BOB, "sent_to")],
            ),
            sent(
                A,
                "a2",
                DAY_2,
                "<x2@enron.com>",
                "hi again",
                entities=[
                    ("person:aarcher@enron.com", "Alice Archer", "person", "sender"),
                    (BOB, "Bob", "person", "to"),
                ],
                links=[("person:aarcher@enron.com", BOB, "sent_to")],
            ),
        ],
    )
    without = build_entity_graph(store, options(tmp_path))
    assert without.people_after == 3  # the same display name never merges two addresses
    build_entity_graph(store, options(tmp_path, aliases={"aarcher@enron.com": A}, force_full=True))
    nodes = {n["entity_key"]: n for n in rows(store, schema.graph_nodes)}
    assert "person:aarcher@enron.com" not in nodes
    assert sorted(nodes[ALICE]["addresses"]) == ["aarcher@enron.com", A]
    assert edges_by_key(store)[(ALICE, BOB, "sent_to")]["weight"] == 2


# -- metrics, communities, stability ---------------------------------------------------------------------------------


def two_teams() -> list[dict[str, Any]]:
    """Two tight teams of four with one thin bridge: Louvain must find the two teams."""
    messages = []
    teams = {"enron.com": ["ann", "ben", "cat", "dan"], "acme.com": ["eve", "fay", "gus", "hal"]}
    n = 0
    for domain, people in teams.items():
        for i, sender in enumerate(people):
            for receiver in people[i + 1 :]:
                for _ in range(3):
                    n += 1
                    s, r = f"person:{sender}@{domain}", f"person:{receiver}@{domain}"
                    messages.append(
                        sent(
                            A,
                            f"t{n}",
                            DAY_1,
                            f"<t{n}@x>",
                            f"t{n}",
                            entities=[(s, sender.title(), "person", "sender"), (r, receiver.title(), "person", "to")],
                            links=[(s, r, "sent_to")],
                        )
                    )
    messages.append(
        sent(
            A,
            "bridge",
            DAY_2,
            "<bridge@x>",
            "bridge",
            entities=[
                ("person:dan@enron.com", "Dan", "person", "sender"),
                ("person:eve@acme.com", "Eve", "person", "to"),
            ],
            links=[("person:dan@enron.com", "person:eve@acme.com", "sent_to")],
        )
    )
    return messages


def test_louvain_finds_the_teams_and_every_table_is_the_same_on_a_rerun(database_url: str, tmp_path: Path) -> None:
    store = MailStore(database_url=database_url)
    store_messages(store, two_teams())
    first = build_entity_graph(store, options(tmp_path, force_full=True))
    tables = {t.name: rows(store, t) for t in schema.GRAPH_TABLES}
    nodes = {n["entity_key"]: n for n in tables["graph_nodes"]}
    enron = {nodes[f"person:{p}@enron.com"]["community"] for p in ("ann", "ben", "cat", "dan")}
    acme = {nodes[f"person:{p}@acme.com"]["community"] for p in ("eve", "fay", "gus", "hal")}
    assert len(enron) == 1 and len(acme) == 1 and enron != acme
    # The bridge ends carry the shortest paths between the teams.
    top_betweenness = sorted(nodes.values(), key=lambda n: -n["betweenness"])[:2]
    assert {n["entity_key"] for n in top_betweenness} == {"person:dan@enron.com", "person:eve@acme.com"}
    assert sum(n["pagerank"] for n in nodes.values()) == pytest.approx(1.0)
    assert [c.size for c in first.communities] == [4, 4]
    assert all(len(c.top_members) == 4 for c in first.communities)

    second = build_entity_graph(store, options(tmp_path, force_full=True))
    assert {t.name: rows(store, t) for t in schema.GRAPH_TABLES} == tables
    assert [c.top_members for c in second.communities] == [c.top_members for c in first.communities]


def test_an_incremental_build_keeps_communities_and_seats_a_new_node_with_its_neighbour(
    database_url: str, tmp_path: Path
) -> None:
    store = MailStore(database_url=database_url)
    store_messages(store, two_teams())
    build_entity_graph(store, options(tmp_path))
    before = {n["entity_key"]: n for n in rows(store, schema.graph_nodes)}
    # A new mailbox-day: ivy of acme writes to gus twice.
    ivy, gus = "person:ivy@acme.com", "person:gus@acme.com"
    store.replace_partitions(
        [MailboxWindow(B, (DAY_3,))],
        {
            schema.messages: [message_row(B, f"i{n}", DAY_3, f"<i{n}@x>", f"ivy {n}") for n in range(2)],
            schema.entities: [
                entity_row(B, f"i{n}", DAY_3, key, name, "person", role)
                for n in range(2)
                for key, name, role in ((ivy, "Ivy", "sender"), (gus, "Gus", "to"))
            ],
            schema.entity_links: [link_row(B, f"i{n}", DAY_3, ivy, gus, "sent_to") for n in range(2)],
        },
    )
    report = build_entity_graph(store, options(tmp_path, full_rebuild_share=0.5))
    assert report.mode == "incremental" and report.changed_edges == 1
    after = {n["entity_key"]: n for n in rows(store, schema.graph_nodes)}
    assert after[ivy]["community"] == before[gus]["community"]
    assert after[ivy]["betweenness"] is None  # computed at the next full build, not guessed
    assert {k: n["community"] for k, n in after.items() if k != ivy} == {k: n["community"] for k, n in before.items()}
    assert edges_by_key(store)[(ivy, gus, "sent_to")]["weight"] == 2

    full = build_entity_graph(store, options(tmp_path, full_rebuild_share=0.5, force_full=True))
    assert full.mode == "full"
    assert {n["entity_key"]: n["betweenness"] for n in rows(store, schema.graph_nodes)}[ivy] is not None


def test_many_changed_edges_make_a_full_build(store: MailStore, tmp_path: Path) -> None:
    build_entity_graph(store, options(tmp_path))
    store_messages(store, two_teams())  # replaces alice's partitions with many new edges
    report = build_entity_graph(store, options(tmp_path))
    assert report.mode == "full" and "edges changed" in report.reason


# -- exports -----------------------------------------------------------------------------------------------------------


def test_the_exports_load_back_as_the_graph_of_the_tables(store: MailStore, tmp_path: Path) -> None:
    report = build_entity_graph(store, options(tmp_path))
    edges = edges_by_key(store)
    for graph in (
        nx.read_graphml(report.exports.graphml),
        nx.read_gexf(report.exports.gexf),
    ):
        assert graph.number_of_nodes() == report.nodes
        assert graph.number_of_edges() == len(edges)
    assert report.picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def carol_writes_alice() -> dict[str, Any]:
    """A third e-mail, carol to alice: a new sent_to edge, so a rebuild changes every export file."""
    return sent(
        A,
        "a3",
        DAY_3,
        "<m3@enron.com>",
        "Lunch",
        entities=[(CAROL, "Carol Cole", "person", "sender"), (ALICE, "Alice Archer", "person", "to")],
        links=[(CAROL, ALICE, "sent_to")],
    )


def export_files(tmp_path: Path) -> dict[str, bytes]:
    """Every file of the export folder, hidden partial files included."""
    return {path.name: path.read_bytes() for path in sorted((tmp_path / "exports").iterdir())}


def test_the_files_are_rendered_beside_the_commit_and_replaced_only_after_it(
    store: MailStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_entity_graph(store, options(tmp_path))
    before = export_files(tmp_path)
    store_messages(store, [carol_writes_alice()])
    export_dir = tmp_path / "exports"
    seen_while_committing: list[str] = []

    def commit_lost_once_the_files_are_staged(self, frames, build) -> None:  # noqa: ANN001 - MailStore.write_graph's
        # The picture is staged last: once its partial file exists, every file is rendered and waits on us.
        deadline = time.monotonic() + 30
        while not list(export_dir.glob(".entity_graph.png.*.partial")):
            assert time.monotonic() < deadline, "the files were not rendered while the tables were committing"
            time.sleep(0.01)
        seen_while_committing.extend(path.name for path in export_dir.iterdir())
        raise OSError("server closed the connection unexpectedly")

    monkeypatch.setattr(MailStore, "write_graph", commit_lost_once_the_files_are_staged)
    with pytest.raises(OSError, match="server closed the connection"):
        build_entity_graph(store, options(tmp_path))

    # All four were staged beside the old ones while the commit ran, and none replaced them.
    assert sorted(name.split(".")[1:3] for name in seen_while_committing if name.endswith(".partial")) == [
        ["entity_graph", "gexf"],
        ["entity_graph", "graphml"],
        ["entity_graph", "json"],
        ["entity_graph", "png"],
    ]
    assert export_files(tmp_path) == before  # the partial files are gone too

    monkeypatch.undo()
    report = build_entity_graph(store, options(tmp_path))
    after = export_files(tmp_path)
    assert sorted(after) == sorted(before) and all(after[name] != before[name] for name in before)
    assert nx.read_graphml(report.exports.graphml).has_edge(CAROL, ALICE)


def test_a_file_that_fails_to_render_fails_the_build_after_the_tables_landed(
    store: MailStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_entity_graph(store, options(tmp_path))
    before = export_files(tmp_path)
    store_messages(store, [carol_writes_alice()])

    def disk_full(graph: nx.MultiDiGraph) -> tuple[list[bytes], int]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exports, "gexf_chunks", disk_full)
    with pytest.raises(OSError, match="No space left"):
        build_entity_graph(store, options(tmp_path))

    assert export_files(tmp_path) == before  # GraphML and JSON were rendered, and renamed with nothing
    assert (CAROL, ALICE, "sent_to") in edges_by_key(store)  # the tables are committed: the next build re-renders
    assert len(rows(store, schema.graph_builds)) == 2


# -- the checks ----------------------------------------------------------------------------------------------------


def check_outcomes(store: MailStore, aliases=(), mentions: int = 0, merged: int = 0) -> dict[str, bool]:  # noqa: ANN001
    results = entity_graph_check_results(graph_check_facts(store), aliases, mentions, merged, (0.1, 0.9))
    return {r.check_name: r.passed for r in results}


def test_the_checks_pass_on_a_sound_graph(store: MailStore, tmp_path: Path) -> None:
    report = build_entity_graph(store, options(tmp_path))
    assert set(check_outcomes(store, (), report.name_mentions, report.names_merged).values()) == {True}


def test_an_edge_without_its_emails_fails_provenance(store: MailStore, tmp_path: Path) -> None:
    build_entity_graph(store, options(tmp_path))
    table = schema.graph_edge_messages
    with store.engine.begin() as conn:
        conn.execute(table.delete().where(table.c.kind == "cc_to"))
    assert check_outcomes(store)["graph_edges_have_provenance"] is False


def test_provenance_naming_a_message_the_store_lost_fails(store: MailStore, tmp_path: Path) -> None:
    build_entity_graph(store, options(tmp_path))
    with store.engine.begin() as conn:
        conn.execute(schema.messages.delete().where(schema.messages.c.message_id == "a1"))
    assert check_outcomes(store)["graph_edges_have_provenance"] is False


def test_a_person_holding_two_addresses_fails_unless_an_alias_says_so(store: MailStore, tmp_path: Path) -> None:
    build_entity_graph(store, options(tmp_path))
    nodes = schema.graph_nodes
    with store.engine.begin() as conn:
        conn.execute(update(nodes).where(nodes.c.entity_key == ALICE).values(addresses=[A, "a.archer@enron.com"]))
    assert check_outcomes(store)["one_address_per_person"] is False
    assert check_outcomes(store, (("a.archer@enron.com", A),))["one_address_per_person"] is True


def test_merge_share_outside_the_band_warns(store: MailStore, tmp_path: Path) -> None:
    build_entity_graph(store, options(tmp_path))
    assert check_outcomes(store, (), mentions=100, merged=50)["name_merge_share_in_band"] is True
    assert check_outcomes(store, (), mentions=100, merged=0)["name_merge_share_in_band"] is False  # merges nothing
    assert check_outcomes(store, (), mentions=100, merged=100)["name_merge_share_in_band"] is False  # everything
    assert check_outcomes(store, (), mentions=0, merged=0)["name_merge_share_in_band"] is True  # nothing to merge
    assert check_outcomes(store, (), mentions=5, merged=0)["name_merge_share_in_band"] is True  # too few to judge
    assert check_outcomes(store, (), mentions=50, merged=0)["name_merge_share_in_band"] is False


def test_an_empty_graph_over_stored_links_fails(store: MailStore, tmp_path: Path) -> None:
    build_entity_graph(store, options(tmp_path))
    with store.engine.begin() as conn:
        conn.execute(schema.graph_edge_messages.delete())
        conn.execute(schema.graph_edges.delete())
    assert check_outcomes(store)["graph_not_empty"] is False


def test_an_empty_store_builds_an_empty_graph(database_url: str, tmp_path: Path) -> None:
    store = MailStore(database_url=database_url)
    report = build_entity_graph(store, options(tmp_path))
    assert (report.nodes, report.edges, report.components) == (0, 0, 0)
    assert nx.read_graphml(report.exports.graphml).number_of_nodes() == 0
    assert set(check_outcomes(store).values()) == {True}  # no links, so an empty graph is right
