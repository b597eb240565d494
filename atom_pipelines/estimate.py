"""What a backfill will cost before it is launched, with the code location's own source, store and chain.

    python -m atom_pipelines.estimate MAILBOX START END

reads the mailbox's messages from START to END (inclusive) from the mail source the code location would
use (Graph when its credentials are set, else the export directory), skips those the store's cache already
answers, and prints calls, prompt tokens, the worst-case completion tokens and the estimated cost for the
chain's first LLM model. Its resources come from the same settings and builders as the code location's
(resources.py), so a bad setting fails here as it fails the load. The arithmetic is
``atom_pipelines.extraction.estimate.estimate_backfill``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import TYPE_CHECKING

from atom_pipelines.config import SettingsError, load_settings

if TYPE_CHECKING:
    from atom_pipelines.extraction.estimate import BackfillEstimate


def report_lines(mailbox: str, start: dt.date, end: dt.date, estimate: BackfillEstimate) -> list[str]:
    lines = [f"mailbox {mailbox}, {start} .. {end}: {estimate.messages} messages"]
    if estimate.model is None:
        return [*lines, "the chain uses no LLM: 0 calls, 0 tokens"]
    lines += [
        f"model {estimate.model}: {estimate.calls} calls ({estimate.cached} answered by the cache)",
        f"prompt tokens: {estimate.prompt_tokens:,}; completion tokens at most {estimate.max_completion_tokens:,}",
    ]
    if estimate.cost_usd_low is None or estimate.cost_usd_high is None:
        return [*lines, "estimated cost: unknown (no price listed for this model)"]
    return [
        *lines,
        f"estimated cost: ${estimate.cost_usd_low:.4f} (prompt only) .. ${estimate.cost_usd_high:.4f} (worst case)",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("mailbox")
    parser.add_argument("start", type=dt.date.fromisoformat, help="first day, YYYY-MM-DD")
    parser.add_argument("end", type=dt.date.fromisoformat, help="last day, inclusive, YYYY-MM-DD")
    args = parser.parse_args(argv)
    if args.end < args.start:
        parser.error(f"END {args.end} is before START {args.start}")
    try:
        settings = load_settings()
    except SettingsError as exc:
        # The same message the code location's load shows, without a traceback: it is the user's input.
        print(exc, file=sys.stderr)
        return 2
    # Imported after the settings loaded: these modules read them at import (the partitions), and a bad
    # value should read as the message above, not as a traceback from an import.
    from atom_pipelines.extraction.estimate import estimate_backfill
    from atom_pipelines.resources import build_extractor, build_mail_source, build_store

    mailbox = args.mailbox.strip().lower()
    # Outside a run nothing resolves the resources' EnvVar fields (secrets, a set database URL): Dagster's own
    # resolution does it here, reading each variable as a run would.
    source = build_mail_source(settings).process_config_and_initialize()
    store = build_store(settings).process_config_and_initialize()
    extractor = build_extractor(settings).process_config_and_initialize()
    estimate = estimate_backfill(source, store, extractor, mailbox, args.start, args.end)
    print("\n".join(report_lines(mailbox, args.start, args.end, estimate)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
