"""From raw model content to an outcome: every failure has a name, and repair never turns a damaged answer
into a 'success' with a different structure (production bugs #8 and #9: an empty answer and a None content
both became "no entities" without a word)."""

from __future__ import annotations

import json

import pytest

from atom_pipelines.extraction.answers import parse_answer, preview
from atom_pipelines.extraction.outcomes import Outcome

VALID = {
    "entities": [{"name": "Sally Beck", "type": "person", "email": None, "evidence": "Sally Beck will attend"}],
    "relations": [],
}
VALID_TEXT = json.dumps(VALID)


@pytest.mark.parametrize(
    ("content", "outcome", "repaired"),
    [
        (VALID_TEXT, Outcome.ENTITIES, False),
        ('{"entities": [], "relations": []}', Outcome.NONE_FOUND, False),
        (f"```json\n{VALID_TEXT}\n```", Outcome.ENTITIES, True),
        (f"Here is the output in JSON format:\n{VALID_TEXT}\nLet me know if you need more.", Outcome.ENTITIES, True),
        (VALID_TEXT.replace("}]", "},]"), Outcome.ENTITIES, True),  # trailing comma
        (None, Outcome.NO_CONTENT, False),
        ("", Outcome.NO_CONTENT, False),
        ("   \n\t", Outcome.NO_CONTENT, False),
        ("I'm not able to extract anything from this.", Outcome.UNPARSABLE, False),
        (VALID_TEXT[:70], Outcome.INVALID, False),  # cut off: closing it would invent structure
        ('{"entities": [{"name": "x"}], "relations": []}', Outcome.INVALID, False),
        ('{"entities": "none"}', Outcome.INVALID, False),
        ('{"entities": [], "relations": [], "note": "extra"}', Outcome.INVALID, False),
    ],
)
def test_every_answer_ends_in_one_named_outcome(content: str | None, outcome: Outcome, repaired: bool) -> None:
    parsed = parse_answer(content)
    assert parsed.outcome is outcome, parsed.reason
    assert parsed.repaired is repaired
    assert (parsed.answer is not None) is outcome.succeeded
    assert parsed.reason


def test_a_repaired_answer_has_the_same_content_as_the_clean_one() -> None:
    assert parse_answer(f"```json\n{VALID_TEXT}\n```").answer == parse_answer(VALID_TEXT).answer


def test_only_the_two_successes_count_as_success() -> None:
    assert {o for o in Outcome if o.succeeded} == {Outcome.ENTITIES, Outcome.NONE_FOUND}


def test_previews_are_short_and_mask_addresses_and_keys() -> None:
    raw = "answer for sally.beck@enron.com with key sk-proj-abcdefghijklmnopqrstuvwx " + "x" * 1000
    shown = preview(raw)
    assert "sally.beck" not in shown and "sk-proj" not in shown
    assert "<email>" in shown and "<key>" in shown
    assert len(shown) <= 243
    assert preview(None) == "<None>"
