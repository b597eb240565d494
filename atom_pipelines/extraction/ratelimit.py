"""Client-side pacing for an LLM provider: stay under the requests-per-minute budget instead of
discovering it through 429s (GraphRAG's fixed 25-way concurrency gets its users 429 storms).

Two sources of truth, both honoured: a configured RPM, spacing requests evenly (pyrate-limiter), and the
provider's ``x-ratelimit-remaining-requests`` / ``x-ratelimit-reset-requests`` headers (when the provider
says none remain, every thread waits for the reset). A 429 that still happens is retried by the ``openai``
client itself, which honours ``Retry-After``.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Mapping

from pyrate_limiter import Limiter, Rate, SingleBucketFactory, StateBucket

log = logging.getLogger(__name__)

REMAINING_HEADER = "x-ratelimit-remaining-requests"
RESET_HEADER = "x-ratelimit-reset-requests"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: The one bucket key: a pacer is already per provider endpoint and key.
_BUCKET = "requests"


def parse_reset(value: str | None) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "20ms", "1h2m3.5s", or plain seconds "1.5") in seconds;
    None when absent or not a duration (the caller says which)."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if _DURATION.fullmatch(text):
        return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _spacing_limiter(requests_per_minute: float) -> Limiter:
    """A limiter that admits one request every 60/rpm seconds, shared by every thread of a pacer.

    Why not ``Rate(rpm, Duration.MINUTE)``: it admits a whole minute's quota at once and then nothing for a
    minute, and OpenAI enforces its RPM over sub-minute windows too, so a burst of the quota is a 429 storm.
    One request per interval (GCRA with a burst of 1, pyrate-limiter's ``StateBucket``) spreads them evenly.
    The interval is rounded up to the millisecond, so the pace never exceeds the configured RPM. No leak
    thread: the bucket's state is one number, with nothing to leak.

    pyrate-limiter's blocking wait advances a waiting request's timestamp by the time it slept instead of
    reading the clock again, so a request that waited several rounds is stamped up to a few milliseconds
    early and the next one may follow that much sooner than the interval (measured: under 10 ms at 1200 RPM
    on two busy cores). The count over any window longer than a few intervals still holds.
    """
    interval_ms = math.ceil(60_000 / requests_per_minute)
    bucket = StateBucket([Rate(1, interval_ms)])
    return Limiter(SingleBucketFactory(bucket, schedule_leak=False), buffer_ms=0)


class RequestPacer:
    """Thread-safe pacing shared by every request to one provider endpoint and key."""

    def __init__(self, requests_per_minute: float | None = None) -> None:
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute must be positive (or None for no limit), not {requests_per_minute}")
        self._limiter = _spacing_limiter(requests_per_minute) if requests_per_minute else None
        self._lock = threading.Lock()
        self._blocked_until = 0.0
        self._malformed_seen: set[tuple[str, str]] = set()

    def wait_turn(self) -> None:
        """Block until this request may be sent: after any reset the provider announced, and in its turn."""
        while True:
            self._wait_out_block()
            if self._limiter is not None and not self._limiter.try_acquire(_BUCKET):
                # Only possible for a weight the rate can never admit; ours is 1, the rate's burst.
                raise RuntimeError("the request pacer refused a request it can never admit")
            with self._lock:
                if time.monotonic() >= self._blocked_until:
                    return
            # The provider said "none left" while this request waited for its turn: its turn is spent, and it
            # waits for the reset like every other.

    def _wait_out_block(self) -> None:
        with self._lock:
            delay = self._blocked_until - time.monotonic()
        while delay > 0:
            time.sleep(delay)
            with self._lock:  # a later answer may have moved the reset further out
                delay = self._blocked_until - time.monotonic()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read the provider's rate-limit headers from any response."""
        remaining_text = headers.get(REMAINING_HEADER)
        reset_text = headers.get(RESET_HEADER)
        reset = parse_reset(reset_text)
        if reset_text is not None and reset is None:
            self._malformed(RESET_HEADER, reset_text)
        if remaining_text is None:
            return
        try:
            remaining = int(float(remaining_text))
        except (ValueError, OverflowError):  # not a number; "inf"
            self._malformed(REMAINING_HEADER, remaining_text)
            return
        if remaining > 0 or reset is None:
            return
        with self._lock:
            self._blocked_until = max(self._blocked_until, time.monotonic() + reset)

    def _malformed(self, header: str, value: str) -> None:
        """Say once per distinct value that a header could not be read: pacing then rests on the RPM alone."""
        with self._lock:
            if (header, value) in self._malformed_seen:
                return
            self._malformed_seen.add((header, value))
        log.warning("ignoring malformed %s header %r: pacing by the configured RPM alone", header, value)
