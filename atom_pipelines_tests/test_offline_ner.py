"""The offline extractor's reading of mail bodies (``extraction/body_names.py``), its gold set and its scorer.

A privacy-bound mailbox has no extractor but the heuristic, so the people and organizations it finds in the
text are all the graph learns of that mail; a false organization pollutes the graph, so precision comes first.
These tests protect three things: the scorer counts what it says (normalized names, one-to-one per message
and type), the gold set is what its README says (a reproducible seeded sample, every name verbatim in the text
extraction reads), and the extractor holds its measured level on the gold set (F1 >= 0.65 at precision >= 0.75,
on the whole set and on the held-out half that rules were not tuned on). Crafted sentences pin single rules.
"""

from __future__ import annotations

import pytest

from atom_pipelines.extraction import body_names
from atom_pipelines.extraction.body_names import BodyName, find_names
from atom_pipelines.extraction.heuristic import HeuristicProvider
from atom_pipelines.extraction.outcomes import EntityType, Role
from atom_pipelines.extraction.providers import MessageText
from atom_pipelines_tests.ner_gold import (
    LABELS,
    SAMPLE_SIZE,
    Counts,
    GoldMessage,
    corpus_messages,
    draw_sample,
    load_gold,
    match_message,
    normalize_name,
    score,
    scored_names,
)

PER, ORG = EntityType.PERSON, EntityType.ORGANIZATION


@pytest.fixture(scope="module")
def corpus() -> dict[str, MessageText]:
    return {message.message_id: message for message in corpus_messages()}


@pytest.fixture(scope="module")
def gold() -> list[GoldMessage]:
    return load_gold()


# -- the scorer --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        ("Mr. Jeff Skilling's", "jeff skilling"),
        ("  Enron   Corp. ", "enron corp"),
        ("Hirsch & Westheimer, P.C.", "hirsch & westheimer p c"),
        ("The Princeton Review", "princeton review"),
        ("Moody’s", "moody"),
        ("DR  Sally   BECK", "sally beck"),
    ],
)
def test_names_are_compared_casefolded_without_titles_possessives_and_punctuation(
    written: str, normalized: str
) -> None:
    assert normalize_name(written) == normalized


def test_matching_is_one_to_one() -> None:
    # Two gold "Jeff" and one found: one hit, one miss. One gold "Enron" and two found: one hit, one extra.
    counts, spare, missed = match_message(["Jeff", "Jeff", "Sally"], ["jeff"])
    assert counts == Counts(true_positives=1, false_positives=0, false_negatives=2)
    assert sorted(missed) == ["Jeff", "Sally"]
    counts, spare, missed = match_message(["Enron"], ["Enron", "ENRON.", "Enron Corp"])
    assert counts == Counts(true_positives=1, false_positives=2, false_negatives=0)
    assert spare == ["ENRON.", "Enron Corp"]
    assert missed == []


def test_score_is_micro_per_type_and_found_names_count_once_per_message() -> None:
    gold = [
        GoldMessage("a", "dev", (("Sally Beck", PER), ("Enron", ORG), ("Vince", PER))),
        GoldMessage("b", "dev", (("Kay", PER),)),
    ]
    found = {
        # "Sally Beck" twice is one name; "Enron" as a person is a PER false positive and an ORG miss.
        "a": [("Sally Beck", PER), ("sally beck", PER), ("Enron", PER)],
        "b": [("Kay", PER), ("Mariner Energy, Inc.", ORG)],
    }
    result = score(gold, lambda message_id: found[message_id])
    assert result.by_type[PER] == Counts(true_positives=2, false_positives=1, false_negatives=1)
    assert result.by_type[ORG] == Counts(true_positives=0, false_positives=1, false_negatives=1)
    overall = result.overall
    assert overall == Counts(true_positives=2, false_positives=2, false_negatives=2)
    assert (overall.precision, overall.recall, overall.f1) == (0.5, 0.5, 0.5)
    assert result.by_type[PER].precision == pytest.approx(2 / 3)
    assert result.by_type[ORG].f1 == 0.0


# -- the gold set ------------------------------------------------------------------------------------------------


