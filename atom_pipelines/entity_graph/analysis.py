"""One graph over every link of every mailbox, the work behind ``entity_graph``.

A build reads the stored links, entities and message ids in bulk and, with pandas (a Python loop over a
million links is most of a build's time):

1. resolves identities (``identity.py``): body names merged into the one correspondent they name, aliases;
2. counts each e-mail once: a message held by several mailboxes (same ``internetMessageId``, else the same
   content hash) is one piece of evidence for an edge, however many copies were linked;
3. aggregates typed edges (kinds stay apart; co-mentions undirected, stored once smaller key first) with
   their first and last day and up to N message ids behind each;
4. computes degree, weighted degree, weighted PageRank, betweenness and Louvain communities on networkx;
5. writes ``graph_nodes``, ``graph_edges``, ``graph_edge_messages``, ``graph_communities`` and
   ``identity_decisions`` in one transaction, and meanwhile renders the exports and the picture
   (``exports.py``) beside their final names; they replace the previous files once the transaction commits.

**Full or incremental.** Community detection and betweenness are most of a full build's time at scale and
change little when one mailbox-day arrives, so a build that changes at most ``full_rebuild_share`` of the
edges, within ``full_rebuild_hours`` of the last full build, keeps them: existing nodes keep their community
and betweenness, a new node joins the community of its strongest neighbour (betweenness NULL until the next
full build). Everything else (identities, weights, provenance, degrees, PageRank) is exact in every build. ``graph_builds`` says which mode ran and why.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse import csgraph
from sknetwork.clustering import Louvain
from sqlalchemy import func, select

from atom_pipelines.entity_graph import exports
from atom_pipelines.entity_graph.identity import MERGED, Resolution, resolve_identities
from atom_pipelines.store import schema
from atom_pipelines.store.resource import MailStore

TOP_N = 15
#: Members listed per community (graph_communities.top_members, the asset's metadata).
COMMUNITY_TOP_MEMBERS = 5
#: Fixed seeds: the same data gives the same communities and the same sampled betweenness.
LOUVAIN_SEED = 42
BETWEENNESS_SEED = 42
#: Up to this many nodes betweenness is exact (Brandes, O(nodes x edges)); above, it is estimated from this
#: many sampled sources, which bounds its time at k breadth-first searches of the whole graph
#: (about 1 s each at 100,000 nodes and 500,000 edges on this machine).
EXACT_BETWEENNESS_MAX_NODES = 5_000
BETWEENNESS_SAMPLES = 8
#: Copies of one e-mail with the same content arrive seconds apart (Sent Items and each Inbox); a day covers
#: delayed delivery and time-zone slips of exports without merging a daily report sent again tomorrow.
COPY_WINDOW = pd.Timedelta(hours=24)
#: Edge kinds without a direction (stored once, smaller key first).
UNDIRECTED_KINDS = frozenset({"co_mention"})


@dataclass(frozen=True)
class GraphOptions:
    export_dir: Path
    aliases: Mapping[str, str] = field(default_factory=dict)
    never_merge: Sequence[tuple[str, str]] = ()
    edge_messages: int = 20
    full_rebuild_share: float = 0.05
    full_rebuild_hours: float = 24.0
    force_full: bool = False


@dataclass
class CommunitySummary:
    community: int
    size: int
    people: int
    top_members: list[dict[str, Any]]


@dataclass
class GraphReport:
    mode: str  # "full" or "incremental"
    reason: str
    links: int
    copies_removed: int  # link counts of an e-mail already counted from another mailbox's copy
    resolution_repeats: int  # links that became the same edge of the same message once names were resolved
    self_links_dropped: int  # links whose two ends resolved to one entity
    nodes: int
    edges: int
    changed_edges: int
    people_before: int  # distinct person keys as extracted (addresses and unresolved body names)
    people_after: int  # distinct person nodes after resolution
    name_mentions: int
    names_merged: int
    components: int
    largest_component: int
    communities: list[CommunitySummary]
    top_people: list[dict[str, Any]]
    top_by_pagerank: list[dict[str, Any]]
    exports: exports.GraphExports
    picture: Path
    seconds: dict[str, float]
    built_at: dt.datetime


class _Stopwatch:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now


def build_entity_graph(store: MailStore, options: GraphOptions, now: dt.datetime | None = None) -> GraphReport:
    """Rebuild the graph tables, the exports and the picture from the store (see the module docstring)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    watch = _Stopwatch()
    links, entities, message_keys = _read_inputs(store)
    watch.lap("read")

    person_rows = entities[entities["entity_type"] == "person"]
    resolution = resolve_identities(
        person_rows[["mailbox", "message_id", "entity_key", "name", "roles"]].to_dict("records"),
        aliases=dict(options.aliases),
        never_merge=options.never_merge,
    )
    watch.lap("resolve")

    entities = _resolved_entities(entities, resolution, message_keys)
    evidence, counts = _edge_evidence(links, entities, resolution, message_keys)
    edges = _edges(evidence)
    edge_messages = _edge_messages(evidence, options.edge_messages)
    nodes = _nodes(entities, resolution)
    watch.lap("aggregate")

    undirected, directed = _networks(nodes, edges)
    watch.lap("networks")

    previous = store.latest_graph_build()
    changed = _changed_edges(store, edges) if previous else len(edges)
    mode, reason = _mode(previous, changed, len(edges), options, now)
    stored = _stored_metrics(store) if mode == "incremental" else None
    name_mentions = sum(1 for d in resolution.decisions if d.mailbox)
    names_merged = sum(1 for d in resolution.decisions if d.mailbox and d.decision == MERGED)

    # The tables are written on a second thread while this one computes the metrics: COPY waits on the
    # database server, which indexes the rows on the other core. The writer takes the node and community
    # tables when they are ready and commits last, so the whole graph lands in one transaction; a failure
    # here fails the futures it waits on, and the transaction rolls back.
    nodes_ready: Future[pd.DataFrame] = Future()
    communities_ready: Future[pd.DataFrame] = Future()
    build_ready: Future[dict[str, Any]] = Future()
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="graph-tables") as writer,
        exports.StagedFiles() as staged,
    ):
        written = writer.submit(
            store.write_graph,
            {
                schema.identity_decisions: pd.DataFrame(
                    [d.__dict__ for d in resolution.decisions], columns=_columns(schema.identity_decisions)
                ),
                schema.graph_edges: _table_frame(edges, schema.graph_edges),
                schema.graph_edge_messages: _table_frame(edge_messages, schema.graph_edge_messages),
                schema.graph_nodes: nodes_ready,
                schema.graph_communities: communities_ready,
            },
            build_ready,
        )
        try:
            nodes["degree"] = nodes["entity_key"].map(dict(undirected.degree())).astype("int64")
            nodes["weighted_degree"] = nodes["entity_key"].map(dict(undirected.degree(weight="weight"))).astype(float)
            nodes["pagerank"] = nodes["entity_key"].map(_pagerank(directed))
            watch.lap("pagerank")
            if stored is None:
                nodes["community"] = nodes["entity_key"].map(_communities(undirected))
                watch.lap("communities")
                nodes["betweenness"] = nodes["entity_key"].map(_betweenness(undirected))
                watch.lap("betweenness")
                communities_at = now
            else:
                nodes["community"] = nodes["entity_key"].map(_carried_communities(undirected, stored))
                nodes["betweenness"] = nodes["entity_key"].map(stored["betweenness"])
                communities_at = previous["communities_at"]
            nodes["betweenness"] = nodes["betweenness"].astype(object).where(nodes["betweenness"].notna(), None)
            summaries = _community_summaries(nodes)
            nodes_ready.set_result(_table_frame(nodes, schema.graph_nodes))
            communities_ready.set_result(
                pd.DataFrame([c.__dict__ for c in summaries], columns=_columns(schema.graph_communities))
            )
            watch.lap("metrics")
            build_ready.set_result(
                {
                    "built_at": now,
                    "mode": mode,
                    "reason": reason,
                    "communities_at": communities_at,
                    "links": len(links),
                    "copies_removed": counts["copies_removed"],
                    "nodes": len(nodes),
                    "edges": len(edges),
                    "changed_edges": changed,
                    "name_mentions": name_mentions,
                    "names_merged": names_merged,
                    "seconds": round(sum(watch.seconds.values()), 3),  # up to the tables, not the exports
                }
            )
        except BaseException as exc:
            for future in (nodes_ready, communities_ready, build_ready):
                if not future.done():
                    future.set_exception(exc)
            raise
        # While the writer finishes (its COPY and commit wait on the database server, which indexes the rows
        # on the other core), this thread renders the files beside their final names. They replace the
        # previous files only after the commit, so they never show a graph the store does not hold; if the
        # tables fail, no file changes. A file that fails to render fails the build after the tables landed,
        # as when the files were written after them.
        try:
            graph = _export_graph(nodes, edges)
            exported = exports.write_exports(graph, options.export_dir, staged)
            watch.lap("exports")
            picture = exports.draw_picture(graph, options.export_dir / exports.PICTURE_NAME, staged=staged)
            watch.lap("picture")
        finally:
            written.result()
        watch.lap("write_tables")  # what the writer still needed after the files: the rest ran beside them
        staged.commit()

    components = list(nx.connected_components(undirected))
    people = nodes[nodes["entity_type"] == "person"]
    return GraphReport(
        mode=mode,
        reason=reason,
        links=len(links),
        copies_removed=counts["copies_removed"],
        resolution_repeats=counts["resolution_repeats"],
        self_links_dropped=counts["self_links"],
        nodes=len(nodes),
        edges=len(edges),
        changed_edges=changed,
        people_before=int(person_rows["entity_key"].nunique()),
        people_after=len(people),
        name_mentions=name_mentions,
        names_merged=names_merged,
        components=len(components),
        largest_component=max((len(c) for c in components), default=0),
        communities=summaries[:TOP_N],
        top_people=_ranking(people),
        top_by_pagerank=_ranking(nodes),
        exports=exported,
        picture=picture,
        seconds=watch.seconds,
        built_at=now,
    )


