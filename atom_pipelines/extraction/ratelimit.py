"""Client-side pacing for an LLM provider: stay under the requests-per-minute budget instead of
discovering it through 429s (GraphRAG's fixed 25-way concurrency gets its users 429 storms).

Two sources of truth, both honoured: a configured RPM (spacing requests evenly), and the provider's
``x-ratelimit-remaining-requests`` / ``x-ratelimit-reset-requests`` headers (when the provider says none
remain, every thread waits for the reset). A 429 that still happens is retried by the ``openai`` client
itself, which honours ``Retry-After``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|h|m|s))")


def parse_reset(value: str | None) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "20ms", "1h2m3.5s") in seconds."""
    if not value:
        return None
    total = 0.0
    matched = False
    for number, unit in _DURATION.findall(value.strip()):
        matched = True
        total += float(number) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
    if matched:
        return total
    try:
        return float(value)
    except ValueError:
        return None


class RequestPacer:
    """Thread-safe pacing shared by every request to one provider endpoint and key."""

    def __init__(self, requests_per_minute: float | None = None) -> None:
        self._interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._blocked_until = 0.0

    def wait_turn(self) -> None:
        """Block until this request may be sent."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot, self._blocked_until)
            self._next_slot = slot + self._interval
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read the provider's rate-limit headers from any response."""
        remaining = headers.get("x-ratelimit-remaining-requests")
        reset = parse_reset(headers.get("x-ratelimit-reset-requests"))
        if remaining is None or reset is None:
            return
        try:
            left = int(float(remaining))
        except ValueError:
            return
        if left <= 0:
            with self._lock:
                self._blocked_until = max(self._blocked_until, time.monotonic() + reset)
