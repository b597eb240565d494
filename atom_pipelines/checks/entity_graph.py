"""The checks of ``entity_links`` (every link's ends are entities of its message) and of ``entity_graph``
(provenance on every edge, one address per person unless an alias says so, a sane share of body names merged,
and a graph that is not empty when links exist)."""

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from atom_pipelines.checks.results import NAMED_IN_CHECK, StepChecks, blocking_check
from atom_pipelines.partitions import mailbox_day_key

#: Below this many body-name mentions the merge share says nothing (a first day's "0 of 5" is not resolution
#: that stopped merging), so the band is not applied and the check says why.
MIN_NAME_MENTIONS = 50

ENTITY_LINKS_CHECKS = [
    blocking_check("links_point_at_entities", "entity_links", "Every link's ends are entities of its message.")
]

ENTITY_GRAPH_CHECKS = [
    AssetCheckSpec(
        "graph_edges_have_provenance",
        asset="entity_graph",
        description="Every edge has at least one stored e-mail behind it (graph_edge_messages), no more than its "
        "weight, and each of them is a stored message.",
    ),
    AssetCheckSpec(
        "one_address_per_person",
        asset="entity_graph",
        description="No person node holds two addresses unless ATOM_GRAPH_ALIASES makes one the other's alias.",
    ),
    AssetCheckSpec(
        "name_merge_share_in_band",
        asset="entity_graph",
        description="The share of body-name mentions merged into a person stays within ATOM_GRAPH_MIN_MERGE_SHARE "
        "and ATOM_GRAPH_MAX_MERGE_SHARE (WARN: resolution suddenly merging nothing, or everything).",
    ),
    AssetCheckSpec(
        "graph_not_empty",
        asset="entity_graph",
        description="The graph has edges whenever entity_links holds links.",
    ),
]


def entity_links_check_results(dangling: list[dict[str, Any]]) -> StepChecks:
    by_partition: dict[str, list[str]] = {}
    for link in dangling:
        by_partition.setdefault(mailbox_day_key(link["mailbox"], link["day"]), []).append(
            f"{link['message_id']}: {link['source_key']} -{link['kind']}-> {link['target_key']} "
            f"({link['missing_end']} missing)"
        )
    return StepChecks().add("links_point_at_entities", by_partition, "links to missing entities")


def entity_graph_check_results(
    facts: Mapping[str, Any],
    aliases: Sequence[tuple[str, str]],
    name_mentions: int,
    names_merged: int,
    merge_band: tuple[float, float],
) -> list[AssetCheckResult]:
    """The four checks, judged on what the build wrote (``analysis.graph_check_facts``)."""
    return [
        _provenance(facts),
        _one_address_per_person(facts["people_addresses"], aliases),
        _merge_share(name_mentions, names_merged, merge_band),
        _not_empty(facts["links"], facts["edges"]),
    ]


def _provenance(facts: Mapping[str, Any]) -> AssetCheckResult:
    without, missing = facts["edges_without_provenance"], facts["provenance_to_missing_messages"]
    passed = not without and not missing
    return AssetCheckResult(
        check_name="graph_edges_have_provenance",
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description="every edge leads to its e-mails"
        if passed
        else f"{len(without)} edge(s) without (or with more than their weight of) e-mails; "
        f"{missing} provenance row(s) naming a message the store does not hold",
        metadata={
            "edges_without_provenance": MetadataValue.json(without[:NAMED_IN_CHECK]),
            "provenance_to_missing_messages": missing,
        },
    )


def _one_address_per_person(
    people_addresses: Mapping[str, Sequence[str]], aliases: Sequence[tuple[str, str]]
) -> AssetCheckResult:
    canonical_of = dict(aliases)

    def canonical(address: str) -> str:
        seen = set()
        while address in canonical_of and address not in seen:
            seen.add(address)
            address = canonical_of[address]
        return address

    # A person node is keyed by its own (canonical) address: any other address it holds must be an alias of it.
    merged = {}
    for key, addresses in people_addresses.items():
        own = key.removeprefix("person:")
        foreign = sorted(a for a in addresses if a != own and canonical(a) != own)
        if foreign:
            merged[key] = foreign
    return AssetCheckResult(
        check_name="one_address_per_person",
        passed=not merged,
        severity=AssetCheckSeverity.ERROR,
        description="every person holds one address (or its configured aliases)"
        if not merged
        else f"{len(merged)} person node(s) hold addresses no alias joins",
        metadata={
            "people": len(people_addresses),
            "merged_without_alias": MetadataValue.json(dict(sorted(merged.items())[:NAMED_IN_CHECK])),
        },
    )


def _merge_share(name_mentions: int, names_merged: int, band: tuple[float, float]) -> AssetCheckResult:
    low, high = band
    share = names_merged / name_mentions if name_mentions else None
    judged = name_mentions >= MIN_NAME_MENTIONS
    passed = not judged or low <= share <= high
    if share is None:
        description = "no body-name mention to resolve"
    else:
        description = (
            f"{names_merged} of {name_mentions} body-name mentions merged ({share:.1%}; band {low:.0%}-{high:.0%})"
        )
        if not judged:
            description += f"; fewer than {MIN_NAME_MENTIONS} mentions, too few to judge"
    return AssetCheckResult(
        check_name="name_merge_share_in_band",
        passed=passed,
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "name_mentions": name_mentions,
            "names_merged": names_merged,
            "merge_share": float(share) if share is not None else MetadataValue.null(),
            "band_low": low,
            "band_high": high,
        },
    )


def _not_empty(links: int, edges: int) -> AssetCheckResult:
    passed = links == 0 or edges > 0
    return AssetCheckResult(
        check_name="graph_not_empty",
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description=f"{edges} edges from {links} links"
        if passed
        else f"no edge although entity_links holds {links} links",
        metadata={"links": links, "edges": edges},
    )
