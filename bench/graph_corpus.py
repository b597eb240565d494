"""The entity graph of the shared corpus: what identity resolution and one-count-per-e-mail do to it.

What it runs. The 10 mailboxes of atom_pipelines_tests/corpus/enron_dev.jsonl.gz (2,853 messages), synced,
extracted with the heuristic chain and linked by the pipeline's own functions into a throwaway PostgreSQL
database (``atom_bench_<random>`` on 127.0.0.1:5432, dropped afterwards), then ``build_entity_graph`` twice:
a full build, and a second build of the same data (which must be incremental and give identical tables).

What it prints.
* people: distinct person keys as extracted (addresses and unresolved body names) and person nodes after
  resolution; body-name mentions, how many were merged and by which rule, and how many refused and why;
* 30 merges and 30 refusals, for a reviewer to judge (each: mailbox, the name as written, the person, the rule);
* one count per e-mail: links, link counts removed because another mailbox's copy of the same e-mail was
  already counted, e-mails held by more than one mailbox;
* the build's seconds per stage, and whether the re-run gave the same graph;
* Louvain: the build's (scikit-network) against networkx's on the same undirected graph, in this process:
  seconds, communities and modularity of each.

    python bench/graph_corpus.py [--review 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # atom_pipelines_tests is not installed: its corpus helpers come from the checkout
import networkx as nx  # noqa: E402
import pandas as pd  # noqa: E402

from atom_pipelines.entity_graph.analysis import (  # noqa: E402
    LOUVAIN_SEED,
    GraphOptions,
    _communities,
    _networks,
    build_entity_graph,
    email_keys,
)
from atom_pipelines.entity_graph.links import link_entities  # noqa: E402
from atom_pipelines.extraction.extractor import EntityExtractor  # noqa: E402
from atom_pipelines.extraction.run import extract_entities  # noqa: E402
from atom_pipelines.mail.source import ExportMailSource  # noqa: E402
from atom_pipelines.mail.sync import sync_messages  # noqa: E402
from atom_pipelines.partitions import MailboxWindow  # noqa: E402
from atom_pipelines.store import schema  # noqa: E402
from atom_pipelines.store.resource import MailStore  # noqa: E402
from atom_pipelines_tests.conftest import fresh_postgres_database, plain_corpus_tempdir  # noqa: E402
from bench.corpus_backfill import corpus_spans  # noqa: E402


def windows() -> list[MailboxWindow]:
    spans, _, _ = corpus_spans()
    out = []
    for mailbox, (first, last) in spans.items():
        days = tuple(first + dt.timedelta(days=n) for n in range((last - first).days + 1))
        out.append(MailboxWindow(mailbox, days))
    return out


def load_corpus(store: MailStore) -> None:
    source = ExportMailSource(export_dir=str(plain_corpus_tempdir()))
    extractor = EntityExtractor(chain="heuristic")
    for window in windows():
        sync_messages(source, store, [window])
        extract_entities(extractor, store, [window])
        link_entities(store, [window])


def table_rows(store: MailStore, table) -> list[dict]:  # noqa: ANN001 - a sqlalchemy Table
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).order_by(*table.primary_key.columns))]


def shared_emails(store: MailStore) -> tuple[int, int]:
    """(e-mails held by more than one mailbox, message rows that are such a second or later copy), by the
    build's own rule (``email_keys``: a shared Message-ID, else the content fingerprint within a day)."""
    copies = email_keys(store.email_identities())["message_key"].value_counts()
    shared = copies[copies > 1]
    return len(shared), int((shared - 1).sum())


def louvain_comparison(tables: dict[str, list[dict]]) -> str:
    """The build's Louvain (scikit-network) against networkx's on the same undirected graph, in this process:
    seconds and modularity of each partition."""
    nodes = pd.DataFrame(tables["graph_nodes"])
    edges = pd.DataFrame(tables["graph_edges"])
    undirected, _ = _networks(nodes, edges)
    started = time.perf_counter()
    ours = _communities(undirected)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = nx.community.louvain_communities(undirected, weight="weight", seed=LOUVAIN_SEED)
    theirs_s = time.perf_counter() - started
    groups: dict[int, set] = {}
    for node, community in ours.items():
        groups.setdefault(community, set()).add(node)
    q_ours = nx.community.modularity(undirected, list(groups.values()), weight="weight")
    q_theirs = nx.community.modularity(undirected, theirs, weight="weight")
    return (
        f"Louvain on {undirected.number_of_nodes()} nodes, {undirected.number_of_edges()} undirected edges: "
        f"scikit-network (the build's) {ours_s:.2f} s, {len(groups)} communities, modularity {q_ours:.4f}; "
        f"networkx {theirs_s:.2f} s, {len(theirs)} communities, modularity {q_theirs:.4f}; "
        f"speed-up {theirs_s / ours_s:.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--review", type=int, default=30, help="merges and refusals printed for review")
    args = parser.parse_args()
    with fresh_postgres_database("atom_bench") as url, tempfile.TemporaryDirectory() as exports:
        store = MailStore(database_url=url)
        load_corpus(store)
        options = GraphOptions(export_dir=Path(exports))
        first = build_entity_graph(store, options)
        tables_first = {t.name: table_rows(store, t) for t in schema.GRAPH_TABLES}
        second = build_entity_graph(store, options)
        tables_second = {t.name: table_rows(store, t) for t in schema.GRAPH_TABLES}
        decisions = table_rows(store, schema.identity_decisions)
        shared, extra_copies = shared_emails(store)

    print(f"people: {first.people_before} person keys as extracted -> {first.people_after} person nodes")
    mentions = [d for d in decisions if d["mailbox"]]
    merged = [d for d in mentions if d["decision"] == "merged"]
    refused = [d for d in mentions if d["decision"] == "refused"]
    print(f"body-name mentions: {len(mentions)}; merged {len(merged)} ({len(merged) / max(len(mentions), 1):.1%})")
    print(f"  merged by rule: {dict(Counter(d['rule'] for d in merged))}")
    print(f"  refused by rule: {dict(Counter(d['rule'] for d in refused))}")
    picker = random.Random(11)
    for title, rows in (("merges", merged), ("refusals", refused)):
        print(f"\n{min(args.review, len(rows))} {title} (a fixed-seed sample):")
        for d in sorted(
            picker.sample(rows, min(args.review, len(rows))), key=lambda d: (d["mailbox"], d["mention_name"])
        ):
            target = d["person_key"] or "-"
            print(f"  {d['mailbox']:<28} {d['mention_name']!r:<26} -> {target:<40} {d['rule']}: {d['detail'][:90]}")
    print(
        f"\none count per e-mail: {first.links} links; {first.copies_removed} link counts removed as copies of an "
        f"e-mail another mailbox holds; {shared} e-mails held by more than one mailbox ({extra_copies} extra copies)"
    )
    print(f"resolution: {first.resolution_repeats} repeated links and {first.self_links_dropped} self links dropped")
    print(
        f"graph: {first.nodes} nodes, {first.edges} edges, {first.components} components, "
        f"{len(first.communities)} communities listed"
    )
    print(f"full build ({first.reason}): {sum(first.seconds.values()):.2f} s {first.seconds}")
    print(f"second build: {second.mode} ({second.reason}): {sum(second.seconds.values()):.2f} s")
    print(louvain_comparison(tables_first))
    same = tables_first == tables_second
    print(f"second build gave identical graph tables: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
