"""The provider chain as configured: which providers, in which order, and which models never get a request.

Pure parsing, no clients: the settings model validates ``ATOM_LLM_CHAIN`` and ``ATOM_LLM_KEYS`` with these
functions when the code location loads, and the extractor resource uses them when it runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_CHAIN_WITH_KEY = "openai:gpt-4o-mini,openai:gpt-4o,heuristic"
DEFAULT_CHAIN_WITHOUT_KEY = "heuristic"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
#: The heuristic provider's model name, as its rows and cache keys carry it.
HEURISTIC_MODEL = "rules-v1"

#: The o-series (o1, o1-mini, o1-pro, o3, o3-mini, o3-pro, o4-mini and their dated snapshots such as
#: o3-mini-2025-01-31): "o", a version number, then nothing or a variant after "-" or ".".
_O_SERIES = re.compile(r"^o\d+(?:[-.].*)?$")
#: The GPT-5 family (gpt-5, gpt-5-mini, gpt-5-nano, gpt-5-pro, gpt-5-codex, gpt-5.1, gpt-5.2-pro, dated
#: snapshots such as gpt-5-mini-2025-08-07): they spend output tokens on reasoning before any content.
_GPT_5 = re.compile(r"^gpt-5(?:\.\d+)?(?:-.*)?$")
#: ...except the chat model of ChatGPT, which OpenAI's model page calls the non-reasoning GPT-5
#: (gpt-5-chat, gpt-5-chat-latest). The later gpt-5.x-chat-latest models take a reasoning effort (5.1: medium
#: only), so they reason and stay matched.
_GPT_5_CHAT = re.compile(r"^gpt-5-chat(?:-.*)?$")


class ChainConfigError(ValueError):
    """``ATOM_LLM_CHAIN`` names a provider this build does not have, or nothing usable."""


@dataclass(frozen=True)
class ProviderSpec:
    kind: str  # "openai" | "heuristic"
    model: str

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.model}" if self.kind != "heuristic" else "heuristic"


def parse_chain(chain: str) -> list[ProviderSpec]:
    """``openai:<model>,...,heuristic`` as provider specs, in order (reasoning models included)."""
    specs = []
    for entry in (part.strip() for part in chain.split(",") if part.strip()):
        kind, _, model = entry.partition(":")
        if kind == "heuristic" and not model:
            specs.append(ProviderSpec("heuristic", HEURISTIC_MODEL))
        elif kind == "openai" and model:
            specs.append(ProviderSpec("openai", model))
        else:
            raise ChainConfigError(
                f"ATOM_LLM_CHAIN entry {entry!r} is not a provider (use 'openai:<model>' or 'heuristic')"
            )
    if not specs:
        raise ChainConfigError("ATOM_LLM_CHAIN is empty: at least one provider is needed")
    return specs


def model_name_forms(model: str) -> tuple[str, ...]:
    """The forms of a model name that names are compared in, lower-cased: the name without a provider path
    (``openai/o4-mini``, ``azure/my-deployment``: the last ``/`` segment) and, where it holds a ``:``, the
    name after a provider prefix (``openai:o1`` -> ``o1``); a fine-tune ``ft:<base>:<org>::<id>`` is read as
    its base model."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    head, colon, rest = name.partition(":")
    if not colon:
        return (name,)
    if head == "ft":
        return (rest.partition(":")[0],)
    return tuple(dict.fromkeys(form for form in (name, rest) if form))


def _matches_rule(form: str) -> bool:
    return bool(_O_SERIES.match(form) or (_GPT_5.match(form) and not _GPT_5_CHAT.match(form)))


def is_reasoning_model(model: str, extra: str = "") -> bool:
    """Whether ``model`` is a reasoning model, which extraction never asks (it may spend the whole output
    budget thinking and answer with no content: production bug #9).

    Matched by name, whatever the case and provider prefix (``O3-MINI``, ``openai/o4-mini``, ``openai:o1``,
    ``azure/o3-mini``, a tag ``o3:latest``): the o-series, the GPT-5 family except ``gpt-5-chat`` and
    ``gpt-5-chat-latest`` (non-reasoning chat models), and the names in ``extra`` (comma-separated,
    ``ATOM_LLM_REASONING_MODELS``), compared case-insensitively in the same forms (:func:`model_name_forms`).

    A name rule cannot know what an Azure OpenAI deployment (or an alias on any OpenAI-compatible server)
    serves: a deployment may be called anything. Name such deployments in ``ATOM_LLM_REASONING_MODELS``; a
    reasoning model that no name gives away is caught at run time by the extraction session
    (``extraction/session.py``): a model that answers with reasoning tokens and no content is treated as a
    reasoning model for the rest of the run.
    """
    forms = model_name_forms(model)
    named = {form for name in extra.split(",") if name.strip() for form in model_name_forms(name)}
    # A tag after the name (``o3:latest``) leaves the model name before the colon.
    tagged = model.strip().lower().rsplit("/", 1)[-1].partition(":")[0]
    return any(_matches_rule(form) for form in (*forms, tagged)) or any(form in named for form in forms)


def parse_key_map(text: str) -> dict[str, str]:
    """``mailbox-or-domain=ENV_VAR,...`` (``ATOM_LLM_KEYS``) as {lower-cased mailbox or domain: variable}."""
    mapping = {}
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        who, _, env = entry.partition("=")
        if not env.strip() or not who.strip():
            raise ChainConfigError(f"ATOM_LLM_KEYS entry {entry!r} is not 'mailbox-or-domain=ENV_VAR'")
        mapping[who.strip().lower()] = env.strip()
    return mapping
