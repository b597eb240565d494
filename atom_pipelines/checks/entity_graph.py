"""The checks of ``entity_links``: every link's ends are entities of its message."""

from typing import Any

from dagster import AssetCheckResult

from atom_pipelines.checks.results import blocking_check, partition_check_result
from atom_pipelines.partitions import partition_key

ENTITY_LINKS_CHECKS = [
    blocking_check("links_point_at_entities", "entity_links", "Every link's ends are entities of its message.")
]


def entity_links_check_results(dangling: list[dict[str, Any]]) -> list[AssetCheckResult]:
    by_partition: dict[str, list[str]] = {}
    for link in dangling:
        by_partition.setdefault(partition_key(link["mailbox"], link["day"]), []).append(
            f"{link['message_id']}: {link['source_key']} -{link['kind']}-> {link['target_key']} "
            f"({link['missing_end']} missing)"
        )
    return [partition_check_result("links_point_at_entities", by_partition, "links to missing entities")]
