"""``entity_links`` (edges between the entities of each message) and ``entity_graph`` (one graph over all)."""

import base64
import io
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    Config,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)
from PIL import Image
from pydantic import Field

from atom_pipelines.assets.extraction import email_entities
from atom_pipelines.assets.mailbox_days import failure_recorded, progress_metadata, record_step, step_windows
from atom_pipelines.assets.policy import GROUP, backfill_policy
from atom_pipelines.checks.entity_graph import (
    ENTITY_GRAPH_CHECKS,
    ENTITY_LINKS_CHECKS,
    entity_graph_check_results,
    entity_links_check_results,
)
from atom_pipelines.config import load_settings
from atom_pipelines.entity_graph.analysis import GraphOptions, GraphReport, build_entity_graph, graph_check_facts
from atom_pipelines.entity_graph.links import link_entities
from atom_pipelines.partitions import mailbox_partitions
from atom_pipelines.store.resource import MailStore


@asset(
    partitions_def=mailbox_partitions,
    backfill_policy=backfill_policy,
    group_name=GROUP,
    kinds={"python", "sql"},
    deps=[email_entities],
    check_specs=ENTITY_LINKS_CHECKS,
)
def entity_links(context: AssetExecutionContext, store: MailStore) -> MaterializeResult:
    """Edges between the entities of each message: sent_to, cc_to, works_at, co_mention, rel:<relation>."""
    windows = step_windows(context, store, "entity_links")
    with failure_recorded(context, store, "entity_links", windows):
        report = link_entities(store, windows)
    checks = entity_links_check_results(report.dangling)
    record_step(context, store, "entity_links", windows, rows=report.links_per_partition, failed=checks.failed_days)
    return MaterializeResult(
        metadata={
            "dagster/row_count": report.link_count,
            **{f"links_{kind}": n for kind, n in sorted(report.links_by_kind.items())},
            **progress_metadata(store, "entity_links", context.partition_keys),
        },
        check_results=checks.results,
    )


def graph_refresh_condition(minutes: int) -> AutomationCondition:
    """When ``entity_graph`` rebuilds by itself: after entity_links changed, at most once per interval, and
    never while a run or backfill of entity_links is still going.

    Declarative automation rather than a sensor or schedule, because Dagster already knows each of these
    facts: ``any_deps_updated`` (some entity_links partition landed since the graph was last requested),
    ``cron_tick_passed`` since then (at most once per interval), and ``any_deps_in_progress`` (which covers
    backfills, so a 365-day history sync yields one graph at its end instead of one per interval). Dagster's
    ``on_cron`` is not enough here: it also wants an update after the latest tick, so a backfill whose last
    partition landed just before a tick would leave the graph stale until the next change.
    """
    cron = "0 * * * *" if minutes == 60 else f"*/{minutes} * * * *"
    return (
        AutomationCondition.cron_tick_passed(cron).since_last_handled()
        # Since the last request, not the last materialization: links landing while the graph builds are
        # newer than what that build read, and its materialization must not clear them.
        & AutomationCondition.any_deps_updated().since(
            AutomationCondition.newly_requested() | AutomationCondition.initial_evaluation()
        )
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
    ).with_label(f"entity_links changed, at most every {minutes} min, no links run in progress")


class EntityGraphConfig(Config):
    full: bool = Field(
        default=False,
        description="Recompute communities and betweenness even if few edges changed (an incremental build keeps them).",
    )


@asset(
    group_name=GROUP,
    kinds={"networkx", "sql"},
    deps=[entity_links],
    check_specs=ENTITY_GRAPH_CHECKS,
    automation_condition=graph_refresh_condition(load_settings().graph_refresh_minutes),
)
def entity_graph(context: AssetExecutionContext, config: EntityGraphConfig, store: MailStore) -> MaterializeResult:
    """One graph over every link of every mailbox: resolved identities, each e-mail counted once, typed edges
    with their e-mails (graph_* tables), PageRank, betweenness, Louvain communities, exports and a picture."""
    settings = load_settings()
    report = build_entity_graph(
        store,
        GraphOptions(
            export_dir=settings.graph_export_dir,
            aliases=dict(settings.graph_aliases),
            never_merge=settings.graph_never_merge,
            edge_messages=settings.graph_edge_messages,
            full_rebuild_share=settings.graph_full_rebuild_share,
            full_rebuild_hours=settings.graph_full_rebuild_hours,
            force_full=config.full,
        ),
    )
    context.log.info(
        f"entity_graph {report.mode} build ({report.reason}): {report.nodes} nodes, {report.edges} edges from "
        f"{report.links} links, {report.copies_removed} copy counts removed; seconds {report.seconds}"
    )
    checks = entity_graph_check_results(
        graph_check_facts(store),
        settings.graph_aliases,
        report.name_mentions,
        report.names_merged,
        (settings.graph_min_merge_share, settings.graph_max_merge_share),
    )
    return MaterializeResult(metadata=_graph_metadata(report), check_results=checks)


def _graph_metadata(report: GraphReport) -> dict[str, Any]:
    return {
        "build": report.mode,
        "build_reason": report.reason,
        "nodes": report.nodes,
        "edges": report.edges,
        "links": report.links,
        "copies_removed": report.copies_removed,
        "changed_edges": report.changed_edges,
        "people_before_resolution": report.people_before,
        "people_after_resolution": report.people_after,
        "name_mentions": report.name_mentions,
        "names_merged": report.names_merged,
        "components": report.components,
        "largest_component": report.largest_component,
        "seconds": MetadataValue.json(report.seconds),
        "graphml_path": MetadataValue.path(str(report.exports.graphml)),
        "gexf_path": MetadataValue.path(str(report.exports.gexf)),
        "node_link_json_path": MetadataValue.path(str(report.exports.node_link_json)),
        "picture_path": MetadataValue.path(str(report.picture)),
        "picture": MetadataValue.md(_inline_picture(report.picture)),
        "top_communities": MetadataValue.table(
            [
                TableRecord(
                    {
                        "community": c.community,
                        "size": c.size,
                        "people": c.people,
                        "top_members": ", ".join(m["label"] for m in c.top_members),
                    }
                )
                for c in report.communities
            ],
            schema=TableSchema(
                columns=[
                    TableColumn("community", "int"),
                    TableColumn("size", "int"),
                    TableColumn("people", "int"),
                    TableColumn("top_members", "string"),
                ]
            ),
        ),
        "top_people": MetadataValue.table([TableRecord(row) for row in report.top_people], schema=RANKING_SCHEMA),
        "top_by_pagerank": MetadataValue.table(
            [TableRecord(row) for row in report.top_by_pagerank], schema=RANKING_SCHEMA
        ),
    }


RANKING_SCHEMA = TableSchema(
    columns=[
        TableColumn("entity", "string"),
        TableColumn("name", "string"),
        TableColumn("type", "string"),
        TableColumn("messages", "int"),
        TableColumn("degree", "int"),
        TableColumn("pagerank", "float"),
        TableColumn("community", "int"),
    ]
)


#: The inline picture is a thumbnail: metadata lives in the event log, and a build every 15 minutes would
#: otherwise store the full PNG (about 300 KB at scale) 96 times a day. The full one is at picture_path.
INLINE_PICTURE_PX = (800, 600)


def _inline_picture(path: Path) -> str:
    """A thumbnail of the PNG as a Markdown image with a data URI: the asset's page shows it without a file
    server."""
    with Image.open(path) as picture:
        picture.thumbnail(INLINE_PICTURE_PX)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=True)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![entity graph](data:image/png;base64,{encoded})"
