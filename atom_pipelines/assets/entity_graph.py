"""``entity_links`` (edges between the entities of each message) and ``entity_graph`` (one graph over all)."""

from dagster import (
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from atom_pipelines import config
from atom_pipelines.assets.extraction import email_entities
from atom_pipelines.assets.policy import GROUP, backfill_policy
from atom_pipelines.checks.entity_graph import ENTITY_LINKS_CHECKS, entity_links_check_results
from atom_pipelines.entity_graph.analysis import analyze_graph
from atom_pipelines.entity_graph.links import link_entities
from atom_pipelines.partitions import mailbox_day_partitions, windows_from_partition_keys
from atom_pipelines.store.resource import MailStore


def _ranking_schema(measure: str, measure_type: str) -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn("entity", "string"),
            TableColumn("name", "string"),
            TableColumn("type", "string"),
            TableColumn(measure, measure_type),
        ]
    )


@asset(
    partitions_def=mailbox_day_partitions,
    backfill_policy=backfill_policy,
    group_name=GROUP,
    kinds={"python", "sql"},
    deps=[email_entities],
    check_specs=ENTITY_LINKS_CHECKS,
)
def entity_links(context: AssetExecutionContext, store: MailStore) -> MaterializeResult:
    """Edges between the entities of each message: sent_to, cc_to, works_at, co_mention, rel:<relation>."""
    windows = windows_from_partition_keys(context.partition_keys)
    report = link_entities(store, windows)
    return MaterializeResult(
        metadata={
            "dagster/row_count": report.link_count,
            **{f"links_{kind}": n for kind, n in sorted(report.links_by_kind.items())},
        },
        check_results=entity_links_check_results(report.dangling),
    )


@asset(group_name=GROUP, kinds={"networkx"}, deps=[entity_links])
def entity_graph(store: MailStore) -> MaterializeResult:
    """One graph over every link of every mailbox: size, components, central entities, a GraphML file."""
    report = analyze_graph(store, config.load_settings().graph_export_dir)
    return MaterializeResult(
        metadata={
            "nodes": report.nodes,
            "edges": report.edges,
            "components": report.components,
            "largest_component": report.largest_component,
            "graphml_path": MetadataValue.path(str(report.graphml_path)),
            "top_by_degree": MetadataValue.table(
                [TableRecord({"entity": k, "name": n, "type": t, "degree": d}) for k, n, t, d in report.top_by_degree],
                schema=_ranking_schema("degree", "int"),
            ),
            "top_by_pagerank": MetadataValue.table(
                [
                    TableRecord({"entity": k, "name": n, "type": t, "pagerank": round(r, 5)})
                    for k, n, t, r in report.top_by_pagerank
                ],
                schema=_ranking_schema("pagerank", "float"),
            ),
        }
    )
