"""Bring your own key, with one truthful status (production bug #1: the UI said "key required" for six
months because a second code path disagreed with the first).

``key_status`` is the only place that says whether a mailbox's mail can be extracted by the LLM: it
resolves the key variable exactly as extraction does (``EntityExtractor.key_env_for``), and asks the
provider itself with one cheap call (listing models). The ``llm_key_status`` asset shows it in the UI.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import openai

from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.extraction.openai_provider import error_detail


@dataclass(frozen=True)
class KeyStatus:
    mailbox: str
    key_env: str
    llm_models: tuple[str, ...]  # the chain's LLM models used for extraction
    skipped_reasoning_models: tuple[str, ...]  # named in the chain, never used for extraction
    configured: bool
    accepted: bool | None  # None: the chain has no LLM, nothing to accept
    reason: str

    @property
    def usable(self) -> bool:
        return not self.llm_models or bool(self.accepted)


def key_status(extractor: EntityExtractor, mailboxes: Iterable[str]) -> list[KeyStatus]:
    """The key status of every mailbox; the provider is asked once per distinct key variable."""
    used, skipped = extractor.extraction_specs()
    models = tuple(spec.model for spec in used if spec.kind == "openai")
    skipped_models = tuple(spec.model for spec in skipped)
    verdicts: dict[str, tuple[bool, bool | None, str]] = {}
    statuses = []
    for mailbox in sorted(set(mailboxes)):
        key_env = extractor.key_env_for(mailbox)
        if key_env not in verdicts:
            verdicts[key_env] = _ask_provider(extractor, key_env, models)
        configured, accepted, reason = verdicts[key_env]
        if skipped_models:
            reason += f"; reasoning model(s) {', '.join(skipped_models)} skipped for extraction"
        statuses.append(KeyStatus(mailbox, key_env, models, skipped_models, configured, accepted, reason))
    return statuses


def _ask_provider(extractor: EntityExtractor, key_env: str, models: tuple[str, ...]) -> tuple[bool, bool | None, str]:
    client = extractor.client_for(key_env)
    if not models:
        return client is not None, None, "the chain uses no LLM provider: the offline heuristic extracts"
    if client is None:
        return False, False, f"${key_env} is not set: no key configured"
    try:
        offered = {model.id for model in client.with_options(max_retries=1).models.list()}
    except openai.AuthenticationError as exc:
        return (
            True,
            False,
            f"rejected by the provider: HTTP {exc.status_code} {error_detail(exc)} (request id {exc.request_id})",
        )
    except openai.APIStatusError as exc:
        return (
            True,
            False,
            f"provider answered HTTP {exc.status_code} {error_detail(exc)} (request id {exc.request_id})",
        )
    except openai.APIConnectionError as exc:
        return True, False, f"provider unreachable: {type(exc).__name__}: {exc}"
    missing = [model for model in models if model not in offered]
    if missing:
        return True, True, f"accepted; but the endpoint does not list model(s) {', '.join(missing)}"
    return True, True, "accepted"
