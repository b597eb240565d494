"""The four assets and their checks. Thin wrappers: partition keys in, windows to the work functions,
reports out as ``MaterializeResult`` metadata and check results.

Checks are declared on the assets they guard (``check_specs``) and evaluated in the same step from what
the step just stored, so a blocking failure stops the downstream assets of that run.
"""

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    BetaWarning,
    MaterializeResult,
    MetadataValue,
    asset,
)

from atom_pipelines import config
from atom_pipelines.extraction.key_status import key_status
from atom_pipelines.extraction.resource import EntityExtractor
from atom_pipelines.extraction.run import extract_entities
from atom_pipelines.graph.analysis import analyze_graph
from atom_pipelines.graph.links import link_entities
from atom_pipelines.mail.source import MailSource
from atom_pipelines.mail.sync import sync_messages
from atom_pipelines.partitions import MAILBOX_DIMENSION, mailbox_day_partitions, windows_from_partition_keys
from atom_pipelines.store.resource import MailStore

#: How many failing items a check names in its metadata; the count is always complete.
NAMED_IN_CHECK = 50
#: Below this many messages with text a partition's none_found share says nothing.
MIN_MESSAGES_FOR_SHARE = 5

# Batching partitions into runs is the point of backfill_policy (beta in Dagster 1.13); say it once here
# instead of on every import.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=BetaWarning)

_backfill_policy = BackfillPolicy.multi_run(max_partitions_per_run=config.max_partitions_per_run())


def _blocking(name: str, asset_name: str, description: str) -> AssetCheckSpec:
    return AssetCheckSpec(name, asset=asset_name, blocking=True, description=description)


def _check(name: str, failures: Mapping[str, Any], what: str) -> AssetCheckResult:
    """A blocking ERROR check that passes only when ``failures`` (partition -> what failed) is empty."""
    named = dict(list(sorted(failures.items()))[:NAMED_IN_CHECK])
    return AssetCheckResult(
        check_name=name,
        passed=not failures,
        severity=AssetCheckSeverity.ERROR,
        description=f"{len(failures)} partition(s) with {what}" if failures else f"no partition with {what}",
        metadata={"failed_partitions": len(failures), "failures": MetadataValue.json(named)},
    )


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> MetadataValue:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")[:80]

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return MetadataValue.md("\n".join(lines))


@asset(
    partitions_def=mailbox_day_partitions,
    backfill_policy=_backfill_policy,
    group_name="mail_graph",
    kinds={"python", "sql"},
    check_specs=[
        _blocking("no_duplicate_message_ids", "outlook_messages", "No message id is listed twice in a partition."),
        _blocking(
            "no_quarantined_records",
            "outlook_messages",
            "No source record that may belong to the partition was rejected (bad JSON, no id, no date, no mailbox).",
        ),
        _blocking(
            "listing_complete",
            "outlook_messages",
            "The store holds exactly as many distinct messages per day as the source listed (for Graph: as many "
            "as its @odata.count over every page).",
        ),
    ],
)
def outlook_messages(context: AssetExecutionContext, mail_source: MailSource, store: MailStore) -> MaterializeResult:
    """The messages of each mailbox-day, with cleaned text split from quoted history and signatures."""
    windows = windows_from_partition_keys(context.partition_keys)
    report = sync_messages(mail_source, store, windows)
    removed = 1 - report.chars_extraction / report.chars_raw if report.chars_raw else 0.0
    return MaterializeResult(
        metadata={
            "dagster/row_count": report.message_count,
            "partitions": len(report.messages_per_partition),
            "chars_raw": report.chars_raw,
            "chars_for_extraction": report.chars_extraction,
            "share_of_text_removed": round(removed, 4),
            "text_basis": MetadataValue.json(dict(report.text_basis)),
            "quarantined_records": sum(len(r) for r in report.quarantined.values()),
            **{f"source_{name}": n for name, n in sorted(report.source_stats.items())},
            "preview": _md_table(
                ["received", "from", "subject", "basis"],
                [(r["received_at"], r["sender_address"], r["subject"], r["text_basis"]) for r in report.preview],
            ),
        },
        check_results=[
            _check("no_duplicate_message_ids", report.duplicate_ids, "message ids listed twice"),
            _check(
                "no_quarantined_records",
                {k: [f"{r.origin}: {r.reason}" for r in v] for k, v in report.quarantined.items()},
                "rejected source records",
            ),
            _check("listing_complete", report.incomplete, "stored messages not matching the source's listing"),
        ],
    )


