"""The entity graph as files people open: GraphML, GEXF (Gephi), node-link JSON, and a PNG of its core.

Every file is written beside its final name and renamed over it (``os.replace``), so a reader never sees half
a file and a write that fails leaves the previous file as it was. The renames wait until every file is written
(``StagedFiles``): a graph that cannot be exported changes no file, and the build renames its files only once
its tables are committed.

GraphML and GEXF are written by hand rather than by ``nx.write_graphml`` / ``nx.write_gexf``: on a synthetic
graph of 100,000 entities and 500,000 links, networkx needed a converted copy of the graph (6 s: its writers
take no lists, dates or None) and then 15-17 s for GraphML (on its lxml writer) and 29 s for GEXF, most of a
build's 60 s. Rendering each value straight to text, with the common types dispatched inline and repeated
strings escaped once, takes about 3.5 s of CPU per format. The output is what networkx's readers and Gephi read:

* XML holds neither lists, dates nor None: ``names`` is joined with ``" | "``, dates are ISO strings, and a
  None attribute is left out. The caller's graph is only read, never converted in place.
* Characters XML 1.0 cannot carry (control characters, lone surrogates) become U+FFFD in the XML files, and
  the texts so repaired are counted in ``GraphExports.repaired_texts``; the JSON keeps them as escapes.
* GraphML edges carry no id: networkx would use the multigraph key, the link's kind, which repeats, and Gephi
  drops an edge whose id it has seen. ``nx.read_graphml`` numbers parallel edges 0, 1, ...; ``kind`` is an
  attribute like any other.
* GEXF edges are numbered (the format requires an id) and carry ``networkx_key`` = the kind, which
  ``nx.read_gexf`` turns back into the key. ``label`` (node) and ``weight`` (edge) are the XML attributes
  Gephi shows. Links stay ``directed`` in the file even for ``co_mention`` (its ``directed`` attribute says
  false): a GEXF edge typed undirected in a directed graph is an error to ``nx.read_gexf``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import json
import math
import numbers
import os
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import networkx as nx

from atom_pipelines.extraction.outcomes import EntityType

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GRAPHML_NAME = "entity_graph.graphml"
GEXF_NAME = "entity_graph.gexf"
NODE_LINK_JSON_NAME = "entity_graph.json"
PICTURE_NAME = "entity_graph.png"

NAMES_SEPARATOR = " | "

# The picture is of who talks to whom: values (an amount, a date) rank high by PageRank because many messages
# mention them, and would crowd out the people.
VALUE_TYPES = frozenset({EntityType.MONEY.value, EntityType.DATE.value, EntityType.PHONE.value, EntityType.URL.value})
PRIMARY_TYPES = frozenset({EntityType.PERSON.value, EntityType.ORGANIZATION.value})

LAYOUT_SEED = 20011202  # fixed, so the same graph gives the same picture
PICTURE_INCHES = (16.0, 12.0)
PICTURE_DPI = 100  # 1600 x 1200 px
LABEL_CHARS = 24
GROUP_SPRING = 0.2  # the pull between unlinked groups of the picture, against 1 + log(messages) for a link
UNLINKED_COLUMNS = 7  # entities shown without a drawn link, per row beneath the drawing
# tab10 without its grey (index 7): grey is kept for communities beyond the palette.
COMMUNITY_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
OTHER_COMMUNITY_COLOUR = "#b8b8b8"


@dataclass(frozen=True)
class GraphExports:
    graphml: Path
    gexf: Path
    node_link_json: Path
    # Distinct texts (entity keys, values) with a character XML 1.0 cannot hold: the GraphML and the GEXF have
    # U+FFFD in its place, the JSON the character itself.
    repaired_texts: int = 0


def write_exports(graph: nx.MultiDiGraph, export_dir: Path, staged: StagedFiles | None = None) -> GraphExports:
    """Write ``entity_graph.graphml``, ``entity_graph.gexf`` and ``entity_graph.json`` into ``export_dir``.

    The three replace their previous versions together once all three are written; with ``staged``, they are
    only staged there, and replace the previous files when the caller commits. Raises ``TypeError`` for an
    attribute value no format can hold (or one attribute holding values of different types, which GraphML and
    GEXF cannot declare), and ``ValueError`` for a NaN or infinite float (not JSON); no file changes then.
    """
    if staged is None:
        with StagedFiles() as own:
            exported = write_exports(graph, export_dir, own)
            own.commit()
        return exported
    export_dir.mkdir(parents=True, exist_ok=True)
    graphml, gexf, node_link_json = export_dir / GRAPHML_NAME, export_dir / GEXF_NAME, export_dir / NODE_LINK_JSON_NAME
    # Each document is written and dropped before the next is rendered: the three are never all in memory.
    graphml_document, repaired_texts = graphml_chunks(graph)
    with staged.open(graphml) as handle:
        handle.writelines(graphml_document)
    del graphml_document
    with staged.open(node_link_json) as handle:
        handle.write(node_link_json_bytes(graph))
    gexf_document, _same_repairs = gexf_chunks(graph)
    with staged.open(gexf) as handle:
        handle.writelines(gexf_document)
    return GraphExports(graphml, gexf, node_link_json, repaired_texts=repaired_texts)


class StagedFiles:
    """Files written beside their final names now, and renamed over them together later (``commit``).

    The graph build renders its files while its tables are still being committed on another thread, and the
    files must replace the previous ones only once the tables hold the graph they show. Leaving the block
    without ``commit`` (an error anywhere) removes every staged file, and the previous files stay as they were.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (the written file, the name it is renamed to)

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.discard()

    @contextlib.contextmanager
    def open(self, path: Path) -> Iterator[IO[bytes]]:
        """A binary handle on a new file beside ``path``, staged to replace it when the block ends without
        error; on any error (or interruption) the new file is removed.

        The file is flushed to disk before it is staged, so a crash cannot leave ``path`` renamed onto
        unwritten blocks.
        """
        # Hidden and unique: a reader listing *.graphml never picks it up, and two writers never share one.
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        # os.open with 0o666, unlike tempfile's 0o600, lets the umask decide who may read the export.
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with open(descriptor, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self._staged.append((partial, path))

    def commit(self) -> None:
        """Rename every staged file over its final name, in the order they were written."""
        while self._staged:
            partial, path = self._staged[0]
            os.replace(partial, path)
            del self._staged[0]  # only once renamed: a rename that fails leaves this file and the rest to discard

    def discard(self) -> None:
        while self._staged:
            partial, _path = self._staged.pop()
            partial.unlink(missing_ok=True)


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[IO[bytes]]:
    """A binary handle on a new file beside ``path`` that replaces ``path`` when the block ends without error.

    On any error (or interruption) the new file is removed and ``path`` keeps its previous content.
    """
    with StagedFiles() as staged:
        with staged.open(path) as handle:
            yield handle
        staged.commit()


# ---------------------------------------------------------------------------------------------- node-link JSON


def node_link_json_bytes(graph: nx.MultiDiGraph) -> bytes:
    """``nx.node_link_data(graph, edges="edges")`` as compact ASCII JSON, dates as ISO strings.

    ``nx.node_link_graph(json.loads(...), edges="edges")`` reads it back.
    """
    data = nx.node_link_data(graph, edges="edges")
    try:
        # dumps, not dump: only the one-shot encoder runs in C, several times faster than dump's chunks.
        text = json.dumps(data, separators=(",", ":"), default=_json_value, allow_nan=False)
    except ValueError as exc:  # NaN or infinity: JSON.parse and most JSON readers refuse them
        raise ValueError(f"{NODE_LINK_JSON_NAME}: an attribute is NaN or infinite ({exc})") from exc
    return text.encode("ascii")  # ensure_ascii escaped everything else, lone surrogates included


def _json_value(value: object) -> object:
    if isinstance(value, dt.date):  # datetime too
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, numbers.Integral):  # numpy integers
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{NODE_LINK_JSON_NAME}: cannot write a {type(value).__name__} attribute: {value!r}")


