"""Token budgets: extraction stops *before* the call that would spend past a limit, per mailbox-day and per run."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field


class BudgetExceeded(RuntimeError):
    """Extraction stopped before a token budget would be exceeded."""


@dataclass
class TokenBudget:
    per_partition: int | None
    per_run: int | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    spent_run: int = 0
    #: Tokens spent or reserved per partition, by its name (a Dagster partition key, or a mailbox).
    spent_partition: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: int = 0

    def reserve(self, partition: str, estimate: int) -> None:
        with self.lock:
            if self.per_run is not None and self.spent_run + estimate > self.per_run:
                raise BudgetExceeded(
                    f"token budget per run ({self.per_run:,}) would be exceeded: {self.spent_run:,} tokens "
                    f"spent or reserved on {self.calls} calls, next call needs up to {estimate:,}"
                )
            if self.per_partition is not None and self.spent_partition[partition] + estimate > self.per_partition:
                raise BudgetExceeded(
                    f"token budget per partition ({self.per_partition:,}) would be exceeded in {partition}: "
                    f"{self.spent_partition[partition]:,} tokens spent or reserved, next call needs up to {estimate:,}"
                )
            self.spent_run += estimate
            self.spent_partition[partition] += estimate
            self.calls += 1

    def settle(self, partition: str, estimate: int, actual: int) -> None:
        with self.lock:
            self.spent_run += actual - estimate
            self.spent_partition[partition] += actual - estimate
