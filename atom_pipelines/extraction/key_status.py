"""Bring your own key, with one truthful status (production bug #1: the UI said "key required" for six
months because a second code path disagreed with the first).

``key_status`` is the only place that says whether a mailbox's mail can be extracted by the LLM: it
resolves the key variable exactly as extraction does (``EntityExtractor.key_env_for``), and asks the
provider itself, once per distinct key variable, whether it accepts the key and whether every model of the
chain exists for it. The ``llm_key_status`` asset shows it in the UI; the ``register_mailboxes`` sensor asks
it before it launches a mailbox's history sync.

How a model's existence is asked (one call where that suffices):

- ``GET /v1/models`` first: one call, which also proves the key is accepted. OpenAI lists every model a key
  can use, so a model in the listing exists.
- A chain model the listing does not hold is asked for by ``GET /v1/models/{id}``: some OpenAI-compatible
  servers list only part of what they serve (vLLM aliases, gateways), and some answer the listing with 404.
  A 404 there is ``models_missing``: extraction would fail with 404 ``model_not_found``, a configuration
  error, so the status is not usable.
- Azure OpenAI is the exception: its models endpoints list the *base models* of the resource, never the
  deployments that requests name (those live on Azure's management plane), so neither call can tell whether
  a deployment exists. On an Azure host the key is still checked by the listing, the deployments are
  reported as not verifiable, and they do not make the status unusable: a deployment that does not exist
  fails the first extraction loudly (``llm_configuration_accepted``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlparse

import openai

from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.extraction.openai_provider import error_detail

#: Per request to the provider, whatever the extractor's own timeout: a sensor tick asks too, and has about
#: a minute in all.
KEY_STATUS_TIMEOUT_SECONDS = 15.0

#: Hosts of Azure OpenAI endpoints, whose models endpoints do not know the deployments.
AZURE_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")


@dataclass(frozen=True)
class KeyStatus:
    mailbox: str
    key_env: str
    llm_models: tuple[str, ...]  # the chain's LLM models used for extraction
    skipped_reasoning_models: tuple[str, ...]  # named in the chain, never used for extraction
    configured: bool
    accepted: bool | None  # None: the chain has no LLM, nothing to accept
    reason: str
    #: Chain models the provider answered 404 for with this key: extraction would fail with model_not_found.
    models_missing: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        """Whether extraction can run with this key: no LLM in the chain, or a key the provider accepts with
        every chain model present."""
        return not self.llm_models or (bool(self.accepted) and not self.models_missing)

    @property
    def problem(self) -> str | None:
        """What makes the status unusable, as a stable word (no request id, no time): ``key_not_set``,
        ``key_rejected``, ``provider_error`` or ``model_missing:<model>+<model>``; None when usable."""
        if self.usable:
            return None
        if not self.configured:
            return "key_not_set"
        if self.accepted is False:
            return "key_rejected" if self.reason.startswith("rejected") else "provider_error"
        return "model_missing:" + "+".join(self.models_missing)


@dataclass(frozen=True)
class _Verdict:
    configured: bool
    accepted: bool | None
    reason: str
    models_missing: tuple[str, ...] = ()


def key_status(
    extractor: EntityExtractor, mailboxes: Iterable[str], timeout_seconds: float = KEY_STATUS_TIMEOUT_SECONDS
) -> list[KeyStatus]:
    """The key status of every mailbox; the provider is asked once per distinct key variable (one listing,
    plus one retrieval per chain model the listing lacks), each request within ``timeout_seconds``."""
    used, skipped = extractor.extraction_specs()
    models = tuple(spec.model for spec in used if spec.kind == "openai")
    skipped_models = tuple(spec.model for spec in skipped)
    verdicts: dict[str, _Verdict] = {}
    statuses = []
    for mailbox in sorted(set(mailboxes)):
        key_env = extractor.key_env_for(mailbox)
        if key_env not in verdicts:
            verdicts[key_env] = _ask_provider(extractor, key_env, models, timeout_seconds)
        verdict = verdicts[key_env]
        reason = verdict.reason
        if skipped_models:
            reason += f"; reasoning model(s) {', '.join(skipped_models)} skipped for extraction"
        statuses.append(
            KeyStatus(
                mailbox,
                key_env,
                models,
                skipped_models,
                verdict.configured,
                verdict.accepted,
                reason,
                verdict.models_missing,
            )
        )
    return statuses


def is_azure_endpoint(base_url: str | None) -> bool:
    """Whether the base URL is an Azure OpenAI resource (whose models endpoints do not list deployments)."""
    host = (urlparse(base_url or "").hostname or "").lower()
    return host.endswith(AZURE_HOST_SUFFIXES)


def _status_text(exc: openai.APIStatusError) -> str:
    return f"HTTP {exc.status_code} {error_detail(exc)} (request id {exc.request_id})"


def _refused(exc: openai.APIStatusError, asking: str) -> _Verdict:
    """The provider refused a question about the key: it rejected the key (401/403), or answered an error."""
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return _Verdict(True, False, f"rejected by the provider: {_status_text(exc)}")
    return _Verdict(True, False, f"provider answered {_status_text(exc)} to {asking}")


def _ask_provider(
    extractor: EntityExtractor, key_env: str, models: tuple[str, ...], timeout_seconds: float
) -> _Verdict:
    client = extractor.client_for(key_env)
    if not models:
        return _Verdict(client is not None, None, "the chain uses no LLM provider: the offline heuristic extracts")
    if client is None:
        return _Verdict(False, False, f"${key_env} is not set: no key configured")
    client = client.with_options(max_retries=1, timeout=min(timeout_seconds, extractor.timeout_seconds))
    notes: list[str] = []
    try:
        listed: set[str] | None = {model.id for model in client.models.list()}
    except openai.NotFoundError as exc:
        # No listing on this server: each model is asked for by its id below (which also checks the key).
        listed = None
        notes.append(f"the endpoint does not list models ({_status_text(exc)})")
    except openai.APIStatusError as exc:
        return _refused(exc, "GET /models")
    except openai.APIConnectionError as exc:
        return _Verdict(True, False, f"provider unreachable: {type(exc).__name__}: {exc}")
    unlisted = [model for model in models if listed is None or model not in listed]
    if unlisted and listed is not None and is_azure_endpoint(extractor.openai_base_url):
        notes.append(
            f"deployment(s) {', '.join(unlisted)} not verifiable: Azure OpenAI lists base models, not deployments"
        )
        unlisted = []
    missing: list[str] = []
    missing_detail = ""
    for model in unlisted:
        try:
            client.models.retrieve(model)
        except openai.NotFoundError as exc:
            missing.append(model)
            missing_detail = missing_detail or _status_text(exc)
        except openai.APIStatusError as exc:
            return _refused(exc, f"GET /models/{model}")
        except openai.APIConnectionError as exc:
            return _Verdict(True, False, f"provider unreachable: {type(exc).__name__}: {exc}")
        else:
            if listed is not None:
                notes.append(f"{model} is not in the listing but exists (GET /models/{model})")
    if listed is None and len(missing) == len(models):
        # Nothing on this server answered but 404: not even the key was seen to be accepted.
        return _Verdict(
            True,
            False,
            f"no model found: the endpoint answers 404 to GET /models and to GET /models/{{id}} for "
            f"{', '.join(missing)} ({missing_detail}); is OPENAI_BASE_URL an OpenAI-compatible server?",
            tuple(missing),
        )
    reason = "accepted"
    if missing:
        reason += (
            f"; model(s) {', '.join(missing)} do not exist for this key ({missing_detail}): extraction would fail "
            "with model_not_found"
        )
    reason += "".join(f"; {note}" for note in notes)
    return _Verdict(True, True, reason, tuple(missing))