# ------------------------------------------------------------------------------------------------ XML values

# One translate does the escaping and the repair: markup characters become entities; whitespace other than a
# plain space becomes a character reference, or an XML parser would normalise it to a space inside an
# attribute; characters XML 1.0 cannot hold, and lone surrogates (which UTF-8 cannot encode), become U+FFFD.
_XML_ESCAPES: dict[int, str] = {
    **{code: "\ufffd" for code in range(0x20) if code not in (0x09, 0x0A, 0x0D)},
    **{code: "\ufffd" for code in range(0xD800, 0xE000)},
    0xFFFE: "\ufffd",
    0xFFFF: "\ufffd",
    ord("&"): "&amp;",
    ord("<"): "&lt;",
    ord(">"): "&gt;",
    ord('"'): "&quot;",
    0x09: "&#9;",
    0x0A: "&#10;",
    0x0D: "&#13;",
}

_DATE = dt.date  # first_seen / last_seen: two of an edge's five values

# The type names GraphML's attr.type and GEXF's attribute type share.
_XML_TYPES: dict[type, str] = {bool: "boolean", int: "long", float: "double", str: "string"}


class _XmlText:
    """Escapes text for XML and renders the values that are not str, int, float or bool; counts the texts it
    had to repair. Strings repeat (kinds, entity types), so each distinct one is escaped (and counted) once."""

    def __init__(self) -> None:
        self.repaired = 0
        self.escaped: dict[str, str] = {}
        self.dates: dict[dt.date, str] = {}

    def escape(self, text: str) -> str:
        escaped = self.escaped.get(text)
        if escaped is None:
            escaped = text.translate(_XML_ESCAPES)
            if "\ufffd" in escaped and escaped.count("\ufffd") != text.count("\ufffd"):
                self.repaired += 1
            self.escaped[text] = escaped
        return escaped

    def converted(self, value: object) -> tuple[str, type]:
        """(text, the type it is declared as) of a value XML has no type for: dates, lists, numpy numbers."""
        if isinstance(value, dt.date):  # datetime too
            iso = self.dates.get(value)
            if iso is None:
                iso = self.dates[value] = value.isoformat()
            return iso, str
        if isinstance(value, (list, tuple)):
            return self.escape(NAMES_SEPARATOR.join(map(str, value))), str
        if isinstance(value, (set, frozenset)):
            return self.escape(NAMES_SEPARATOR.join(sorted(map(str, value)))), str
        if isinstance(value, str):  # a str enum such as EntityType: its text, not "EntityType.PERSON"
            return self.escape(str.__str__(value)), str
        if isinstance(value, numbers.Integral):  # numpy integers
            return str(int(value)), int
        if isinstance(value, numbers.Real):  # numpy floats
            return _float_text(float(value)), float
        raise TypeError(f"cannot write a {type(value).__name__} attribute to XML: {value!r}")