# -- reading ---------------------------------------------------------------------------------------------------


def _read_inputs(store: MailStore) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    links, ents = schema.entity_links, schema.entities
    link_frame = store.frame(
        select(links.c.mailbox, links.c.message_id, links.c.source_key, links.c.target_key, links.c.kind, links.c.day)
    )
    entity_frame = store.frame(
        select(
            ents.c.mailbox, ents.c.message_id, ents.c.entity_key, ents.c.name, ents.c.entity_type, ents.c.roles
        ).add_columns(ents.c.day)
    )
    return link_frame, entity_frame, email_keys(store.email_identities())


def email_keys(messages: pd.DataFrame) -> pd.DataFrame:
    """(mailbox, message_id) -> the key of the e-mail itself, the same for each mailbox's copy of it.

    Graph gives each copy its own ``id``. Two copies are one e-mail when they share a Message-ID (Exchange
    keeps it in the sender's Sent Items and every recipient's Inbox) or, for exports that gave each copy its
    own Message-ID (the shared corpus does), when they share a content fingerprint (sender, To, Cc, subject,
    new text) and were received within ``COPY_WINDOW`` of each other. Copies are the connected components of
    both relations (scipy), so a chain of either kind is one e-mail. The key is the smallest Message-ID of
    the component, else its fingerprint, so it does not depend on which mailboxes were synced first.
    """
    if messages.empty:
        return pd.DataFrame(columns=["mailbox", "message_id", "message_key"])
    rows = messages.sort_values(["fingerprint", "received_at", "mailbox", "message_id"]).reset_index(drop=True)
    # The same fingerprint within the window of the previous copy: the same e-mail.
    gap = rows["received_at"].diff() > COPY_WINDOW
    new_fingerprint = rows["fingerprint"] != rows["fingerprint"].shift()
    content_group = (gap | new_fingerprint).cumsum().to_numpy()
    internet_id = rows["internet_message_id"].fillna("").str.strip().str.strip("<>").str.strip().to_numpy()
    index = np.arange(len(rows))
    first_of_content = pd.Series(index).groupby(content_group).transform("min").to_numpy()
    with_id = internet_id != ""
    first_of_id = pd.Series(index[with_id]).groupby(internet_id[with_id]).transform("min").to_numpy()
    pairs_from = np.concatenate([index, index[with_id]])
    pairs_to = np.concatenate([first_of_content, first_of_id])
    same_email = sparse.coo_matrix((np.ones(len(pairs_from)), (pairs_from, pairs_to)), shape=(len(rows), len(rows)))
    _count, component = csgraph.connected_components(same_email, directed=False)
    # The smallest Message-ID of each component, else its smallest fingerprint: minima of sorted codes (integer
    # group-bys; a min over strings per group would be a Python call per e-mail).
    id_codes, id_values = pd.factorize(pd.Series(np.where(with_id, internet_id, None)), sort=True)
    none = len(id_values)
    smallest_id = pd.Series(np.where(id_codes < 0, none, id_codes)).groupby(component).transform("min").to_numpy()
    fp_codes, fp_values = pd.factorize(rows["fingerprint"], sort=True)
    smallest_fp = pd.Series(fp_codes).groupby(component).transform("min").to_numpy()
    id_keys = np.asarray(["mid:" + str(v) for v in id_values] + [""], dtype=object)
    fp_keys = np.asarray(["fp:" + str(v) for v in fp_values], dtype=object)
    key = pd.Series(np.where(smallest_id < none, id_keys[smallest_id], fp_keys[smallest_fp]))
    return pd.DataFrame({"mailbox": rows["mailbox"], "message_id": rows["message_id"], "message_key": key.to_numpy()})


