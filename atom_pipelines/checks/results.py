"""How our partition checks report: one evaluation per run step, naming every failing mailbox-day.

Every blocking check of a partitioned asset puts its failures in metadata as ``failures`` (partition key ->
what failed there, the first ``NAMED_IN_CHECK``) and ``failed_partitions`` (the complete count). The
analyst alerts read exactly these two keys, so a check built here is alerted with its mailbox-days.
"""

from __future__ import annotations

from collections import defaultdict
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


class StepChecks:
    """The check results of one asset step, and every mailbox-day its ERROR checks failed: the step records
    those days as failed in the store's progress (``mailbox_days``), complete where the metadata names only
    the first ``NAMED_IN_CHECK``."""

    def __init__(self) -> None:
        self.results: list[AssetCheckResult] = []
        self._failed: dict[str, list[str]] = defaultdict(list)

    def add(
        self,
        name: str,
        failures: Mapping[str, Any],
        what: str,
        severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
    ) -> StepChecks:
        self.results.append(partition_check_result(name, failures, what, severity))
        if severity == AssetCheckSeverity.ERROR:
            for key in failures:
                self._failed[key].append(name)
        return self

    @property
    def failed_days(self) -> dict[str, str]:
        """mailbox-day key -> the ERROR checks that failed it, comma-separated."""
        return {key: ", ".join(names) for key, names in self._failed.items()}
