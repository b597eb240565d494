"""The OpenAI provider, through the official ``openai`` client: any OpenAI-compatible server (Azure OpenAI,
vLLM, Ollama, our test server) via ``OPENAI_BASE_URL``.

Every call ends in one named outcome (outcomes.py); nothing here raises for a bad answer. Structured
outputs (a strict JSON schema made from the pydantic answer model) where the model supports them, JSON
mode plus validation where it does not.

An answer that says our configuration is wrong is ``rejected``, never a transport error to fall through:
401 and 403 (the key), 404 (a model that does not exist, or a base URL whose server has no chat
completions endpoint) and a 200 that is not a chat completion (a base URL pointing at some other server).
"""

from __future__ import annotations

import json
import time

import openai
from openai.types.chat import ChatCompletion

from atom_pipelines.extraction.answers import parse_answer, preview
from atom_pipelines.extraction.grounding import ground
from atom_pipelines.extraction.mentions import dedupe_mentions, header_mentions
from atom_pipelines.extraction.outcomes import Attempt, Outcome, TokenUsage
from atom_pipelines.extraction.pricing import cost_usd
from atom_pipelines.extraction.prompt import SYSTEM_PROMPT, prompt_for
from atom_pipelines.extraction.providers import ExtractionProvider, MessageText
from atom_pipelines.extraction.ratelimit import RequestPacer
from atom_pipelines.extraction.schema import ExtractionAnswer, response_json_schema

#: 401, 403 and 404: the key, its permissions, the model or the endpoint. The same answer for every message.
_CONFIGURATION_ERRORS = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)

#: The start of the reason of an answer that spent its allowance on reasoning (the session keys on it).
REASONING_ANSWER = "reasoning model"

#: Model families that accept ``response_format={"type": "json_schema", "strict": true}``.
STRUCTURED_OUTPUT_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-5")


def supports_structured_outputs(model: str) -> bool:
    return model.startswith(STRUCTURED_OUTPUT_PREFIXES)


class OpenAIProvider(ExtractionProvider):
    name = "openai"

    def __init__(
        self,
        client: openai.OpenAI,
        model: str,
        pacer: RequestPacer,
        structured: bool | None = None,
        max_output_tokens: int = 2_000,
    ) -> None:
        self.client = client
        self.model = model
        self.pacer = pacer
        self.structured = supports_structured_outputs(model) if structured is None else structured
        self.max_output_tokens = max_output_tokens

    def response_format(self) -> dict:
        if self.structured:
            return {
                "type": "json_schema",
                "json_schema": {"name": "extraction_answer", "strict": True, "schema": response_json_schema()},
            }
        return {"type": "json_object"}

    def extract(self, message: MessageText) -> Attempt:
        started = time.perf_counter()
        self.pacer.wait_turn()
        try:
            raw = self.client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=[
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": prompt_for(message)},
                ],
                response_format=self.response_format(),
                temperature=0,
                max_completion_tokens=self.max_output_tokens,
            )
        except _CONFIGURATION_ERRORS as exc:
            return self._failed(
                Outcome.REJECTED, _status_reason(exc), started, error_code=error_code(exc), http_status=exc.status_code
            )
        except openai.APIStatusError as exc:
            if exc.response is not None:
                self.pacer.observe(exc.response.headers)
            return self._failed(Outcome.TRANSPORT, _status_reason(exc), started)
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            return self._failed(Outcome.TRANSPORT, f"{type(exc).__name__}: {exc}", started)
        self.pacer.observe(raw.headers)
        try:
            completion = raw.parse()
        except openai.APIResponseValidationError as exc:
            return self._not_openai(raw, f"its answer does not validate ({exc.message})", started)
        if not isinstance(completion, ChatCompletion) or getattr(completion, "choices", None) is None:
            return self._not_openai(raw, "its answer is not a chat completion", started)
        usage = _usage(completion)
        call_fields = {
            "provider": self.name,
            "model": self.model,
            "usage": usage,
            "cost_usd": cost_usd(self.model, usage) or 0.0,
            "latency_ms": (time.perf_counter() - started) * 1000,
            "request_sent": True,
        }
        if not completion.choices:
            return Attempt(outcome=Outcome.NO_CONTENT, reason="response has no choices", **call_fields)
        choice = completion.choices[0]
        content = choice.message.content
        call_fields["raw_preview"] = preview(content if content is not None else choice.message.refusal)
        if not (content or "").strip() and usage.reasoning and not choice.message.refusal:
            # A reasoning model spent its output allowance thinking: the session stops asking it this run.
            return Attempt(
                outcome=Outcome.NO_CONTENT,
                reason=f"{REASONING_ANSWER}: {usage.reasoning} reasoning tokens and no content",
                **call_fields,
            )
        if getattr(choice.message, "refusal", None):
            return Attempt(outcome=Outcome.REFUSED, reason=f"refusal: {choice.message.refusal[:200]}", **call_fields)
        if choice.finish_reason == "content_filter":
            return Attempt(outcome=Outcome.REFUSED, reason="finish_reason=content_filter", **call_fields)
        if choice.finish_reason == "length":
            return Attempt(
                outcome=Outcome.TRUNCATED,
                reason=f"finish_reason=length after {usage.completion} completion tokens",
                **call_fields,
            )
        parsed = parse_answer(content)
        if parsed.answer is None:
            return Attempt(outcome=parsed.outcome, reason=parsed.reason, **call_fields)
        return grounded_attempt(parsed.answer, message, parsed.outcome, parsed.reason, call_fields)

    def _failed(self, outcome: Outcome, reason: str, started: float, **fields) -> Attempt:
        return Attempt(
            provider=self.name,
            model=self.model,
            outcome=outcome,
            reason=reason,
            latency_ms=(time.perf_counter() - started) * 1000,
            request_sent=True,
            **fields,
        )

    def _not_openai(self, raw: object, why: str, started: float) -> Attempt:
        content_type = raw.headers.get("content-type", "no content type")
        return self._failed(
            Outcome.REJECTED,
            f"the base URL is not an OpenAI-compatible server: {why} (HTTP {raw.status_code}, {content_type})",
            started,
            error_code="not_openai_compatible",
            http_status=raw.status_code,
        )