def test_gold_set_is_the_seeded_sample_split_in_halves(gold: list[GoldMessage], corpus: dict) -> None:
    assert len(gold) >= 50
    drawn = [message.message_id for message in draw_sample(corpus.values())]
    # Exactly the draw, in draw order: not a hand-picked set.
    assert [message.message_id for message in gold] == drawn
    assert len(gold) == SAMPLE_SIZE
    assert [message.split for message in gold] == ["dev"] * (SAMPLE_SIZE // 2) + ["heldout"] * (SAMPLE_SIZE // 2)


def test_every_gold_name_is_verbatim_in_its_message_body(gold: list[GoldMessage], corpus: dict) -> None:
    for message in gold:
        body = corpus[message.message_id].body
        for name, entity_type in message.names:
            assert entity_type in LABELS.values()
            assert name == name.strip() and name in body, (message.message_id, name)
        normalized = [(normalize_name(name), entity_type) for name, entity_type in message.names]
        assert len(set(normalized)) == len(normalized), f"{message.message_id} lists a name twice"
    per = sum(1 for message in gold for _, kind in message.names if kind is PER)
    org = sum(1 for message in gold for _, kind in message.names if kind is ORG)
    assert per >= 50 and org >= 50  # both types are measured on enough names to mean something


# -- the extractor on the gold set -------------------------------------------------------------------------------


def _found_by_heuristic(corpus: dict[str, MessageText]):  # noqa: ANN202 - a scorer callback
    provider = HeuristicProvider()

    def found(message_id: str) -> list[tuple[str, EntityType]]:
        # Before dedupe, as bench/offline_ner.py scores: a participant keeps its header name after dedupe.
        return scored_names(provider._mentions(corpus[message_id]))

    return found


def test_heuristic_reaches_the_targets_on_the_gold_set(gold: list[GoldMessage], corpus: dict) -> None:
    found = _found_by_heuristic(corpus)
    whole = score(gold, found).overall
    heldout = score([message for message in gold if message.split == "heldout"], found).overall
    # Measured (bench/offline_ner.py): whole set P 0.909 R 0.667 F1 0.769; held-out P 0.902 F1 0.742.
    assert whole.f1 >= 0.65 and whole.precision >= 0.75, whole
    assert heldout.f1 >= 0.65 and heldout.precision >= 0.75, heldout


def test_body_mentions_are_grounded(gold: list[GoldMessage], corpus: dict) -> None:
    provider = HeuristicProvider()
    checked = 0
    for message in gold:
        text = corpus[message.message_id]
        for mention in provider.extract(text).mentions:
            # The people and organizations only the text names (an address in the text is not a body name).
            if mention.roles == (Role.TEXT,) and scored_names([mention]):
                assert mention.evidence in text.body, (message.message_id, mention)
                assert mention.name in mention.evidence, (message.message_id, mention)
                checked += 1
    assert checked >= 50


# -- single rules on crafted sentences ---------------------------------------------------------------------------


def found(text: str, **kwargs) -> set[tuple[str, EntityType]]:  # noqa: ANN003 - find_names' keywords
    names = find_names(text, **kwargs)
    for name in names:
        assert text[name.start : name.end] == name.name  # spans are the text's own
    return {(name.name, name.entity_type) for name in names}


def test_people_with_initials_and_organizations_with_legal_forms() -> None:
    text = "Please send it to Mark E. Haedicke at Enron North America Corp. and to Hirsch & Westheimer, P.C. today."
    assert found(text) == {
        ("Mark E. Haedicke", PER),
        ("Enron North America Corp.", ORG),
        ("Hirsch & Westheimer, P.C.", ORG),
    }


def test_organization_heads_before_and_after_of() -> None:
    assert found("Call the Houston Bar Association or Bank of America about Duke Energy North America.") == {
        ("Houston Bar Association", ORG),
        ("Bank of America", ORG),
        ("Duke Energy North America", ORG),
    }


def test_generic_markets_and_commodities_are_not_organizations() -> None:
    assert found("Natural Gas and North American Power prices rose on Monday.") == set()


def test_a_defined_acronym_is_the_organization_wherever_it_is_written() -> None:
    text = "Texas Eastern Transmission Corporation (TETCO) filed. TETCO's rates rise; FYI only."
    assert found(text) == {("Texas Eastern Transmission Corporation", ORG), ("TETCO", ORG)}


def test_the_message_domains_name_organizations() -> None:
    text = "The dinner is across the street from Enron."
    assert found(text) == set()
    assert found(text, organization_labels={"enron"}) == {("Enron", ORG)}
    assert found("Ask Duke Energy first.", organization_labels={"duke-energy"}) == {("Duke Energy", ORG)}


def test_first_names_titles_possessives_and_slashes() -> None:
    assert found("Kay, have you had a chance to answer Chris's question? Ms. Beck agreed.") == {
        ("Kay", PER),
        ("Chris", PER),
        ("Beck", PER),
    }
    assert found("Linda/Richard, please call me.") == {("Linda", PER), ("Richard", PER)}


def test_participant_names_are_people_though_no_list_has_them() -> None:
    assert found("I asked Stinson to follow up.") == set()
    assert found("I asked Stinson to follow up.", people={"stinson"}) == {("Stinson", PER)}


def test_a_name_line_over_a_job_title_is_a_signature() -> None:
    text = "See you there.\n\nMeliza Evason\nAssociate, HR\nX57855"
    assert found(text) == {("Meliza Evason", PER)}
    assert found("See you there.\n\nMeliza Evason\nX57855") == set()


@pytest.mark.parametrize(
    "text",
    [
        "Will you call? May I ask? Houston is hot in June.",
        "1400 Smith Street, 1100 Caroline, Suite 906",
        "Write to jeff.skilling@enron.com or see http://www.Enron.com/Sally",
        "A. Fill out the form. B. In the Payment section, be sure to sign.",
        "Received: from Sally Beck (Mark Taylor) by MAILHOST",
        "Thanks. Please see Attached. Great job, Team!",
        "Offices in Denver, CO and Pittsburgh, PA; flights via San Francisco.",
        "THE ISDA PRESS REPORT IS PREPARED FOR THE LIMITED USE OF MEMBERS",
    ],
)
def test_capitalized_words_that_are_not_names(text: str) -> None:
    assert found(text) == set()


def test_an_initial_and_a_census_surname_is_a_person() -> None:
    assert found("Users: S. Harris, K. Miller, R. Cabrera.") == {
        ("S. Harris", PER),
        ("K. Miller", PER),
        ("R. Cabrera", PER),
    }


def test_name_lists_are_bundled_and_filtered() -> None:
    first = body_names.first_names()
    assert {"Sally", "Vince", "Kay", "Louise"} <= first
    assert not {"Will", "May", "Houston", "June"} & first
    assert len(first) > 4_000 and len(body_names.surnames()) > 80_000
    assert find_names("") == [] and find_names("ok") == []
    assert find_names("Sally") == [BodyName("Sally", PER, 0, 5)]
