"""One graph over every link: networkx analysis and a GraphML export, the work behind ``entity_graph``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd

from atom_pipelines.store.resource import MailStore

TOP_N = 15


@dataclass
class GraphReport:
    nodes: int
    edges: int
    components: int
    largest_component: int
    top_by_degree: list[tuple[str, str, str, int]]  # key, name, type, degree
    top_by_pagerank: list[tuple[str, str, str, float]]
    graphml_path: Path


def build_graph(store: MailStore) -> nx.Graph:
    """Undirected graph; an edge's weight is the number of messages linking its ends, across kinds.

    The per-kind sums come from the store; pandas folds them into one row per unordered pair of entities in
    one vectorised group-by (a Python loop over a million links is most of a build's time), and networkx
    takes the edge list as it is.
    """
    links = pd.DataFrame.from_records(
        store.aggregated_links(), columns=["source", "target", "kind", "weight", "messages"]
    )
    source, target = links["source"].to_numpy(dtype=object), links["target"].to_numpy(dtype=object)
    first = source <= target
    links["end_a"], links["end_b"] = np.where(first, source, target), np.where(first, target, source)
    edges = (
        links.groupby(["end_a", "end_b"], sort=True)
        .agg(weight=("weight", "sum"), messages=("messages", "sum"), kinds=("kind", _joined_kinds))
        .reset_index()
    )
    graph = nx.from_pandas_edgelist(edges, "end_a", "end_b", edge_attr=["weight", "messages", "kinds"])
    labels = store.entity_labels()
    for node in graph.nodes:
        name, entity_type = labels.get(node, (node, "unknown"))
        graph.nodes[node]["name"] = name
        graph.nodes[node]["entity_type"] = entity_type
    return graph


def _joined_kinds(kinds: pd.Series) -> str:
    return ",".join(sorted(set(kinds)))


def analyze_graph(store: MailStore, export_dir: Path) -> GraphReport:
    graph = build_graph(store)
    export_dir.mkdir(parents=True, exist_ok=True)
    graphml_path = export_dir / "entity_graph.graphml"
    # Write beside, then rename: a reader never sees half a file.
    partial = graphml_path.with_suffix(".graphml.partial")
    nx.write_graphml(graph, partial)
    partial.replace(graphml_path)

    components = list(nx.connected_components(graph)) if graph.number_of_nodes() else []
    degree = sorted(graph.degree(), key=lambda item: (-item[1], item[0]))[:TOP_N]
    pagerank = nx.pagerank(graph, weight="weight") if graph.number_of_edges() else {}
    top_rank = sorted(pagerank.items(), key=lambda item: (-item[1], item[0]))[:TOP_N]

    def label(key: str) -> tuple[str, str]:
        return graph.nodes[key]["name"], graph.nodes[key]["entity_type"]

    return GraphReport(
        nodes=graph.number_of_nodes(),
        edges=graph.number_of_edges(),
        components=len(components),
        largest_component=max((len(c) for c in components), default=0),
        top_by_degree=[(k, *label(k), d) for k, d in degree],
        top_by_pagerank=[(k, *label(k), r) for k, r in top_rank],
        graphml_path=graphml_path,
    )
