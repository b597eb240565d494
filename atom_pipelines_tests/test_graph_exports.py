"""The entity graph's files (``atom_pipelines.entity_graph.exports``): what people open in Gephi, networkx or
a browser, and the picture on the asset page.

The GraphML and GEXF writers are hand-streamed for speed, so these tests hold them to what the real readers
accept: ``nx.read_graphml``, ``nx.read_gexf`` and ``nx.node_link_graph`` must give back the same entities and
the same links with their kinds and weights, even for names with markup, newlines and characters XML cannot
hold. They also hold what a build relies on: the caller's graph is never converted in place (the asset goes on
to use it), a failed write leaves the previous file whole with no partial file beside it, and the picture is
a 1600 x 1200 PNG, the same bytes for the same graph, that says "no links yet" for an empty graph.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import math
from pathlib import Path

import networkx as nx
import pytest
from lxml import etree
from PIL import Image

from atom_pipelines.entity_graph import exports
from atom_pipelines.entity_graph.exports import (
    GraphExports,
    draw_picture,
    picture_figure,
    picture_layout,
    picture_links,
    replaced_atomically,
    write_exports,
)

ALICE = "person:alice@enron.com"
BOB = "person:bob@enron.com"
VINCE = "person-name:vince"
ENRON = "organization:enron.com"
SMITH = "organization:smith-wesson.com"
MONEY = "money:usd:2500"

# Markup, quotes, a newline (an XML parser turns a raw one in an attribute into a space), non-ASCII, a "$"
# (mathtext to matplotlib) and a form feed, which XML 1.0 cannot hold at all.
AWKWARD_LABEL = 'Smith & Wesson <Ltd> "S&W"\nZoë $5 \x0cInc'
LONG_LABEL = "Enron North America Corporation Trading Desk"


def day(n: int) -> dt.date:
    return dt.date(2001, 5, 1) + dt.timedelta(days=n)


def entity_graph() -> nx.MultiDiGraph:
    """Six entities and seven links in the fixed shape, with two parallel links (alice -> bob, two kinds)."""
    graph = nx.MultiDiGraph()

    def add_entity(key: str, label: str, entity_type: str, pagerank: float, community: int, **extra: object) -> None:
        graph.add_node(
            key,
            label=label,
            entity_type=entity_type,
            names=[label, label.split()[0]],
            message_count=7,
            first_seen=day(0),
            last_seen=day(30),
            degree=3,
            weighted_degree=4.5,
            pagerank=pagerank,
            betweenness=extra.pop("betweenness", None),
            community=community,
        )

    add_entity(ALICE, "Alice Smith", "person", 0.30, 0, betweenness=0.25)
    add_entity(BOB, "Bob Jones", "person", 0.20, 0)
    add_entity(VINCE, "Vince", "person", 0.05, 1)
    add_entity(ENRON, LONG_LABEL, "organization", 0.15, 0, betweenness=0.0)
    add_entity(SMITH, AWKWARD_LABEL, "organization", 0.10, 12)  # a community beyond the palette
    add_entity(MONEY, "$2,500", "money", 0.40, 1)  # the top PageRank, and a value: not in the picture

    def add_link(source: str, target: str, kind: str, weight: int) -> None:
        graph.add_edge(
            source,
            target,
            key=kind,
            kind=kind,
            directed=kind != "co_mention",
            weight=weight,
            first_seen=day(1),
            last_seen=day(20),
        )

    add_link(ALICE, BOB, "sent_to", 3)
    add_link(ALICE, BOB, "cc_to", 1)
    add_link(BOB, ALICE, "rel:reports_to", 2)
    add_link(ALICE, ENRON, "works_at", 5)
    add_link(BOB, VINCE, "co_mention", 1)
    add_link(ENRON, SMITH, "co_mention", 4)
    add_link(ALICE, MONEY, "co_mention", 9)
    return graph


def links_of(graph: nx.MultiDiGraph) -> set[tuple[str, str, str, float]]:
    """(source, target, kind, weight) of every link: the identity of a link whatever key a reader gave it."""
    return {(u, v, data["kind"], float(data["weight"])) for u, v, data in graph.edges(data=True)}


EXPECTED_LINKS = {
    (ALICE, BOB, "sent_to", 3.0),
    (ALICE, BOB, "cc_to", 1.0),
    (BOB, ALICE, "rel:reports_to", 2.0),
    (ALICE, ENRON, "works_at", 5.0),
    (BOB, VINCE, "co_mention", 1.0),
    (ENRON, SMITH, "co_mention", 4.0),
    (ALICE, MONEY, "co_mention", 9.0),
}


@pytest.fixture
def written(tmp_path: Path) -> GraphExports:
    return write_exports(entity_graph(), tmp_path / "exports")


def test_names_the_three_files_in_the_export_dir(written: GraphExports, tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    assert (written.graphml, written.gexf, written.node_link_json) == (
        folder / "entity_graph.graphml",
        folder / "entity_graph.gexf",
        folder / "entity_graph.json",
    )
    # The form feed in AWKWARD_LABEL (in its label and its names) is the only thing XML could not hold.
    assert written.repaired_texts == 2
    assert sorted(p.name for p in folder.iterdir()) == [
        "entity_graph.gexf",
        "entity_graph.graphml",
        "entity_graph.json",
    ]


def test_graphml_reads_back_with_its_entities_links_and_attributes(written: GraphExports) -> None:
    read = nx.read_graphml(written.graphml)

    assert isinstance(read, nx.MultiDiGraph)
    assert set(read.nodes) == set(entity_graph().nodes)
    assert links_of(read) == EXPECTED_LINKS
    alice, smith = read.nodes[ALICE], read.nodes[SMITH]
    assert alice["label"] == "Alice Smith"
    assert alice["names"] == "Alice Smith | Alice"
    assert (alice["first_seen"], alice["last_seen"]) == ("2001-05-01", "2001-05-31")
    assert alice["pagerank"] == 0.30 and alice["message_count"] == 7 and alice["community"] == 0
    assert alice["betweenness"] == 0.25
    assert "betweenness" not in read.nodes[BOB]  # None is left out, not written as "None"
    assert smith["label"] == AWKWARD_LABEL.replace("\x0c", "\ufffd")  # markup and the newline survive
    co_mention = read.get_edge_data(BOB, VINCE)
    assert [data["directed"] for data in co_mention.values()] == [False]
    assert {data["first_seen"] for _u, _v, data in read.edges(data=True)} == {"2001-05-02"}


def test_graphml_edges_have_no_ids_for_gephi_to_drop(written: GraphExports) -> None:
    # networkx writes the multigraph key (the kind) as the edge id; ids repeat and Gephi keeps one edge per id.
    document = etree.parse(str(written.graphml))
    edges = document.findall(".//{http://graphml.graphdrawing.org/xmlns}edge")
    assert len(edges) == len(EXPECTED_LINKS)
    assert [edge.get("id") for edge in edges] == [None] * len(edges)


def test_gexf_reads_back_with_kinds_as_keys(written: GraphExports) -> None:
    read = nx.read_gexf(written.gexf)

    assert isinstance(read, nx.MultiDiGraph)
    assert set(read.nodes) == set(entity_graph().nodes)
    assert links_of(read) == EXPECTED_LINKS
    # networkx_key gives the key back: the same (source, target, kind) triples as the graph written.
    assert set(read.edges(keys=True)) == set(entity_graph().edges(keys=True))
    assert read.nodes[SMITH]["label"] == AWKWARD_LABEL.replace("\x0c", "\ufffd")
    assert read.nodes[VINCE]["names"] == "Vince | Vince"
    assert read.nodes[ALICE]["first_seen"] == "2001-05-01"
    assert "betweenness" not in read.nodes[BOB]
    ids = [edge.get("id") for edge in etree.parse(str(written.gexf)).iter("{http://www.gexf.net/1.2draft}edge")]
    assert len(set(ids)) == len(EXPECTED_LINKS)  # GEXF requires an id; Gephi needs them distinct


def test_node_link_json_reads_back_as_the_same_graph(written: GraphExports) -> None:
    data = json.loads(written.node_link_json.read_bytes())
    read = nx.node_link_graph(data, edges="edges")

    original = entity_graph()
    assert isinstance(read, nx.MultiDiGraph)
    assert set(read.edges(keys=True)) == set(original.edges(keys=True))
    assert links_of(read) == EXPECTED_LINKS
    # JSON holds lists, None and every character; only dates become ISO strings.
    assert read.nodes[SMITH]["label"] == AWKWARD_LABEL
    assert read.nodes[ALICE]["names"] == ["Alice Smith", "Alice"]
    assert read.nodes[BOB]["betweenness"] is None
    assert read.nodes[ALICE]["last_seen"] == "2001-05-31"
    assert read.edges[ALICE, ENRON, "works_at"]["first_seen"] == "2001-05-02"


def test_the_callers_graph_is_not_converted(tmp_path: Path) -> None:
    graph = entity_graph()
    graph.graph["id"] = "enron"  # networkx's GraphML writer pops this key from the graph it is given
    before = copy.deepcopy(graph)

    write_exports(graph, tmp_path)

    assert graph.graph == before.graph
    assert list(graph.nodes(data=True)) == list(before.nodes(data=True))
    assert list(graph.edges(keys=True, data=True)) == list(before.edges(keys=True, data=True))
    assert isinstance(graph.nodes[ALICE]["names"], list) and isinstance(graph.nodes[ALICE]["first_seen"], dt.date)


def test_a_write_that_fails_midway_leaves_the_previous_file_and_no_partial(
    written: GraphExports, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = written.graphml.read_bytes()
    real_chunks = exports.graphml_chunks

    def chunks_then_disk_full(graph: nx.MultiDiGraph) -> tuple[object, int]:
        document, repaired = real_chunks(graph)

        def written_until_full():  # type: ignore[no-untyped-def]
            yield from document[:2]
            raise OSError(28, "No space left on device")

        return written_until_full(), repaired

    monkeypatch.setattr(exports, "graphml_chunks", chunks_then_disk_full)
    changed = entity_graph()
    changed.nodes[ALICE]["label"] = "Alice Changed"

    with pytest.raises(OSError, match="No space left"):
        write_exports(changed, written.graphml.parent)

    assert written.graphml.read_bytes() == previous
    assert sorted(p.name for p in written.graphml.parent.iterdir()) == [
        "entity_graph.gexf",
        "entity_graph.graphml",
        "entity_graph.json",
    ]


def test_replaced_atomically_keeps_the_old_file_until_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "entity_graph.json"
    target.write_bytes(b'{"old":true}')

    with pytest.raises(RuntimeError, match="interrupted"):
        with replaced_atomically(target) as handle:
            handle.write(b'{"new":')
            (partial,) = [p for p in tmp_path.iterdir() if p != target]  # beside the target, in the same folder
            assert partial.name.startswith(".entity_graph.json.") and partial.name.endswith(".partial")
            assert target.read_bytes() == b'{"old":true}'  # a reader meanwhile sees the old file
            raise RuntimeError("interrupted")

    assert target.read_bytes() == b'{"old":true}'
    assert list(tmp_path.iterdir()) == [target]

    with replaced_atomically(target) as handle:
        handle.write(b'{"new":true}')
    assert target.read_bytes() == b'{"new":true}'
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize(
    ("spoil", "error", "message"),
    [
        # A value no format can hold.
        (lambda g: g.nodes[BOB].update(aliases={"nick": "bobby"}), TypeError, "dict"),
        # One attribute with values of two types: GraphML and GEXF declare one type per attribute.
        (lambda g: g.nodes[BOB].update(community="zero"), TypeError, "'community' holds values of different types"),
        # NaN: XML would take it, JSON readers would not.
        (lambda g: g.nodes[BOB].update(pagerank=math.nan), ValueError, "NaN or infinite"),
    ],
    ids=["dict", "mixed-types", "nan"],
)
def test_a_graph_that_cannot_be_exported_changes_no_file(
    written: GraphExports, spoil: object, error: type[Exception], message: str
) -> None:
    before = {path: path.read_bytes() for path in (written.graphml, written.gexf, written.node_link_json)}
    graph = entity_graph()
    spoil(graph)  # type: ignore[operator]

    with pytest.raises(error, match=message):
        write_exports(graph, written.graphml.parent)

    assert {path: path.read_bytes() for path in before} == before
    assert sorted(written.graphml.parent.iterdir()) == sorted(before)


def test_picture_shows_people_and_organizations_and_their_heaviest_links() -> None:
    links = picture_links(entity_graph(), top_n=4, max_edges=3)

    # MONEY has the top PageRank but is a value; the person-name VINCE is a person and ranks by its PageRank.
    assert links.entities == [ALICE, BOB, ENRON, SMITH]
    # alice-bob sums sent_to 3 + cc_to 1 + bob's rel:reports_to 2 across kinds and directions.
    # Each pair is named smaller key first, as co_mention is stored.
    assert links.links == [(ALICE, BOB, 6.0), (ENRON, ALICE, 5.0), (ENRON, SMITH, 4.0)]
    assert picture_links(entity_graph(), top_n=4, max_edges=1).links == [(ALICE, BOB, 6.0)]


def test_picture_figure_labels_title_and_legend() -> None:
    figure = picture_figure(entity_graph())
    (axes,) = figure.axes
    labels = [text.get_text() for text in axes.texts]

    assert labels == ["Alice Smith", "Bob Jones", "Enron North America Cor…", 'Smith & Wesson <Ltd> "S…', "Vince"]
    assert all(len(label) <= 24 for label in labels)
    title = figure._suptitle.get_text()
    assert "6 entities, 7 links" in title and "top 5 by PageRank" in title and "4 heaviest links" in title
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend == ["community 0 (3)", "community 1 (2)", "other communities"]


def test_picture_is_a_1600_by_1200_png_and_the_same_bytes_every_time(tmp_path: Path) -> None:
    first = draw_picture(entity_graph(), tmp_path / "first.png")
    second = draw_picture(entity_graph(), tmp_path / "second.png")

    with Image.open(first) as image:
        assert (image.format, image.size) == ("PNG", (1600, 1200))
    assert first.read_bytes() == second.read_bytes()
    assert first.stat().st_size < 500_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.png", "second.png"]


def test_picture_layout_is_deterministic_and_follows_the_links() -> None:
    links = picture_links(entity_graph())
    layout = picture_layout(links)

    assert layout == picture_layout(picture_links(entity_graph()))
    assert set(layout) == set(links.entities)
    # Vince's only drawn link is to Bob: the spring pulls him nearer Bob than to Smith & Wesson, Enron's partner.
    assert math.dist(layout[VINCE], layout[BOB]) < math.dist(layout[VINCE], layout[SMITH])


def test_entities_linked_to_none_shown_sit_in_a_row_beneath_the_rest() -> None:
    graph = entity_graph()
    loners = [f"person:loner{i}@example.com" for i in range(3)]
    for loner in loners:  # high PageRank, linked only to a value, which the picture leaves out
        graph.add_node(loner, label=loner, entity_type="person", pagerank=0.5, community=2)
        graph.add_edge(loner, MONEY, key="co_mention", kind="co_mention", directed=False, weight=1)
    # A second group (Vince and Carol, linked to each other only) must stay near the first, not be pushed away.
    graph.remove_edge(BOB, VINCE, "co_mention")
    graph.add_node("person:carol@example.com", label="Carol", entity_type="person", pagerank=0.01, community=1)
    graph.add_edge(VINCE, "person:carol@example.com", key="sent_to", kind="sent_to", directed=True, weight=2)

    links = picture_links(graph)
    layout = picture_layout(links)

    assert links.entities[:3] == loners
    linked = [node for node in links.entities if node not in loners]
    lowest_linked = min(layout[node][1] for node in linked)
    assert all(layout[loner][1] < lowest_linked for loner in loners)
    assert len({layout[loner][1] for loner in loners}) == 1  # one row
    assert all(-1.0 <= layout[node][0] <= 1.0 and -1.0 <= layout[node][1] <= 1.0 for node in linked)
    # Without the faint spring between groups, the pair is pushed to one edge of the layout (about 1.4 away).
    assert math.dist(layout[VINCE], layout[ALICE]) < 1.2


def test_empty_graph_gives_a_picture_saying_no_links_yet(tmp_path: Path) -> None:
    figure = picture_figure(nx.MultiDiGraph())
    assert "no links yet" in [text.get_text() for text in figure.texts]

    path = draw_picture(nx.MultiDiGraph(), tmp_path / "entity_graph.png")
    with Image.open(path) as image:
        assert image.size == (1600, 1200)
        # Not a blank page: the words are drawn.
        assert image.convert("L").getextrema()[0] < 128


def test_empty_graph_exports_read_back_empty(tmp_path: Path) -> None:
    written = write_exports(nx.MultiDiGraph(), tmp_path)
    assert nx.read_graphml(written.graphml).number_of_nodes() == 0
    assert nx.read_gexf(written.gexf).number_of_nodes() == 0
    assert nx.node_link_graph(json.loads(written.node_link_json.read_bytes()), edges="edges").number_of_nodes() == 0


def test_picture_png_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = draw_picture(entity_graph(), tmp_path / "entity_graph.png")
    previous = path.read_bytes()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    def half_a_png(self: FigureCanvasAgg, handle: io.BufferedWriter, **_kwargs: object) -> None:
        handle.write(previous[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FigureCanvasAgg, "print_png", half_a_png)
    with pytest.raises(OSError, match="No space left"):
        draw_picture(nx.MultiDiGraph(), path)

    assert path.read_bytes() == previous
    assert list(tmp_path.iterdir()) == [path]
