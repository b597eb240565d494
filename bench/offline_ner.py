"""People and organizations the offline (heuristic) extractor finds in mail bodies, against the gold set.

Prints precision, recall and F1 per type (PER, ORG) and overall (micro) on the dev half, the held-out half and
the whole gold set (``atom_pipelines_tests/gold/``), BEFORE (the heuristic as committed at ``--before``,
default the commit before the body-name pass) and AFTER (the working tree); then the heuristic's speed,
messages/s of ``HeuristicProvider.extract`` over the whole corpus, before and after (best of ``--repeat``).

    python bench/offline_ner.py [--before REV] [--repeat 3] [--errors dev|heldout|all]

``--errors`` lists the AFTER run's false positives and misses of one split (tune on dev only).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atom_pipelines.extraction import heuristic  # noqa: E402
from atom_pipelines.extraction.providers import MessageText  # noqa: E402
from atom_pipelines_tests.ner_gold import (  # noqa: E402
    LABELS,
    Score,
    corpus_messages,
    load_gold,
    score,
    scored_names,
)

ROOT = Path(__file__).resolve().parents[1]
#: The last commit before the body-name pass (issue 10, item 10): the heuristic as it was.
BEFORE_REV = "c5b46c6"
HEURISTIC_PATH = "atom_pipelines/extraction/heuristic.py"


def heuristic_at(rev: str) -> types.ModuleType:
    """heuristic.py as committed at rev, loaded as a module beside today's (it imports today's package)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:{HEURISTIC_PATH}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType(f"heuristic_at_{rev}")
    module.__file__ = f"{rev}:{HEURISTIC_PATH}"
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - our own committed source
    return module


def found_names(module: types.ModuleType, message: MessageText) -> list:
    # The provider's mentions before dedupe: dedupe keeps a participant's header display name ("Beck, Sally")
    # over the name the body wrote ("Sally"), and the gold scores names as written.
    return scored_names(module.HeuristicProvider()._mentions(message))


def speed(module: types.ModuleType, messages: list[MessageText], repeat: int) -> float:
    provider = module.HeuristicProvider()
    provider.extract(messages[0])  # warm caches (urlextract's TLD list)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for message in messages:
            provider.extract(message)
        best = min(best, time.perf_counter() - started)
    return len(messages) / best


def table(label: str, scores: dict[str, Score]) -> None:
    print(f"\n{label}")
    print(f"{'split':<9} {'type':<8} {'P':>6} {'R':>6} {'F1':>6} {'tp':>5} {'fp':>5} {'fn':>5}")
    for split, result in scores.items():
        rows = [(kind, result.by_type[entity_type]) for kind, entity_type in LABELS.items()]
        for kind, counts in [*rows, ("overall", result.overall)]:
            print(
                f"{split:<9} {kind:<8} {counts.precision:>6.3f} {counts.recall:>6.3f} {counts.f1:>6.3f} "
                f"{counts.true_positives:>5} {counts.false_positives:>5} {counts.false_negatives:>5}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE_REV, help="git revision of the BEFORE heuristic")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--errors", choices=["dev", "heldout", "all"])
    args = parser.parse_args()

    messages = corpus_messages()
    by_id = {message.message_id: message for message in messages}
    gold = load_gold()
    splits = {
        "dev": [g for g in gold if g.split == "dev"],
        "heldout": [g for g in gold if g.split == "heldout"],
        "all": gold,
    }
    print(f"gold: {len(gold)} messages ({len(splits['dev'])} dev, {len(splits['heldout'])} held-out)")
    runs = {f"BEFORE ({args.before})": heuristic_at(args.before), "AFTER (working tree)": heuristic}
    for label, module in runs.items():
        cache: dict[str, list] = {}

        def found(message_id: str, module: types.ModuleType = module, cache: dict = cache) -> list:
            if message_id not in cache:
                cache[message_id] = found_names(module, by_id[message_id])
            return cache[message_id]

        scores = {split: score(members, found) for split, members in splits.items()}
        table(label, scores)
        if args.errors and module is heuristic:
            print(f"\nerrors ({args.errors}): message, type, false positives, misses")
            for message_id, entity_type, spare, missed in scores[args.errors].errors:
                print(f"  {message_id} {entity_type.value:<12} FP={spare} FN={missed}")
    print(f"\nspeed over the whole corpus ({len(messages):,} messages, best of {args.repeat}):")
    for label, module in runs.items():
        print(f"  {label:<24} {speed(module, messages, args.repeat):>8,.0f} messages/s")


if __name__ == "__main__":
    main()