def _float_text(value: float) -> str:
    text = float.__repr__(value)
    if text[-1] in "nf":  # nan, inf, -inf: spelled as both Python's float() and Java's parseDouble read them
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return text


class _Attributes:
    """The attributes of one scope (graph, node or edge) and how each value is written: an id per name, in
    order of first sight, and the types its values had, declared once the whole graph has been rendered.

    ``render`` is the hot loop of both XML writers (3.5 million values at 500,000 links): the common types are
    dispatched inline, and each value costs one dict lookup for its name.
    """

    def __init__(self, scope: str, next_id: Callable[[], str], opening: str, closing: str) -> None:
        self.scope = scope
        self._next_id = next_id
        self._opening = opening  # with {} for the attribute id
        self._closing = closing
        self.ids: dict[str, str] = {}
        self._written: dict[Any, tuple[str, set[type]]] = {}  # name -> (the value's opening tag, types seen)

    def render(self, text: _XmlText, data: Mapping[Any, object], skip: frozenset[str] = frozenset()) -> str:
        """The XML of every value of ``data`` that is not None (None is left out), in ``data``'s order."""
        parts: list[str] = []
        escaped, dates, written, closing = text.escaped, text.dates, self._written, self._closing
        for name, value in data.items():
            if name in skip:
                continue
            value_type = type(value)
            if value_type is str:
                value_text = escaped.get(value)  # type: ignore[arg-type]
                if value_text is None:
                    value_text = text.escape(value)  # type: ignore[arg-type]
            elif value_type is int:
                value_text = int.__repr__(value)  # type: ignore[arg-type]
            elif value_type is float:
                value_text = float.__repr__(value)  # type: ignore[arg-type]
                if value_text[-1] in "nf":  # nan, inf
                    value_text = _float_text(value)  # type: ignore[arg-type]
            elif value_type is _DATE:
                value_text = dates.get(value)  # type: ignore[arg-type]
                if value_text is None:
                    value_text, value_type = text.converted(value)
                else:
                    value_type = str
            elif value_type is bool:
                value_text = "true" if value else "false"
            elif value is None:
                continue
            else:
                value_text, value_type = text.converted(value)
            known = written.get(name)
            if known is None:
                known = self._declare(name)
            opening, types = known
            if value_type not in types:
                types.add(value_type)
            parts += (opening, value_text, closing)
        return "".join(parts)

    def _declare(self, name: Any) -> tuple[str, set[type]]:
        attribute_id = self.ids[str(name)] = self._next_id()
        known = self._written[name] = (self._opening.format(attribute_id), set())
        return known

    def declared_types(self) -> dict[str, str]:
        """The XML type of each attribute; ints and floats under one name are declared double."""
        declared = {}
        for name, (_opening, types) in self._written.items():
            if types == {int, float}:
                declared[str(name)] = _XML_TYPES[float]
            elif len(types) == 1:
                declared[str(name)] = _XML_TYPES[next(iter(types))]
            else:
                kinds = ", ".join(sorted(t.__name__ for t in types))
                raise TypeError(f"{self.scope} attribute {name!r} holds values of different types ({kinds})")
        return declared