# -- resolving and counting -----------------------------------------------------------------------------------


def _canonical_keys(frame: pd.DataFrame, key_column: str, resolution: Resolution) -> pd.Series:
    """Each row's entity key as resolution has it. Only body names and aliases change: those rows (a few in a
    hundred) are looked up, the rest keep their key without a Python call each."""
    keys = frame[key_column]
    changes = keys.str.startswith("person-name:") | keys.isin(list(resolution.aliases))
    canonical = keys.copy()
    canonical[changes] = [
        resolution.resolve(m, k) for m, k in zip(frame["mailbox"][changes], keys[changes], strict=True)
    ]
    return canonical


def _with_message_keys(frame: pd.DataFrame, message_keys: pd.DataFrame) -> pd.DataFrame:
    merged = frame.merge(message_keys, on=["mailbox", "message_id"], how="left")
    # A link or entity of a message the store no longer holds still counts, as its own e-mail.
    missing = merged["message_key"].isna()
    merged.loc[missing, "message_key"] = "row:" + merged["mailbox"][missing] + "/" + merged["message_id"][missing]
    return merged


def _resolved_entities(entities: pd.DataFrame, resolution: Resolution, message_keys: pd.DataFrame) -> pd.DataFrame:
    entities = entities.copy()
    entities["node"] = _canonical_keys(entities, "entity_key", resolution)
    return _with_message_keys(entities, message_keys)


