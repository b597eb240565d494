"""How our partition checks report: one evaluation per run step, naming every failing mailbox-day.

Every blocking check of a partitioned asset puts its failures in metadata as ``failures`` (partition key ->
what failed there, the first ``NAMED_IN_CHECK``) and ``failed_partitions`` (the complete count). The
analyst alerts read exactly these two keys, so a check built here is alerted with its mailbox-days.
"""

from collections.abc import Mapping
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

#: How many failing items a check names in its metadata; the count is always complete.
NAMED_IN_CHECK = 50


def blocking_check(name: str, asset: str, description: str) -> AssetCheckSpec:
    """A check evaluated inside its asset's step whose ERROR stops the assets downstream of it in the run."""
    return AssetCheckSpec(name, asset=asset, blocking=True, description=description)


def partition_check_result(
    name: str,
    failures: Mapping[str, Any],
    what: str,
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
) -> AssetCheckResult:
    """Passes only when ``failures`` (partition key -> what failed there) is empty."""
    named = dict(sorted(failures.items())[:NAMED_IN_CHECK])
    return AssetCheckResult(
        check_name=name,
        passed=not failures,
        severity=severity,
        description=f"{len(failures)} partition(s) with {what}" if failures else f"no partition with {what}",
        metadata={"failed_partitions": len(failures), "failures": MetadataValue.json(named)},
    )
