"""Benchmark: Graph sync of the whole corpus (atom_pipelines_tests/corpus/) through the Graph-compatible test server.

1. Throughput and requests per message for page size ($top) 10 vs 1000, with and without $select, with
   the server answering at once and with a simulated Graph latency per page (--latency-ms): what the
   production client (msal + requests + the per-mailbox gate) does end to end, into a SQLite store.
2. A 429 storm: the server answers N requests with 429 + Retry-After; total time vs the lower bound
   (the same sync without the storm + the sum of Retry-After delays the server asked for).

    python bench/graph_sync.py [--latency-ms 100] [--storm 12] [--retry-after 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import logging  # noqa: E402

logging.disable(logging.WARNING)

from atom_pipelines.mail.sync import sync_messages  # noqa: E402
from atom_pipelines.store.resource import MailStore, dispose_engine  # noqa: E402
from atom_pipelines_tests.conftest import corpus_records  # noqa: E402
from atom_pipelines_tests.servers.graph_server import Fault, GraphServer  # noqa: E402
from atom_pipelines_tests.test_graph_sync import graph_source, mailbox_windows  # noqa: E402


def sync_once(server: GraphServer, windows, page_size: int, use_select: bool, workdir: Path) -> dict:
    url = f"sqlite:///{workdir / f'bench-{time.monotonic_ns()}.sqlite'}"
    source = graph_source(server, url, page_size=page_size, use_select=use_select, max_retries=30)
    received = {"bytes": 0}
    source.client.session.hooks["response"].append(
        lambda r, *a, **k: received.__setitem__("bytes", received["bytes"] + len(r.content))
    )
    requests_before = server.graph_requests
    started = time.perf_counter()
    report = sync_messages(source, MailStore(database_url=url), windows)
    elapsed = time.perf_counter() - started
    dispose_engine(url)
    messages = report.message_count
    assert not report.incomplete, report.incomplete
    graph_requests = server.graph_requests - requests_before
    return {
        "messages": messages,
        "seconds": elapsed,
        "msg_per_s": messages / elapsed,
        "requests": graph_requests,
        "requests_per_msg": graph_requests / messages,
        "kb_per_msg": received["bytes"] / messages / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--storm", type=int, default=12)
    parser.add_argument("--retry-after", type=int, default=1)
    args = parser.parse_args()

    records = corpus_records()
    windows = mailbox_windows(records)
    print(
        f"corpus: {len(records)} messages, {len(windows)} mailboxes, {sum(len(w.days) for w in windows)} mailbox-days"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ["DAGSTER_HOME"] = str(workdir / "home")
        for latency in (0.0, args.latency_ms / 1000):
            with GraphServer(records, page_delay_s=latency) as server:
                os.environ["REQUESTS_CA_BUNDLE"] = str(server.ca_bundle_path)
                print(f"\n== server latency per page: {latency * 1000:.0f} ms ==")
                print(
                    f"{'$top':>6} {'$select':>8} {'msg/s':>8} {'requests':>9} {'req/msg':>8} {'KiB/msg':>8} {'seconds':>8}"
                )
                for page_size in (10, 1000):
                    for use_select in (False, True):
                        r = sync_once(server, windows, page_size, use_select, workdir)
                        print(
                            f"{page_size:>6} {str(use_select):>8} {r['msg_per_s']:>8.1f} {r['requests']:>9} "
                            f"{r['requests_per_msg']:>8.3f} {r['kb_per_msg']:>8.2f} {r['seconds']:>8.2f}"
                        )

        # The storm: a page size that needs several requests per mailbox, so throttles land mid-listing.
        with GraphServer(records) as server:
            os.environ["REQUESTS_CA_BUNDLE"] = str(server.ca_bundle_path)
            calm = sync_once(server, windows, 250, True, workdir)
            server.add_fault(Fault("throttle", retry_after=args.retry_after, times=args.storm))
            before = server.retry_after_total_s
            stormy = sync_once(server, windows, 250, True, workdir)
            asked = server.retry_after_total_s - before
            bound = calm["seconds"] + asked
            print(f"\n== 429 storm: {args.storm} answers of 429 with Retry-After {args.retry_after} s ($top 250) ==")
            print(
                f"without storm {calm['seconds']:.2f} s; Retry-After asked in total {asked} s; lower bound {bound:.2f} s"
            )
            print(
                f"with storm {stormy['seconds']:.2f} s = {stormy['seconds'] / bound:.3f} x the lower bound "
                f"({stormy['seconds'] - bound:+.2f} s), same {stormy['messages']} messages stored"
            )
    print(f"\nmachine: {os.cpu_count()} cores; {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
