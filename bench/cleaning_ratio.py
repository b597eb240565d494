"""How much text body cleaning removes from what extraction reads, on the corpus.

Prints characters of the raw bodies, after HTML-to-text and whitespace normalization, and of the text
extraction reads (new text + signature, or a bare forward's forwarded message), with the share removed at
each step, and how many messages were read from new text vs their forwarded message.

    python bench/cleaning_ratio.py [path/to/export.jsonl or .jsonl.gz]   (default: atom_pipelines_tests/corpus/enron_dev.jsonl.gz)
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from collections import Counter
from pathlib import Path

from atom_pipelines.mail.cleaning import body_text, clean_body
from atom_pipelines.mail.models import GraphMessage

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "atom_pipelines_tests" / "corpus" / "enron_dev.jsonl.gz"


def main() -> None:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CORPUS
    opener = gzip.open if corpus.suffix == ".gz" else open
    with opener(corpus, "rt", encoding="utf-8") as handle:
        messages = [GraphMessage.model_validate(json.loads(line)) for line in handle]
    raw = normalized = extraction = quoted = signature = 0
    basis: Counter = Counter()
    started = time.perf_counter()
    for message in messages:
        cleaned = clean_body(message.body)
        raw += len(message.body.content)
        normalized += len(body_text(message.body))
        extraction += len(cleaned.extraction_text)
        quoted += len(cleaned.quoted_text)
        signature += len(cleaned.signature)
        basis[cleaned.text_basis] += 1
    elapsed = time.perf_counter() - started
    print(f"corpus: {corpus} ({len(messages)} messages)")
    print(f"raw body chars:            {raw:>10,}")
    print(
        f"after normalization:       {normalized:>10,}  ({1 - normalized / raw:.1%} removed: whitespace, HTML, QP leftovers)"
    )
    print(
        f"read by extraction:        {extraction:>10,}  ({1 - extraction / raw:.1%} of raw removed, {1 - extraction / normalized:.1%} of normalized)"
    )
    print(f"quoted history separated:  {quoted:>10,}")
    print(f"signatures separated:      {signature:>10,}")
    print(f"text basis:                {dict(basis)}")
    print(f"cleaning speed:            {len(messages) / elapsed:,.0f} messages/s")


if __name__ == "__main__":
    main()