def grounded_attempt(
    answer: ExtractionAnswer, message: MessageText, outcome: Outcome, reason: str, call_fields: dict
) -> Attempt:
    """A valid answer as an attempt: grounded entities plus the message's header participants.
    ``call_fields``: the Attempt fields that describe the call (provider, model, usage, cost, latency...)."""
    grounded = ground(answer, message)
    if answer.entities and not grounded.mentions:
        # Every entity invented (or garbled past recognition): not a success with header entities alone.
        return Attempt(
            outcome=Outcome.UNGROUNDED,
            reason=f"all {len(answer.entities)} entities of the answer are ungrounded in the message",
            dropped_entities=grounded.dropped_entities,
            dropped_relations=grounded.dropped_relations,
            answered_entities=len(answer.entities),
            **call_fields,
        )
    headers = header_mentions(message)
    return Attempt(
        outcome=outcome,
        reason=f"{reason}; {grounded.dropped_entities} ungrounded entities dropped"
        if grounded.dropped_entities
        else reason,
        mentions=tuple(dedupe_mentions(iter(headers + grounded.mentions))),
        relations=grounded.relations,
        dropped_entities=grounded.dropped_entities,
        dropped_relations=grounded.dropped_relations,
        answer_json=answer.model_dump_json(),
        answered_entities=len(answer.entities),
        **call_fields,
    )


def _usage(completion: object) -> TokenUsage:
    usage = getattr(completion, "usage", None)
    if usage is None:
        return TokenUsage()
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return TokenUsage(
        prompt=usage.prompt_tokens or 0,
        completion=usage.completion_tokens or 0,
        reasoning=(getattr(completion_details, "reasoning_tokens", None) or 0) if completion_details else 0,
        cached=(getattr(prompt_details, "cached_tokens", None) or 0) if prompt_details else 0,
    )


def error_detail(exc: openai.APIStatusError) -> str:
    """OpenAI's error body in one line: ``code: message`` (``{"error": {"code", "message"}}``, or the body as
    it came when it has another shape); the exception's type stands in for a missing code."""
    body = exc.body
    error = body.get("error", body) if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    detail = message or (json.dumps(body)[:200] if body else str(exc))
    return f"{code or type(exc).__name__}: {preview(detail)}"


def error_code(exc: openai.APIStatusError) -> str:
    """OpenAI's ``error.code`` (``invalid_api_key``, ``model_not_found``...), else the HTTP status as a name."""
    body = exc.body
    error = body.get("error", body) if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code else f"http_{exc.status_code}"


def _status_reason(exc: openai.APIStatusError) -> str:
    return f"HTTP {exc.status_code} {error_detail(exc)} (request id {exc.request_id})"
