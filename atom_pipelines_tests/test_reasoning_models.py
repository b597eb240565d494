"""Reasoning models are recognised by name whatever they are called (issue 10, item 5): a reasoning model
that gets an extraction request may spend its whole output budget thinking and answer with no content
(production bug #9), so the rule must see ``O3-MINI``, ``openai/o4-mini``, ``openai:o1`` and the GPT-5
family, and must not take ordinary chat models (``gpt-4o``, ``gpt-5-chat-latest``) out of the chain."""

from __future__ import annotations

import pytest

from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.provider_chain import is_reasoning_model, model_name_forms

REASONING = [
    # the o-series and dated snapshots
    "o1",
    "o1-mini",
    "o1-pro",
    "o1-preview",
    "o3",
    "o3-mini",
    "o3-pro",
    "o4-mini",
    "o3-mini-2025-01-31",
    "o1-2024-12-17",
    "o4-mini-deep-research",
    # the GPT-5 family that reasons
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-5-pro",
    "gpt-5-codex",
    "gpt-5.1",
    "gpt-5.2-pro",
    "gpt-5-2025-08-07",
    "gpt-5-mini-2025-08-07",
    "gpt-5.1-2025-11-13",
    "gpt-5.1-chat-latest",  # takes a reasoning effort (medium only): it reasons
    # cases and provider prefixes
    "O3-MINI",
    "GPT-5-Mini",
    "  o1  ",
    "openai/o4-mini",
    "openai/gpt-5",
    "openrouter/openai/o3",
    "azure/o3-mini",
    "openai:o1",
    "azure:gpt-5-nano",
    "o3:latest",
    "ft:o4-mini-2025-04-16:acme::abc123",  # a fine-tune of a reasoning model reasons
]

NOT_REASONING = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4o-2024-08-06",
    "gpt-4.1",
    "gpt-4.1-mini",
    "o",
    "bravo3",
    "omni-moderation-latest",
    "gpt-5-chat-latest",
    "gpt-5-chat",
    "GPT-5-CHAT-LATEST",
    "openai/gpt-5-chat-latest",
    "mistral-large",
    "gpt-50",
    "openai:gpt-4o",
    "azure/my-gpt-deployment",
    "ft:gpt-4o-mini-2024-07-18:acme:o1-labels:abc123",  # an o1-like suffix is not the base model
    "",
]


@pytest.mark.parametrize("model", REASONING)
def test_a_reasoning_model_is_recognised_in_every_naming_form(model: str) -> None:
    assert is_reasoning_model(model) is True


@pytest.mark.parametrize("model", NOT_REASONING)
def test_a_chat_model_is_not_taken_for_a_reasoning_model(model: str) -> None:
    assert is_reasoning_model(model) is False


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("deepthink-1", "deepthink-1"),
        ("DeepThink-1", "deepthink-1"),  # case-insensitive
        ("deepthink-1", " other , DEEPTHINK-1 "),  # comma-separated, spaces around names
        ("azure/reasoner-prod", "reasoner-prod"),  # the deployment as the chain names it, with its path
        ("reasoner-prod", "azure/reasoner-prod"),  # ...or the setting names it with its path
        ("openai:reasoner-prod", "reasoner-prod"),
        ("reasoner-prod", "openai:reasoner-prod"),
    ],
)
def test_names_in_the_setting_are_compared_after_the_same_normalization(model: str, extra: str) -> None:
    assert is_reasoning_model(model) is False  # the name rule alone cannot know this deployment
    assert is_reasoning_model(model, extra) is True


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("deepthink-2", "deepthink-1"),
        ("gpt-4o", "openai:reasoner"),  # a provider prefix in the setting names no model by itself
        ("openai:gpt-4o", "openai:reasoner"),
        ("gpt-4o", ""),
        ("gpt-4o", " , ,"),
    ],
)
def test_the_setting_names_only_its_own_models(model: str, extra: str) -> None:
    assert is_reasoning_model(model, extra) is False


def test_name_forms_strip_paths_and_provider_prefixes_and_read_a_fine_tune_as_its_base() -> None:
    assert model_name_forms("Azure/Deploy-1") == ("deploy-1",)
    assert model_name_forms("openai:o1") == ("openai:o1", "o1")
    assert model_name_forms("ft:gpt-4o-mini:acme::x") == ("gpt-4o-mini",)


def test_the_extractor_leaves_every_form_out_of_extraction() -> None:
    extractor = EntityExtractor(
        chain="openai:O3-MINI,openai:gpt-5-mini,openai:reasoner-prod,openai:gpt-5-chat-latest,openai:gpt-4o,heuristic",
        reasoning_models="azure/reasoner-prod",
    )
    used, skipped = extractor.extraction_specs()
    assert [spec.model for spec in skipped] == ["O3-MINI", "gpt-5-mini", "reasoner-prod"]
    assert [spec.label for spec in used] == ["openai:gpt-5-chat-latest", "openai:gpt-4o", "heuristic"]