@asset(
    partitions_def=mailbox_day_partitions,
    backfill_policy=_backfill_policy,
    group_name="mail_graph",
    kinds={"python", "sql"},
    deps=[outlook_messages],
    # Bounds concurrent extraction across runs, so a 365-day backfill cannot stampede the provider.
    pool="openai",
    check_specs=[
        _blocking(
            "extraction_succeeded",
            "email_entities",
            "Every message has an extraction outcome, none failed, and a partition with messages has entities.",
        ),
        AssetCheckSpec(
            "none_found_share_sane",
            asset="email_entities",
            description="Not too many messages with text were answered 'nothing here' (a model gone quiet).",
        ),
    ],
)
def email_entities(context: AssetExecutionContext, extractor: EntityExtractor, store: MailStore) -> MaterializeResult:
    """One row per entity mention, with the provider and model that produced it."""
    windows = windows_from_partition_keys(context.partition_keys)
    report = extract_entities(extractor, store, windows)
    failures: dict[str, Any] = {}
    for key, part in report.partitions.items():
        problems: dict[str, Any] = {}
        if part.failed:
            problems["failed_messages"] = part.failed
        if part.without_outcome:
            problems["messages_without_outcome"] = part.without_outcome
        if part.messages and not part.entities:
            problems["no_entities"] = f"{part.messages} messages, 0 entities"
        if problems:
            failures[key] = problems
    if failures:
        context.log.error(f"extraction failed in {len(failures)} partition(s): {sorted(failures)[:10]}")
    total = report.message_count
    quiet = {
        key: f"{part.none_found_with_text} of {part.with_text} messages with text answered none_found"
        for key, part in report.partitions.items()
        if part.with_text >= MIN_MESSAGES_FOR_SHARE
        and part.none_found_with_text / part.with_text > config.max_none_found_share()
    }
    return MaterializeResult(
        metadata={
            "dagster/row_count": report.entity_rows,
            "messages": total,
            "failed_messages": sum(len(p.failed) for p in report.partitions.values()),
            "relations": report.relation_rows,
            "llm_calls": report.llm_calls,
            "cache_hits": report.cache_hits,
            "prompt_tokens": report.usage.prompt,
            "completion_tokens": report.usage.completion,
            "reasoning_tokens": report.usage.reasoning,
            "cached_prompt_tokens": report.usage.cached,
            "estimated_cost_usd": round(report.cost_usd, 6),
            "ungrounded_entities_dropped": report.dropped_entities,
            "ungrounded_relations_dropped": report.dropped_relations,
            **{f"entities_{kind}": n for kind, n in sorted(report.entities_by_type.items())},
            **{f"outcome_{name}": n for name, n in sorted(report.outcomes.items())},
            "share_by_provider": MetadataValue.json(
                {p: round(n / total, 4) for p, n in report.messages_by_provider.items()} if total else {}
            ),
        },
        check_results=[
            _check("extraction_succeeded", failures, "failed or empty extraction"),
            AssetCheckResult(
                check_name="none_found_share_sane",
                passed=not quiet,
                severity=AssetCheckSeverity.WARN,
                description=f"share of none_found above {config.max_none_found_share():.0%} in {len(quiet)} partition(s)"
                if quiet
                else "none_found share is sane",
                metadata={
                    "failed_partitions": len(quiet),
                    "failures": MetadataValue.json(dict(sorted(quiet.items())[:NAMED_IN_CHECK])),
                },
            ),
        ],
    )


@asset(
    partitions_def=mailbox_day_partitions,
    backfill_policy=_backfill_policy,
    group_name="mail_graph",
    kinds={"python", "sql"},
    deps=[email_entities],
    check_specs=[
        _blocking("links_point_at_entities", "entity_links", "Every link's ends are entities of its message.")
    ],
)
def entity_links(context: AssetExecutionContext, store: MailStore) -> MaterializeResult:
    """Edges between the entities of each message: sent_to, cc_to, works_at, co_mention."""
    windows = windows_from_partition_keys(context.partition_keys)
    report = link_entities(store, windows)
    dangling: dict[str, list[str]] = {}
    for link in report.dangling:
        key = f"{link['day']}|{link['mailbox']}"
        dangling.setdefault(key, []).append(
            f"{link['message_id']}: {link['source_key']} -{link['kind']}-> {link['target_key']} ({link['missing_end']} missing)"
        )
    return MaterializeResult(
        metadata={
            "dagster/row_count": report.link_count,
            **{f"links_{kind}": n for kind, n in sorted(report.links_by_kind.items())},
        },
        check_results=[_check("links_point_at_entities", dangling, "links to missing entities")],
    )


@asset(group_name="mail_graph", kinds={"networkx"}, deps=[entity_links])
def entity_graph(store: MailStore) -> MaterializeResult:
    """One graph over every link of every mailbox: size, components, central entities, a GraphML file."""
    report = analyze_graph(store, config.graph_export_dir())
    return MaterializeResult(
        metadata={
            "nodes": report.nodes,
            "edges": report.edges,
            "components": report.components,
            "largest_component": report.largest_component,
            "graphml_path": MetadataValue.path(str(report.graphml_path)),
            "top_by_degree": _md_table(["entity", "name", "type", "degree"], report.top_by_degree),
            "top_by_pagerank": _md_table(
                ["entity", "name", "type", "pagerank"],
                [(k, n, t, f"{r:.5f}") for k, n, t, r in report.top_by_pagerank],
            ),
        }
    )


@asset(
    group_name="llm",
    kinds={"openai"},
    check_specs=[
        AssetCheckSpec(
            "llm_keys_accepted",
            asset="llm_key_status",
            description="Every registered mailbox whose chain uses an LLM has a key the provider accepts.",
        )
    ],
)
def llm_key_status(context: AssetExecutionContext, extractor: EntityExtractor) -> MaterializeResult:
    """Per mailbox: which key variable extracts its mail, whether it is set, whether the provider accepts it."""
    mailboxes = context.instance.get_dynamic_partitions(MAILBOX_DIMENSION)
    statuses = key_status(extractor, mailboxes)
    unusable = {s.mailbox: s.reason for s in statuses if not s.usable}
    for status in statuses:
        context.log.info(f"key status {status.mailbox}: ${status.key_env}: {status.reason}")
    return MaterializeResult(
        metadata={
            "mailboxes": len(statuses),
            "usable": len(statuses) - len(unusable),
            "status": _md_table(
                ["mailbox", "key variable", "LLM models", "configured", "accepted", "reason"],
                [
                    (s.mailbox, s.key_env, ", ".join(s.llm_models) or "-", s.configured, s.accepted, s.reason)
                    for s in statuses
                ],
            ),
        },
        check_results=[
            AssetCheckResult(
                check_name="llm_keys_accepted",
                passed=not unusable,
                severity=AssetCheckSeverity.ERROR,
                description=f"{len(unusable)} mailbox(es) without a usable key" if unusable else "every key is usable",
                metadata={"unusable": MetadataValue.json(unusable)},
            )
        ],
    )