def _node_ids(graph: nx.Graph, text: _XmlText) -> dict[Hashable, str]:
    ids = {node: text.escape(str(node)) for node in graph}
    if len(set(ids.values())) != len(ids):  # only a repair (U+FFFD) or str() can make two nodes one
        raise ValueError("two entity keys are the same once written as XML text")
    return ids


def _edges(graph: nx.Graph) -> Iterator[tuple[Hashable, Hashable, Hashable, dict[str, Any]]]:
    if graph.is_multigraph():
        yield from graph.edges(keys=True, data=True)
    else:
        for source, target, data in graph.edges(data=True):
            yield source, target, None, data


# ------------------------------------------------------------------------------------------------------ GraphML

_GRAPHML_HEAD = (
    "<?xml version='1.0' encoding='utf-8'?>\n"
    '<graphml xmlns="http://graphml.graphdrawing.org/xmlns" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
    'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">\n'
)


def graphml_chunks(graph: nx.MultiDiGraph) -> tuple[list[bytes], int]:
    """The GraphML document as UTF-8 chunks, and how many distinct texts had a character XML cannot hold.

    Each chunk is encoded on its own: one non-ASCII name in a joined string would widen all of it to 2 or 4
    bytes a character.
    """
    text = _XmlText()
    counter = iter(range(1 << 62))

    def next_id() -> str:
        return f"d{next(counter)}"

    graph_attributes, node_attributes, edge_attributes = (
        _Attributes(scope, next_id, '<data key="{}">', "</data>") for scope in ("graph", "node", "edge")
    )
    node_ids = _node_ids(graph, text)

    graph_data = {k: v for k, v in graph.graph.items() if k not in ("node_default", "edge_default")}
    body = [
        f'<graph edgedefault="{"directed" if graph.is_directed() else "undirected"}">'
        f"{graph_attributes.render(text, graph_data)}\n".encode()
    ]
    for node, data in graph.nodes(data=True):
        body.append(f'<node id="{node_ids[node]}">{node_attributes.render(text, data)}</node>\n'.encode())
    for source, target, _key, data in _edges(graph):
        body.append(
            f'<edge source="{node_ids[source]}" target="{node_ids[target]}">'
            f"{edge_attributes.render(text, data)}</edge>\n".encode()
        )
    body.append(b"</graph>\n</graphml>\n")

    keys = [_GRAPHML_HEAD]
    for attributes in (graph_attributes, node_attributes, edge_attributes):
        for name, xml_type in attributes.declared_types().items():
            keys.append(
                f'<key id="{attributes.ids[name]}" for="{attributes.scope}" '
                f'attr.name="{text.escape(name)}" attr.type="{xml_type}"/>\n'
            )
    return ["".join(keys).encode(), *body], text.repaired


# --------------------------------------------------------------------------------------------------------- GEXF

