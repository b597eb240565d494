"""What a backfill will cost before it is launched: LLM calls and tokens for a mailbox's date range.

    python -m atom_pipelines.extraction.estimate MAILBOX START END

reads the messages from the configured mail source, cleans them exactly as the pipeline does, builds the
exact prompt, counts its tokens, skips the ones the cache already answers, and prints calls, prompt tokens,
the worst-case completion tokens and the estimated cost for the chain's first LLM model.
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass

from atom_pipelines.extraction.cache import cache_key, prompt_hash
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.extraction.outcomes import TokenUsage
from atom_pipelines.extraction.pricing import cost_usd
from atom_pipelines.extraction.prompt import prompt_for
from atom_pipelines.extraction.providers import MessageText
from atom_pipelines.extraction.tokens import prompt_tokens
from atom_pipelines.mail.source import MailSource
from atom_pipelines.mail.sync import message_row
from atom_pipelines.partitions import MailboxWindow
from atom_pipelines.store.resource import MailStore


@dataclass(frozen=True)
class BackfillEstimate:
    model: str | None
    messages: int
    calls: int  # requests needed (messages whose answer is not cached yet)
    cached: int
    prompt_tokens: int
    max_completion_tokens: int
    cost_usd_low: float | None  # prompt tokens only
    cost_usd_high: float | None  # with every completion at its limit


def estimate_backfill(
    source: MailSource, store: MailStore | None, extractor: EntityExtractor, mailbox: str, start: dt.date, end: dt.date
) -> BackfillEstimate:
    used, _skipped = extractor.extraction_specs()
    llm = next((spec for spec in used if spec.kind == "openai"), None)
    days = tuple(start + dt.timedelta(days=n) for n in range((end - start).days + 1))
    batch = source.fetch_window(MailboxWindow(mailbox, days))
    # The same stored form the pipeline builds, so the estimate prices exactly the prompt extraction sends.
    texts = [
        MessageText.from_stored(message_row(item, day))
        for day, items in batch.messages_by_day.items()
        for item in items
    ]
    if llm is None:
        return BackfillEstimate(None, len(texts), 0, 0, 0, 0, 0.0, 0.0)
    keys = {cache_key(prompt_hash(t), llm): t for t in texts}
    cached = set(store.cache_get(list(keys))) if store is not None else set()
    pending = [t for key, t in keys.items() if key not in cached]
    tokens = sum(prompt_tokens(prompt_for(t)) for t in pending)
    completion = extractor.max_output_tokens * len(pending)
    low = cost_usd(llm.model, TokenUsage(prompt=tokens))
    high = cost_usd(llm.model, TokenUsage(prompt=tokens, completion=completion))
    return BackfillEstimate(
        llm.model, len(texts), len(pending), len(texts) - len(pending), tokens, completion, low, high
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mailbox")
    parser.add_argument("start", type=dt.date.fromisoformat)
    parser.add_argument("end", type=dt.date.fromisoformat, help="last day, inclusive")
    args = parser.parse_args()
    from atom_pipelines.mail.source import ExportMailSource

    # The same environment the code location reads (ATOM_MAIL_EXPORT_DIR, ATOM_DATABASE_URL, ATOM_LLM_*).
    estimate = estimate_backfill(
        ExportMailSource(), MailStore(), EntityExtractor(), args.mailbox.lower(), args.start, args.end
    )
    print(f"mailbox {args.mailbox}, {args.start} .. {args.end}: {estimate.messages} messages")
    if estimate.model is None:
        print("the chain uses no LLM: 0 calls, 0 tokens")
        return
    print(f"model {estimate.model}: {estimate.calls} calls ({estimate.cached} answered by the cache)")
    print(f"prompt tokens: {estimate.prompt_tokens:,}; completion tokens at most {estimate.max_completion_tokens:,}")
    if estimate.cost_usd_low is not None:
        print(
            f"estimated cost: ${estimate.cost_usd_low:.4f} (prompt only) .. ${estimate.cost_usd_high:.4f} (worst case)"
        )
    else:
        print("estimated cost: unknown (no price listed for this model)")


if __name__ == "__main__":
    main()
