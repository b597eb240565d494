"""Benchmark: what the degraded-share check does on the whole corpus when the provider fails a share of calls.

Every corpus message goes through the default chain (``openai:gpt-4o-mini,openai:gpt-4o,heuristic``) against
the OpenAI-compatible test server, which answers a seeded share of chat completions with a failure:
``null`` content (what a reasoning model or a broken deployment answers; the client does not retry it) or
HTTP 500 (the client retries it, ``max_retries`` 3 as deployed, with its own backoff). The results are
grouped into mailbox-days exactly as ``email_entities`` groups them (extraction/run.py) and judged by the
check's own function (checks/extraction.py) at the default ``ATOM_MAX_DEGRADED_SHARE``.

    python bench/degradation.py [--shares 0.01,0.1,1.0] [--kinds null,server_error] [--retry-sample 200]

A 100% HTTP 500 share costs every message the client's backoff on both models (seconds each), so that row
runs on the first ``--retry-sample`` messages; every other row runs on the whole corpus.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import logging  # noqa: E402

logging.disable(logging.ERROR)

from atom_pipelines.checks.extraction import degraded_partitions  # noqa: E402
from atom_pipelines.config import load_settings  # noqa: E402
from atom_pipelines.extraction.extractor import EntityExtractor  # noqa: E402
from atom_pipelines.extraction.run import _report  # noqa: E402
from atom_pipelines.partitions import MailboxWindow  # noqa: E402
from atom_pipelines_tests.servers.openai_server import Behaviour, OpenAICompatibleServer  # noqa: E402
from bench.llm_extraction import corpus_texts  # noqa: E402

KEY = "sk-bench-key"
CHAIN = "openai:gpt-4o-mini,openai:gpt-4o,heuristic"


def run(messages, share: float, kind: str, concurrency: int) -> dict:
    with OpenAICompatibleServer(accepted_keys={KEY}) as server:
        os.environ["ATOM_BENCH_KEY"] = KEY
        server.fail_share(share, Behaviour(kind), seed=10)
        extractor = EntityExtractor(
            chain=CHAIN,
            openai_base_url=server.base_url,
            key_env="ATOM_BENCH_KEY",
            max_concurrency=concurrency,
            max_retries=3,
        )
        started = time.perf_counter()
        session = extractor.session()
        results = extractor.extract_all(messages, session=session)
        elapsed = time.perf_counter() - started
        requests = server.requests
    days: dict[str, set] = {}
    for m in messages:
        days.setdefault(m.mailbox, set()).add(m.day)
    windows = [MailboxWindow(mailbox, tuple(sorted(d))) for mailbox, d in sorted(days.items())]
    rows = [
        {"mailbox": m.mailbox, "day": m.day, "message_id": m.message_id, "extraction_text": m.body} for m in messages
    ]
    report = _report(windows, rows, results, [], session.first_is_llm)
    partitions = [p for p in report.partitions.values() if p.messages]
    fallbacks = Counter()
    for p in partitions:
        fallbacks.update(p.fallbacks)
    failing = degraded_partitions(report, load_settings().max_degraded_share)
    return {
        "messages": len(messages),
        "partitions": len(partitions),
        "failing": len(failing),
        "heuristic": fallbacks["heuristic_fallback"],
        "model": fallbacks["model_fallback"],
        "failed_messages": sum(len(p.failed) for p in partitions),
        "requests": requests,
        "seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shares", default="0.01,0.1,1.0")
    parser.add_argument("--kinds", default="null,server_error")
    parser.add_argument("--retry-sample", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    cleaned, _ = corpus_texts()
    limit = load_settings().max_degraded_share
    print(f"default chain {CHAIN}; ATOM_MAX_DEGRADED_SHARE {limit}; corpus {len(cleaned)} messages")
    print("kind          share  messages  mailbox-days  red  heuristic  2nd-model  requests/msg  seconds")
    for kind in args.kinds.split(","):
        for share in (float(s) for s in args.shares.split(",")):
            sample = cleaned[: args.retry_sample] if kind == "server_error" and share >= 1 else cleaned
            r = run(sample, share, kind, args.concurrency)
            print(
                f"{kind:<12} {share:>6.0%}  {r['messages']:>8}  {r['partitions']:>12}  {r['failing']:>3}  "
                f"{r['heuristic']:>9}  {r['model']:>9}  {r['requests'] / r['messages']:>12.2f}  {r['seconds']:>7.1f}"
            )


if __name__ == "__main__":
    main()