def _edge_evidence(
    links: pd.DataFrame, entities: pd.DataFrame, resolution: Resolution, message_keys: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per (edge, e-mail): the resolved links, each e-mail counted once however many mailboxes hold it."""
    links = links.copy()
    links["source"] = _canonical_keys(links, "source_key", resolution)
    links["target"] = _canonical_keys(links, "target_key", resolution)
    self_link = links["source"] == links["target"]
    links = links[~self_link]
    # Resolution can turn a co-mention around (its ends sort differently once resolved): put it back in order.
    undirected = links["kind"].isin(UNDIRECTED_KINDS) & (links["source"] > links["target"])
    links.loc[undirected, ["source", "target"]] = links.loc[undirected, ["target", "source"]].to_numpy()
    links = _with_message_keys(links, message_keys)
    # The first copy by (mailbox, message id) is the one provenance points at: the same on every build.
    links = links.sort_values(["mailbox", "message_id"], kind="stable")
    per_copy = links.drop_duplicates(["source", "target", "kind", "mailbox", "message_id"])
    per_email = per_copy.drop_duplicates(["source", "target", "kind", "message_key"])
    counts = {
        "self_links": int(self_link.sum()),
        "resolution_repeats": len(links) - len(per_copy),
        "copies_removed": len(per_copy) - len(per_email),
    }
    return per_email[["source", "target", "kind", "mailbox", "message_id", "day"]], counts


def _edges(evidence: pd.DataFrame) -> pd.DataFrame:
    edges = (
        evidence.groupby(["source", "target", "kind"], sort=True)
        .agg(weight=("day", "size"), first_seen=("day", "min"), last_seen=("day", "max"))
        .reset_index()
        .rename(columns={"source": "source_key", "target": "target_key"})
    )
    edges["directed"] = ~edges["kind"].isin(UNDIRECTED_KINDS)
    return edges


def _edge_messages(evidence: pd.DataFrame, per_edge: int) -> pd.DataFrame:
    latest_first = evidence.sort_values(
        ["source", "target", "kind", "day", "mailbox", "message_id"], ascending=[True, True, True, False, True, True]
    )
    kept = latest_first.groupby(["source", "target", "kind"], sort=False).head(per_edge)
    return kept.rename(columns={"source": "source_key", "target": "target_key"})


def _nodes(entities: pd.DataFrame, resolution: Resolution) -> pd.DataFrame:
    """One row per resolved entity: label, type, every name, distinct e-mails, first and last day seen."""
    grouped = entities.groupby("node", sort=True)
    nodes = grouped.agg(
        message_count=("message_key", "nunique"), first_seen=("day", "min"), last_seen=("day", "max")
    ).reset_index()
    types = entities.groupby(["node", "entity_type"]).size().reset_index(name="n")
    types = types.sort_values(["node", "n", "entity_type"], ascending=[True, False, True]).drop_duplicates("node")
    nodes["entity_type"] = nodes["node"].map(types.set_index("node")["entity_type"])
    names = entities.groupby(["node", "name"]).size().reset_index(name="n")
    names = names.sort_values(["node", "n", "name"], ascending=[True, False, True])
    nodes["names"] = nodes["node"].map(_lists_by_group(names["node"], names["name"]))
    labels = []
    for key, node_names in zip(nodes["node"], nodes["names"], strict=True):
        # A person's label is the name most often seen with their address; a body name is not a display name.
        label = resolution.label(key) if key.startswith("person:") else None
        labels.append(label or node_names[0])
    nodes["label"] = labels
    addresses = entities.loc[entities["entity_key"].str.startswith("person:"), ["node", "entity_key"]]
    addresses = addresses.drop_duplicates().sort_values(["node", "entity_key"])
    by_node = _lists_by_group(addresses["node"], addresses["entity_key"].str.removeprefix("person:"))
    nodes["addresses"] = [by_node.get(key, []) for key in nodes["node"]]
    return nodes.rename(columns={"node": "entity_key"})


def _lists_by_group(groups: pd.Series, values: pd.Series) -> dict[Any, list[Any]]:
    """group -> its values in order, for rows already sorted by group (numpy splits, not a Python call per
    group: a graph has a hundred thousand nodes)."""
    if groups.empty:
        return {}
    group_array, value_array = groups.to_numpy(), values.to_numpy()
    starts = np.flatnonzero(np.r_[True, group_array[1:] != group_array[:-1]])
    return dict(zip(group_array[starts], (part.tolist() for part in np.split(value_array, starts[1:])), strict=True))


# -- networks and metrics -------------------------------------------------------------------------------------


def _networks(nodes: pd.DataFrame, edges: pd.DataFrame) -> tuple[nx.Graph, nx.DiGraph]:
    """The undirected graph (weights summed over kinds and directions: who is close to whom) for degree,
    communities and betweenness, and the directed one (a co-mention both ways) for PageRank."""
    source, target = edges["source_key"].to_numpy(dtype=object), edges["target_key"].to_numpy(dtype=object)
    first = source <= target
    pairs = pd.DataFrame(
        {"a": np.where(first, source, target), "b": np.where(first, target, source), "weight": edges["weight"]}
    )
    pairs = pairs.groupby(["a", "b"], sort=True)["weight"].sum().reset_index()
    undirected = nx.Graph()
    undirected.add_nodes_from(nodes["entity_key"])
    undirected.add_weighted_edges_from(pairs.itertuples(index=False, name=None))

    both_ways = edges[~edges["directed"]].rename(columns={"source_key": "target_key", "target_key": "source_key"})
    arcs = pd.concat([edges, both_ways], ignore_index=True)
    arcs = arcs.groupby(["source_key", "target_key"], sort=True)["weight"].sum().reset_index()
    directed = nx.DiGraph()
    directed.add_nodes_from(nodes["entity_key"])
    directed.add_weighted_edges_from(arcs.itertuples(index=False, name=None))
    return undirected, directed


def _pagerank(directed: nx.DiGraph) -> dict[str, float]:
    # Cold-started in every build (about 4 s at a million edges): a warm start would save iterations but give
    # ranks that depend on the previous build, and a re-run must give the same rows.
    return nx.pagerank(directed, weight="weight") if directed.number_of_nodes() else {}


def _communities(undirected: nx.Graph) -> dict[str, int]:
    """Louvain communities numbered by size, largest first, ties by smallest member key.

    scikit-network's Louvain on the weighted adjacency matrix rather than networkx's: the same modularity
    optimisation, compiled. On the corpus's graph (13,917 nodes, 302,066 undirected edges) networkx took
    5.9 s, scikit-network 0.3 s, at modularity 0.7339 and 0.7335 (``bench/graph_corpus.py``). Nodes are
    visited in a shuffled order, as networkx visits them: in sorted order the same seed reached only 0.7203.
    Nodes sorted before the seeded shuffle, so a re-run gives the same communities."""
    keys = sorted(undirected)
    if not keys:
        return {}
    index = {key: number for number, key in enumerate(keys)}
    triples = [(index[a], index[b], weight) for a, b, weight in undirected.edges(data="weight", default=1.0)]
    if not triples:  # no edge at all: every node is a community of its own (what Louvain finds)
        return {key: number for number, key in enumerate(keys)}
    rows, cols, weights = (np.array(column) for column in zip(*triples, strict=True))
    # scikit-network checks for the scipy matrix classes, not the newer sparse arrays.
    adjacency = sparse.coo_matrix((weights, (rows, cols)), shape=(len(keys), len(keys)), dtype=float)
    labels = Louvain(shuffle_nodes=True, random_state=LOUVAIN_SEED).fit_predict((adjacency + adjacency.T).tocsr())
    found: dict[int, list[str]] = {}
    for key, label in zip(keys, labels.tolist(), strict=True):
        found.setdefault(label, []).append(key)  # keys in sorted order, so each community's list is sorted
    ordered = sorted(found.values(), key=lambda members: (-len(members), members[0]))
    return {member: number for number, members in enumerate(ordered) for member in members}


def _betweenness(undirected: nx.Graph) -> dict[str, float]:
    """Hop-count betweenness (weights are strengths, not distances); sampled above the exact bound."""
    n = undirected.number_of_nodes()
    if n <= EXACT_BETWEENNESS_MAX_NODES:
        return nx.betweenness_centrality(undirected)
    return nx.betweenness_centrality(undirected, k=BETWEENNESS_SAMPLES, seed=BETWEENNESS_SEED)


def _carried_communities(undirected: nx.Graph, stored: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Stored communities for known nodes; a new node joins its strongest known neighbour's, else a new one."""
    known = stored["community"]
    assigned = {node: known[node] for node in undirected if node in known}
    next_id = max(known.values(), default=-1) + 1
    new_nodes = sorted((n for n in undirected if n not in assigned), key=lambda n: (-undirected.degree(n, "weight"), n))
    for node in new_nodes:
        neighbours = sorted(
            ((data["weight"], other) for other, data in undirected[node].items() if other in assigned),
            key=lambda item: (-item[0], item[1]),
        )
        if neighbours:
            assigned[node] = assigned[neighbours[0][1]]
        else:
            assigned[node] = next_id
            next_id += 1
    return assigned


def _community_summaries(nodes: pd.DataFrame) -> list[CommunitySummary]:
    summaries = []
    ranked = nodes.sort_values(["community", "pagerank", "entity_key"], ascending=[True, False, True])
    for community, members in ranked.groupby("community", sort=True):
        top = members.head(COMMUNITY_TOP_MEMBERS)
        summaries.append(
            CommunitySummary(
                community=int(community),
                size=len(members),
                people=int((members["entity_type"] == "person").sum()),
                top_members=[
                    {"entity_key": k, "label": label, "pagerank": round(float(r), 6)}
                    for k, label, r in zip(top["entity_key"], top["label"], top["pagerank"], strict=True)
                ],
            )
        )
    return sorted(summaries, key=lambda s: (-s.size, s.community))


def _ranking(nodes: pd.DataFrame) -> list[dict[str, Any]]:
    top = nodes.sort_values(["pagerank", "entity_key"], ascending=[False, True]).head(TOP_N)
    return [
        {
            "entity": row.entity_key,
            "name": row.label,
            "type": row.entity_type,
            "messages": int(row.message_count),
            "degree": int(row.degree),
            "pagerank": round(float(row.pagerank), 6),
            "community": int(row.community),
        }
        for row in top.itertuples()
    ]


# -- full or incremental --------------------------------------------------------------------------------------


def _changed_edges(store: MailStore, edges: pd.DataFrame) -> int:
    """Edges added, removed or re-weighted since the stored graph."""
    table = schema.graph_edges
    stored = store.frame(select(table.c.source_key, table.c.target_key, table.c.kind, table.c.weight))
    both = edges[["source_key", "target_key", "kind", "weight"]].merge(
        stored, on=["source_key", "target_key", "kind"], how="outer", suffixes=("", "_stored"), indicator=True
    )
    return int(((both["_merge"] != "both") | (both["weight"] != both["weight_stored"])).sum())


def _mode(
    previous: dict[str, Any] | None, changed: int, edge_count: int, options: GraphOptions, now: dt.datetime
) -> tuple[str, str]:
    if options.force_full:
        return "full", "asked for a full build"
    if previous is None:
        return "full", "first build"
    age = now - _aware(previous["communities_at"])
    if age > dt.timedelta(hours=options.full_rebuild_hours):
        return "full", f"communities are {age.total_seconds() / 3600:.1f} h old"
    share = changed / max(edge_count, 1)
    if share > options.full_rebuild_share:
        return "full", f"{changed} of {edge_count} edges changed ({share:.1%} > {options.full_rebuild_share:.1%})"
    return "incremental", f"{changed} of {edge_count} edges changed ({share:.2%})"


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite hands timestamps back naive (their UTC wall time).
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _stored_metrics(store: MailStore) -> dict[str, dict[str, Any]]:
    table = schema.graph_nodes
    stored = store.frame(select(table.c.entity_key, table.c.betweenness, table.c.community))
    keys = stored["entity_key"]
    return {
        "betweenness": dict(zip(keys, pd.to_numeric(stored["betweenness"]), strict=True)),
        "community": dict(zip(keys, stored["community"].astype(int), strict=True)),
    }


# -- writing --------------------------------------------------------------------------------------------------


def _columns(table: Any) -> list[str]:
    return [column.name for column in table.columns]


def _table_frame(frame: pd.DataFrame, table: Any) -> pd.DataFrame:
    """The frame with the table's columns, days as ``datetime.date`` (what both stores' writers take)."""
    return _dated(frame, _columns(table))


def _dated(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    out = frame[list(columns)].copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].dt.date
    return out


#: What the export files carry per entity and per link: the graph tables' columns an analyst opens in Gephi.
EXPORT_NODE_ATTRIBUTES = (
    "label",
    "entity_type",
    "names",
    "message_count",
    "first_seen",
    "last_seen",
    "degree",
    "weighted_degree",
    "pagerank",
    "betweenness",
    "community",
)
EXPORT_EDGE_ATTRIBUTES = ("kind", "directed", "weight", "first_seen", "last_seen")


def _export_graph(nodes: pd.DataFrame, edges: pd.DataFrame) -> nx.MultiDiGraph:
    """The graph the files show, keyed by kind per pair; built from whole columns, not ``to_dict("records")``
    and one ``add_edge`` per link (2.1 s against 1.5 s at the corpus's 300,000 links)."""
    graph = nx.MultiDiGraph()
    keys, *node_values = _plain_columns(nodes, ["entity_key", *EXPORT_NODE_ATTRIBUTES])
    node_data = (dict(zip(EXPORT_NODE_ATTRIBUTES, row, strict=True)) for row in zip(*node_values, strict=True))
    graph.add_nodes_from(zip(keys, node_data, strict=True))
    sources, targets, *link_values = _plain_columns(edges, ["source_key", "target_key", *EXPORT_EDGE_ATTRIBUTES])
    kinds = link_values[EXPORT_EDGE_ATTRIBUTES.index("kind")]
    link_data = (dict(zip(EXPORT_EDGE_ATTRIBUTES, row, strict=True)) for row in zip(*link_values, strict=True))
    graph.add_edges_from(zip(sources, targets, kinds, link_data, strict=True))
    return graph


def _plain_columns(frame: pd.DataFrame, columns: Sequence[str]) -> list[list[Any]]:
    """Each column as a list of plain values: dates as dates, NaN and NaT as None, numeric columns as Python
    numbers (``tolist``); object columns keep their objects, which the exporters render as they are."""
    out = []
    for column in columns:
        series = frame[column]
        if pd.api.types.is_datetime64_any_dtype(series):
            series = series.dt.date
        if series.hasnans:
            series = series.astype(object).where(series.notna(), None)
        out.append(series.tolist())
    return out


def graph_check_facts(store: MailStore) -> dict[str, Any]:
    """What the entity_graph checks judge, read back from the tables the build wrote."""
    edges, messages, nodes = schema.graph_edges, schema.graph_edge_messages, schema.graph_nodes
    with store.engine.connect() as conn:
        provenance = (
            select(messages.c.source_key, messages.c.target_key, messages.c.kind, func.count().label("n"))
            .group_by(messages.c.source_key, messages.c.target_key, messages.c.kind)
            .subquery()
        )
        without = conn.execute(
            select(edges.c.source_key, edges.c.target_key, edges.c.kind)
            .select_from(
                edges.outerjoin(
                    provenance,
                    (provenance.c.source_key == edges.c.source_key)
                    & (provenance.c.target_key == edges.c.target_key)
                    & (provenance.c.kind == edges.c.kind),
                )
            )
            .where(provenance.c.n.is_(None) | (provenance.c.n > edges.c.weight))
            .limit(20)
        ).fetchall()
        unknown_messages = conn.execute(
            select(func.count())
            .select_from(
                messages.outerjoin(
                    schema.messages,
                    (schema.messages.c.mailbox == messages.c.mailbox)
                    & (schema.messages.c.message_id == messages.c.message_id),
                )
            )
            .where(schema.messages.c.message_id.is_(None))
        ).scalar_one()
        people = conn.execute(
            select(nodes.c.entity_key, nodes.c.addresses).where(nodes.c.entity_type == "person")
        ).fetchall()
        edge_count = conn.execute(select(func.count()).select_from(edges)).scalar_one()
        link_count = conn.execute(select(func.count()).select_from(schema.entity_links)).scalar_one()
    return {
        "edges_without_provenance": [f"{s} -{k}-> {t}" for s, t, k in without],
        "provenance_to_missing_messages": int(unknown_messages),
        "people_addresses": {key: list(addresses or []) for key, addresses in people},
        "edges": int(edge_count),
        "links": int(link_count),
    }
