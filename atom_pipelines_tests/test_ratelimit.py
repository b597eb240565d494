"""The request pacer: OpenAI's reset durations read, malformed rate-limit headers said out loud, requests
spaced at the configured RPM across threads, and "none remaining" holding every thread until the reset.

Timing is real (threads and the monotonic clock, no fake time). Only lower bounds are asserted tightly: a
busy machine makes things slower, never faster; upper bounds are generous and only catch a pacer that hangs.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from atom_pipelines.extraction.ratelimit import REMAINING_HEADER, RESET_HEADER, RequestPacer, parse_reset

#: Timestamps are whole milliseconds in the limiter: a start read just before the first one may be up to
#: that much later.
CLOCK_RESOLUTION_S = 0.002


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1.0),
        ("20ms", 0.02),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("2m30s", 150.0),
        ("0ms", 0.0),
        (" 1.5s ", 1.5),
        ("1.5", 1.5),  # plain seconds, as some compatible servers send
        (None, None),
        ("", None),
        ("soon", None),
        ("1s and then some", None),  # a duration followed by anything else is not a duration
        ("-1", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_reset_reads_openais_durations_and_nothing_else(value: str | None, seconds: float | None) -> None:
    assert parse_reset(value) == seconds


def _turns(pacer: RequestPacer, threads: int, per_thread: int) -> list[float]:
    """Take ``threads * per_thread`` turns from that many threads at once; when each turn was granted."""
    granted: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        for _ in range(per_thread):
            pacer.wait_turn()
            with lock:
                granted.append(time.monotonic())

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(worker) for _ in range(threads)]:
            future.result(timeout=60)
    return sorted(granted)


@pytest.mark.parametrize("rpm", [600, 1200])
def test_requests_from_many_threads_are_spaced_at_the_rpm(rpm: int) -> None:
    interval = 60 / rpm
    started = time.monotonic()
    granted = _turns(RequestPacer(requests_per_minute=rpm), threads=4, per_thread=5)

    assert len(granted) == 20
    elapsed = granted[-1] - started
    assert elapsed >= 19 * interval - CLOCK_RESOLUTION_S, f"20 requests in {elapsed:.3f}s at {rpm} RPM"
    assert elapsed < 19 * interval + 10, "the pacer hung"
    gaps = [later - earlier for earlier, later in zip(granted, granted[1:], strict=False)]
    # Evenly spread, not a burst: no two turns closer than half the interval (a burst shows gaps of ~0;
    # the limiter's stamp of a request that waited may be a few ms early, see ratelimit._spacing_limiter).
    assert min(gaps) >= interval / 2, f"gaps {[round(g, 3) for g in gaps]}"
    # Over any five consecutive turns the pace holds to within that same jitter.
    windows = [granted[i + 5] - granted[i] for i in range(len(granted) - 5)]
    assert min(windows) >= 5 * interval - interval / 2


def test_without_an_rpm_or_headers_nobody_waits() -> None:
    started = time.monotonic()
    _turns(RequestPacer(), threads=4, per_thread=25)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("rpm", [None, 1200])
def test_none_remaining_holds_every_thread_until_the_reset(rpm: int | None) -> None:
    pacer = RequestPacer(requests_per_minute=rpm)
    pacer.wait_turn()
    told = time.monotonic()
    pacer.observe({REMAINING_HEADER: "0", RESET_HEADER: "500ms"})
    granted = _turns(pacer, threads=3, per_thread=1)
    assert min(granted) - told >= 0.5, f"a thread went {min(granted) - told:.3f}s after 'none remaining, 500ms'"
    # Requests remaining, or a reset long past: no one waits on the headers.
    pacer.observe({REMAINING_HEADER: "7", RESET_HEADER: "6m0s"})
    again = time.monotonic()
    pacer.wait_turn()
    assert time.monotonic() - again < 1


def test_a_reset_announced_while_a_thread_waits_for_its_turn_holds_it_too() -> None:
    pacer = RequestPacer(requests_per_minute=60)  # one turn a second
    pacer.wait_turn()
    waiting = threading.Thread(target=pacer.wait_turn)
    began = time.monotonic()
    waiting.start()
    time.sleep(0.2)  # the thread is waiting for its turn (due at ~1 s)
    told = time.monotonic()
    pacer.observe({REMAINING_HEADER: "0", RESET_HEADER: "2s"})
    waiting.join(timeout=30)
    assert not waiting.is_alive()
    assert time.monotonic() - told >= 2.0, f"went {time.monotonic() - began:.2f}s after it began waiting"


def test_a_malformed_header_is_logged_once_per_value_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    pacer = RequestPacer()
    with caplog.at_level(logging.WARNING, logger="atom_pipelines.extraction.ratelimit"):
        for _ in range(3):
            pacer.observe({REMAINING_HEADER: "lots", RESET_HEADER: "1s"})
        pacer.observe({REMAINING_HEADER: "0", RESET_HEADER: "soon"})
        pacer.observe({REMAINING_HEADER: "inf", RESET_HEADER: "1s"})
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == [
        f"ignoring malformed {REMAINING_HEADER} header 'lots': pacing by the configured RPM alone",
        f"ignoring malformed {RESET_HEADER} header 'soon': pacing by the configured RPM alone",
        f"ignoring malformed {REMAINING_HEADER} header 'inf': pacing by the configured RPM alone",
    ]
    # "0 remaining" with an unreadable reset cannot say how long to wait: nobody is held.
    started = time.monotonic()
    pacer.wait_turn()
    assert time.monotonic() - started < 1


def test_a_pacer_needs_a_positive_rpm() -> None:
    with pytest.raises(ValueError, match="requests_per_minute must be positive"):
        RequestPacer(requests_per_minute=0)