_GEXF_HEAD = (
    "<?xml version='1.0' encoding='utf-8'?>\n"
    '<gexf xmlns="http://www.gexf.net/1.2draft" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xsi:schemaLocation="http://www.gexf.net/1.2draft http://www.gexf.net/1.2draft/gexf.xsd" version="1.2">\n'
    "<meta><creator>atom_pipelines</creator><description>entity graph</description></meta>\n"
)
_NODE_XML_ATTRIBUTES = frozenset({"label"})
_EDGE_XML_ATTRIBUTES = frozenset({"weight"})


def gexf_chunks(graph: nx.MultiDiGraph) -> tuple[list[bytes], int]:
    """The GEXF 1.2 document as UTF-8 chunks, and how many distinct texts had a character XML cannot hold."""
    text = _XmlText()
    counter = iter(range(1 << 62))

    def next_id() -> str:
        return str(next(counter))

    node_attributes, edge_attributes = (
        _Attributes(scope, next_id, '<attvalue for="{}" value="', '"/>') for scope in ("node", "edge")
    )
    node_ids = _node_ids(graph, text)
    multigraph = graph.is_multigraph()

    nodes = [b"<nodes>\n"]
    for node, data in graph.nodes(data=True):
        label = data.get("label")
        label_text = text.escape(str(label)) if label is not None else node_ids[node]
        attvalues = _gexf_attvalues(node_attributes.render(text, data, skip=_NODE_XML_ATTRIBUTES))
        nodes.append(f'<node id="{node_ids[node]}" label="{label_text}">{attvalues}</node>\n'.encode())
    nodes.append(b"</nodes>\n")

    edges = [b"<edges>\n"]
    for edge_id, (source, target, key, data) in enumerate(_edges(graph)):
        weight = data.get("weight")
        if type(weight) is int or type(weight) is float:  # Gephi's own weight; anything else stays a column
            weight_text, skip = f' weight="{weight!r}"', _EDGE_XML_ATTRIBUTES
        else:
            weight_text, skip = "", frozenset()
        attvalues = edge_attributes.render(text, data, skip=skip)
        if multigraph:
            attvalues += edge_attributes.render(text, {"networkx_key": key})
        edges.append(
            f'<edge id="{edge_id}" source="{node_ids[source]}" target="{node_ids[target]}"{weight_text}>'
            f"{_gexf_attvalues(attvalues)}</edge>\n".encode()
        )
    edges.append(b"</edges>\n</graph>\n</gexf>\n")

    name = graph.graph.get("name")
    head = [
        _GEXF_HEAD,
        f'<graph defaultedgetype="{"directed" if graph.is_directed() else "undirected"}" mode="static"'
        f' name="{text.escape(str(name)) if name is not None else ""}">\n',
    ]
    for attributes in (node_attributes, edge_attributes):
        declared = attributes.declared_types()
        if declared:
            head.append(f'<attributes class="{attributes.scope}" mode="static">')
            head.extend(
                f'<attribute id="{attributes.ids[name]}" title="{text.escape(name)}" type="{xml_type}"/>'
                for name, xml_type in declared.items()
            )
            head.append("</attributes>\n")
    return ["".join(head).encode(), *nodes, *edges], text.repaired


def _gexf_attvalues(attvalues: str) -> str:
    return f"<attvalues>{attvalues}</attvalues>" if attvalues else ""


# ------------------------------------------------------------------------------------------------------ picture


@dataclass(frozen=True)
class PictureLinks:
    """What the picture shows: its entities, strongest first, and the links drawn between them."""

    entities: list[Hashable]
    # (end, end, messages summed over kinds and both directions), heaviest first
    links: list[tuple[Hashable, Hashable, float]]


def picture_links(graph: nx.MultiDiGraph, top_n: int = 40, max_edges: int = 120) -> PictureLinks:
    """The ``top_n`` entities by PageRank, people and organizations before other types and no value types,
    and the ``max_edges`` heaviest links among them (weights summed per unordered pair across kinds)."""
    candidates = ((node, data) for node, data in graph.nodes(data=True) if data.get("entity_type") not in VALUE_TYPES)
    ranked = heapq.nsmallest(
        top_n,
        candidates,
        key=lambda item: (
            item[1].get("entity_type") not in PRIMARY_TYPES,
            -(item[1].get("pagerank") or 0.0),
            str(item[0]),
        ),
    )
    entities = [node for node, _data in ranked]
    # Only the chosen entities' own edges are read: the subgraph view walks their adjacency, not the graph.
    pair_weights: dict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for source, target, weight in graph.subgraph(entities).edges(data="weight", default=1):
        if source == target:
            continue
        pair = (source, target) if str(source) <= str(target) else (target, source)
        pair_weights[pair] += weight
    heaviest = sorted(pair_weights.items(), key=lambda item: (-item[1], str(item[0][0]), str(item[0][1])))
    return PictureLinks(entities, [(a, b, w) for (a, b), w in heaviest[:max_edges]])


