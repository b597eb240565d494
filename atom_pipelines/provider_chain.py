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

#: o1, o3, o4-mini...: reasoning models spend their tokens thinking and may return no content (bug #9).
_REASONING_MODEL = re.compile(r"^o\d")


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


def is_reasoning_model(model: str, extra: str = "") -> bool:
    """An o-series model, or one named in ``extra`` (comma-separated, ``ATOM_LLM_REASONING_MODELS``)."""
    named = {name.strip() for name in extra.split(",") if name.strip()}
    return bool(_REASONING_MODEL.match(model)) or model in named


def parse_key_map(text: str) -> dict[str, str]:
    """``mailbox-or-domain=ENV_VAR,...`` (``ATOM_LLM_KEYS``) as {lower-cased mailbox or domain: variable}."""
    mapping = {}
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        who, _, env = entry.partition("=")
        if not env.strip() or not who.strip():
            raise ChainConfigError(f"ATOM_LLM_KEYS entry {entry!r} is not 'mailbox-or-domain=ENV_VAR'")
        mapping[who.strip().lower()] = env.strip()
    return mapping
