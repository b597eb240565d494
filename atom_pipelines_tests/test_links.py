"""Neural links and the entity graph (``atom_pipelines.entity_graph.links``, ``atom_pipelines.entity_graph.analysis``).

``links_for_message`` decides which edges the graph has: communication (sender -> To / Cc), ``works_at`` (a
person to the organization of their address domain, only when that organization is an entity of the same
message, otherwise the link would dangle) and ``co_mention`` between entities the *text* mentions. Header-only
participants must not co-mention, or every recipient of a mailing list becomes a clique; an undirected
co-mention stored in both directions, or a self loop, double-counts degree and PageRank. The graph built from
the stored links is tested in test_entity_graph.py.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from atom_pipelines.entity_graph.links import dangling_links, links_for_message
from atom_pipelines.extraction.heuristic import HeuristicProvider
from atom_pipelines.extraction.providers import MessageText, Participant
from atom_pipelines_tests.helpers import entity_row, link_row

ALICE = "person:alice@enron.com"
BOB = "person:bob@enron.com"
CAROL = "person:carol@example.com"
DAVE = "person:dave@gmail.com"
ENRON = "organization:enron.com"
EXAMPLE = "organization:example.com"
MONEY = "money:usd:2500"
DATE = "date:2001-10-15"


def entity(key: str, roles: str) -> dict[str, str]:
    """An entity row as links_for_message reads it (roles comma-separated, as the store keeps them)."""
    return {"entity_key": key, "roles": roles}


def kinds(edges: list[tuple[str, str, str]]) -> dict[str, set[tuple[str, str]]]:
    by_kind: dict[str, set[tuple[str, str]]] = {}
    for source, target, kind in edges:
        by_kind.setdefault(kind, set()).add((source, target))
    return by_kind


# -- links_for_message -------------------------------------------------------------------------------------------


def test_sender_links_to_to_and_cc_recipients() -> None:
    edges = links_for_message([entity(ALICE, "sender"), entity(BOB, "to"), entity(CAROL, "cc"), entity(DAVE, "to,cc")])
    by_kind = kinds(edges)
    assert by_kind["sent_to"] == {(ALICE, BOB), (ALICE, DAVE)}
    # Someone in both To and Cc is one sent_to, not also a cc_to.
    assert by_kind["cc_to"] == {(ALICE, CAROL)}


def test_no_sender_no_communication_links() -> None:
    edges = links_for_message([entity(BOB, "to"), entity(CAROL, "cc")])
    assert edges == []


def test_sender_who_is_also_a_recipient_gets_no_self_loop() -> None:
    edges = links_for_message([entity(ALICE, "sender,to"), entity(BOB, "to")])
    assert edges == [(ALICE, BOB, "sent_to")]


def test_works_at_only_when_the_organization_entity_is_present() -> None:
    with_org = links_for_message([entity(ALICE, "sender"), entity(ENRON, "domain"), entity(CAROL, "to")])
    assert kinds(with_org)["works_at"] == {(ALICE, ENRON)}  # carol@example.com: example.com is not an entity

    without_org = links_for_message([entity(ALICE, "sender"), entity(BOB, "to")])
    assert "works_at" not in kinds(without_org)


def test_works_at_uses_the_registered_domain_and_skips_free_mail() -> None:
    edges = links_for_message(
        [
            entity("person:jane@mail.example.co.uk", "sender"),
            entity("organization:example.co.uk", "domain"),
            entity(DAVE, "to"),  # gmail: never an organization, even if a gmail "organization" were present
            entity("organization:gmail.com", "domain"),
        ]
    )
    assert kinds(edges)["works_at"] == {("person:jane@mail.example.co.uk", "organization:example.co.uk")}


def test_person_name_keys_have_no_employer() -> None:
    edges = links_for_message([entity("person-name:john", "greeting"), entity(ENRON, "domain")])
    assert "works_at" not in kinds(edges)


def test_co_mention_among_text_role_entities_only() -> None:
    edges = links_for_message(
        [
            entity(ALICE, "sender,signature"),  # header and text: takes part in co-mention
            entity(BOB, "to"),  # header only: does not
            entity(CAROL, "cc"),
            entity(ENRON, "domain"),
            entity(MONEY, "text"),
            entity(DATE, "subject"),
            entity("person-name:john", "greeting"),
        ]
    )
    co = kinds(edges)["co_mention"]
    text_keys = sorted([ALICE, MONEY, DATE, "person-name:john"])
    assert co == {(a, b) for i, a in enumerate(text_keys) for b in text_keys[i + 1 :]}
    assert len(co) == 6  # 4 choose 2
    assert not any({BOB, CAROL, ENRON} & {a, b} for a, b in co)


def test_co_mention_stored_once_per_unordered_pair_smaller_key_first() -> None:
    # Given in descending key order, so "source < target" cannot come from the input order.
    edges = links_for_message([entity(key, "text") for key in sorted([ALICE, BOB, MONEY, DATE], reverse=True)])
    assert all(kind == "co_mention" for _, _, kind in edges)
    assert all(source < target for source, target, _ in edges)
    pairs = [frozenset((s, t)) for s, t, _ in edges]
    assert len(pairs) == len(set(pairs)) == 6


def test_no_self_loops_and_no_duplicate_edges_on_a_busy_message() -> None:
    rows = [
        entity(ALICE, "sender,text,signature"),
        entity(BOB, "to,greeting"),
        entity(CAROL, "to,cc,text"),
        entity(ENRON, "domain"),
        entity(EXAMPLE, "domain"),
        entity(MONEY, "text"),
        entity(DATE, "subject,text"),
    ]
    edges = links_for_message(rows)
    assert len(edges) == len(set(edges))
    assert all(source != target for source, target, _ in edges)
    assert Counter(kind for _, _, kind in edges) == {
        "sent_to": 2,  # alice -> bob, alice -> carol
        "works_at": 3,  # alice, bob -> enron.com; carol -> example.com
        "co_mention": 10,  # alice, bob, carol, money, date: 5 choose 2
    }


def test_links_of_a_heuristic_extraction() -> None:
    """The roles the heuristic provider writes are the roles links_for_message reads."""
    msg = MessageText(
        mailbox="vince.kaminski@enron.com",
        message_id="msg-1",
        subject="Fee",
        sender=Participant("Iris Mack", "iris.mack@enron.com"),
        to=(Participant("Kaminski, Vince J", "vince.kaminski@enron.com"),),
        cc=(Participant("Hill Huntington", "hillh@stanford.edu"),),
        new_text="Hi Vince,\n\nThe fee is $2,500.",
        signature="",
        body="Hi Vince,\n\nThe fee is $2,500.",
    )
    mentions = HeuristicProvider().extract(msg).mentions
    rows = [entity(m.entity_key, ",".join(r.value for r in m.roles)) for m in mentions]
    iris, vince, hill = "person:iris.mack@enron.com", "person:vince.kaminski@enron.com", "person:hillh@stanford.edu"
    assert kinds(links_for_message(rows)) == {
        "sent_to": {(iris, vince)},
        "cc_to": {(iris, hill)},
        "works_at": {(iris, ENRON), (vince, ENRON), (hill, "organization:stanford.edu")},
        "co_mention": {(MONEY, vince)},  # the greeting named Vince; the fee is in the text
    }


# -- dangling links --------------------------------------------------------------------------------------------

DAY_1 = dt.date(2001, 10, 1)


def test_dangling_links_name_the_missing_end() -> None:
    entities = [entity_row("a@x.com", "m1", DAY_1, ALICE, "Alice", "person", "sender")]
    links = [
        link_row("a@x.com", "m1", DAY_1, ALICE, BOB, "sent_to"),
        link_row("a@x.com", "m2", DAY_1, ALICE, ALICE + "x", "sent_to"),
    ]
    found = dangling_links(links, entities)
    assert [(link["message_id"], link["missing_end"]) for link in found] == [
        ("m1", "target_key"),
        ("m2", "source_key"),
        ("m2", "target_key"),
    ]