def picture_layout(links: PictureLinks) -> dict[Hashable, tuple[float, float]]:
    """Where each of the picture's entities is drawn, the same for the same links (fixed seed, fixed order).

    The linked entities get a spring layout in [-1, 1]²; the entities linked to none of the others shown sit
    in rows beneath it. In one spring layout those would repel everything else and, once the layout is scaled
    to fit, squeeze the linked entities into a knot in the middle of a ring of strangers.
    """
    linked_graph = nx.Graph()
    # Log weights: a pair with 2,000 messages should pull harder than one with 2, not crush the rest to a dot.
    linked_graph.add_weighted_edges_from((a, b, 1.0 + math.log(w)) for a, b, w in links.links if w > 0)
    linked = [node for node in links.entities if node in linked_graph]
    unlinked = [node for node in links.entities if node not in linked_graph]
    positions: dict[Hashable, tuple[float, float]] = {}
    if linked:
        ordered = nx.Graph()  # nodes in rank order, so the layout does not depend on the order links were summed
        ordered.add_nodes_from(linked)
        ordered.add_edges_from(linked_graph.edges(data=True))
        # Separate groups repel each other as far as the layout allows, and scaling that to fit squeezes each
        # into a knot; a faint spring from each group's first entity to the first group's keeps them near.
        # These springs are not drawn.
        groups = sorted(nx.connected_components(ordered), key=lambda group: min(map(linked.index, group)))
        leaders = [min(group, key=linked.index) for group in groups]
        ordered.add_weighted_edges_from((leaders[0], leader, GROUP_SPRING) for leader in leaders[1:])
        spring = nx.spring_layout(ordered, seed=LAYOUT_SEED, weight="weight", iterations=200)
        positions.update((node, (float(x), float(y))) for node, (x, y) in spring.items())
    columns = min(len(unlinked), UNLINKED_COLUMNS)
    for index, node in enumerate(unlinked):
        row, column = divmod(index, columns)
        x = -1.0 + 2.0 * (column + 0.5) / columns
        # Beneath the spring layout, or spread over the whole picture when nothing shown is linked.
        y = -1.3 - 0.25 * row if linked else 1.0 - 2.0 * row / max(1, (len(unlinked) - 1) // columns)
        positions[node] = (x, y)
    return positions


def draw_picture(
    graph: nx.MultiDiGraph, path: Path, top_n: int = 40, max_edges: int = 120, staged: StagedFiles | None = None
) -> Path:
    """A PNG of the graph's core at ``path`` (1600 x 1200 px), written atomically like the exports (with
    ``staged``, only staged there until the caller commits).

    What it shows is ``picture_figure``'s. Deterministic: the same graph gives the same bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = picture_figure(graph, top_n, max_edges)
    canvas = FigureCanvasAgg(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged.open(path) if staged is not None else replaced_atomically(path) as handle:
        canvas.print_png(handle)
    return path


def picture_figure(graph: nx.MultiDiGraph, top_n: int = 40, max_edges: int = 120) -> Figure:
    """The figure ``draw_picture`` renders: the top entities by PageRank and the heaviest links among them.

    Node size follows PageRank, colour the community (the largest ones get a colour each, the rest share a
    grey), labels are the entities' ``label``. A graph without links gives a figure that says so.
    """
    # Imported here: matplotlib costs half a second, and the code location imports this module on every start.
    from matplotlib.figure import Figure

    # A Figure of its own, not pyplot: no global figure registry, so two runs in one process (Dagster's
    # threads) cannot draw on each other's figure.
    figure = Figure(figsize=PICTURE_INCHES, dpi=PICTURE_DPI, facecolor="white")
    links = picture_links(graph, top_n, max_edges) if graph.number_of_edges() else PictureLinks([], [])
    if links.entities:
        _draw_links(figure, graph, links)
    else:
        _draw_no_links(figure, graph)
    return figure


def _draw_no_links(figure: Figure, graph: nx.MultiDiGraph) -> None:
    figure.text(0.5, 0.55, "no links yet", ha="center", va="center", fontsize=40, color="#555555")
    figure.text(
        0.5, 0.45, f"{graph.number_of_nodes():,} entities, {graph.number_of_edges():,} links", ha="center", fontsize=16
    )


def _draw_links(figure: Figure, graph: nx.MultiDiGraph, links: PictureLinks) -> None:
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.patheffects import withStroke

    positions = picture_layout(links)
    # The right-hand strip is the legend's, so it never covers an entity.
    axes = figure.add_axes((0.01, 0.01, 0.85, 0.91))
    axes.set_axis_off()
    # Room for the labels above the outermost nodes.
    axes.margins(0.08)

    if links.links:
        heaviest = max(w for _a, _b, w in links.links)
        scale = math.log1p(heaviest) or 1.0
        axes.add_collection(
            LineCollection(
                [(positions[a], positions[b]) for a, b, _w in links.links],
                linewidths=[0.4 + 4.0 * math.log1p(w) / scale for _a, _b, w in links.links],
                colors="#7a7a7a",
                alpha=0.45,
                zorder=1,
            )
        )

    node_data = [graph.nodes[node] for node in links.entities]
    ranks = [float(data.get("pagerank") or 0.0) for data in node_data]
    top_rank = max(ranks) or 1.0
    # Area by PageRank (square root, so the first entity does not dwarf the fortieth), between 60 and 2,400 pt².
    sizes = [60.0 + 2340.0 * math.sqrt(rank / top_rank) for rank in ranks]
    communities = [data.get("community") for data in node_data]
    axes.scatter(
        [positions[node][0] for node in links.entities],
        [positions[node][1] for node in links.entities],
        s=sizes,
        c=[_community_colour(community) for community in communities],
        edgecolors="white",
        linewidths=1.2,
        zorder=2,
    )
    outline = [withStroke(linewidth=3.5, foreground="white")]
    linked = {node for a, b, _w in links.links for node in (a, b)}
    if linked and len(linked) < len(links.entities):
        axes.text(-1.0, -1.13, "linked to none of the others shown:", fontsize=10, color="#555555", va="bottom")
    for node, data, size in zip(links.entities, node_data, sizes, strict=True):
        axes.annotate(
            _short_label(str(data.get("label") or node)),
            positions[node],
            xytext=(0, math.sqrt(size) / 2 + 2),  # just above the node's edge (size is the area in pt²)
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
            zorder=3,
            path_effects=outline,
            parse_math=False,  # a "$" in a name is a dollar, not mathtext
        )

    figure.suptitle(
        f"Entity graph: {graph.number_of_nodes():,} entities, {graph.number_of_edges():,} links\n"
        f"the top {len(links.entities)} by PageRank (people and organizations first, no values) and the "
        f"{len(links.links)} heaviest links among them",
        fontsize=14,
        y=0.985,
    )
    community_sizes = Counter(community for _node, community in graph.nodes(data="community"))
    shown = sorted({c for c in communities if isinstance(c, int) and c < len(COMMUNITY_COLOURS)})
    handles = [_legend_marker(Line2D, COMMUNITY_COLOURS[c], f"community {c} ({community_sizes[c]:,})") for c in shown]
    if any(_community_colour(c) == OTHER_COMMUNITY_COLOUR for c in communities):
        handles.append(_legend_marker(Line2D, OTHER_COMMUNITY_COLOUR, "other communities"))
    if handles:
        axes.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            fontsize=9,
            frameon=False,
            title="entities per community",
        )


def _community_colour(community: object) -> str:
    if isinstance(community, int) and 0 <= community < len(COMMUNITY_COLOURS):
        return COMMUNITY_COLOURS[community]
    return OTHER_COMMUNITY_COLOUR


def _legend_marker(line_type: Any, colour: str, label: str) -> Any:
    return line_type(
        [], [], marker="o", linestyle="", markersize=9, markerfacecolor=colour, markeredgecolor="white", label=label
    )


def _short_label(label: str) -> str:
    label = " ".join(label.split())  # a newline in a name would stack the label over its neighbours
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"
