"""What a backfill will cost before it is launched: LLM calls and tokens for a mailbox's date range.

:func:`estimate_backfill` reads the messages from a mail source, cleans them exactly as the pipeline does,
builds the exact prompt, counts its tokens, skips the ones the cache already answers, and prices the
calls for the chain's first LLM model. The command line, with the code location's own source, store and
extractor, is ``python -m atom_pipelines.estimate MAILBOX START END`` (atom_pipelines/estimate.py: it
builds them from the settings, which the extraction package does not import).
"""

from __future__ import annotations

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
