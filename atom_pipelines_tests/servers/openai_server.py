"""An OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks, driven by the real ``openai``
client: ``/v1/chat/completions`` and ``/v1/models`` in the real wire format, the real error bodies, and
scripted faults per request or per model.

Behaviours (``Behaviour(kind, ...)``):
  deterministic   default: a "model" that answers from the message text (addresses, capitalized two-word
                  names, dollar amounts), always schema-valid; {"entities": [], "relations": []} if nothing
  valid           ``answer`` as given          fenced     valid JSON inside ```json fences
  prose           "Here is the output in JSON format:" + JSON + a closing sentence
  trailing_comma  JSON with trailing commas (json-repair mends it)
  empty / null / whitespace   content "" / null (as reasoning models answer) / "  \\n"
  truncated       finish_reason "length", JSON cut off half way
  refusal         content null, message.refusal set     content_filter   finish_reason "content_filter"
  invalid_schema  valid JSON of the wrong shape         not_json   plain prose
  rate_limited    429 with Retry-After and x-ratelimit-* headers, OpenAI's body
  server_error    500 with OpenAI's body
Any behaviour can carry ``latency_ms``. Tokens are counted approximately as len(text) // 4.
"""

from __future__ import annotations

import collections
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RATE_LIMIT_BODY = (
    "Rate limit reached for {model} in organization org-atomtest on requests per min (RPM): Limit {limit}, "
    "Used {limit}, Requested 1. Please try again in {wait}s. Visit https://platform.openai.com/account/rate-limits "
    "to learn more."
)

_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_NAME = re.compile(r"\b[A-Z][a-z]+ [A-Z][a-z]+\b")
_MONEY = re.compile(r"\$\d[\d,]*(?:\.\d+)?(?: (?:million|billion))?")


@dataclass(frozen=True)
class Behaviour:
    kind: str = "deterministic"
    latency_ms: int = 0
    answer: dict | None = None
    retry_after: float = 1.0


def tokens(text: str) -> int:
    return len(text) // 4


def deterministic_answer(user_content: str) -> dict:
    """What the deterministic 'model' finds in the message part of a request."""
    body = user_content.split("\nBody:\n", 1)[-1]
    subject = re.search(r"^Subject: (.*)$", user_content, re.MULTILINE)
    text = f"{subject.group(1) if subject else ''}\n{body}"
    entities: dict[tuple[str, str], dict] = {}

    def evidence(start: int, end: int) -> str:
        line_start = text.rfind("\n", 0, start) + 1
        line_end = text.find("\n", end)
        return text[line_start : line_end if line_end != -1 else len(text)].strip()[:160]

    for match in _EMAIL.finditer(text):
        entities.setdefault((match.group().lower(), "person"), {
            "name": match.group(), "type": "person", "email": match.group().lower(), "evidence": evidence(*match.span())})
    for match in _NAME.finditer(text):
        entities.setdefault((match.group(), "person"), {
            "name": match.group(), "type": "person", "email": None, "evidence": evidence(*match.span())})
    for match in _MONEY.finditer(text):
        entities.setdefault((match.group(), "money"), {
            "name": match.group(), "type": "money", "email": None, "evidence": evidence(*match.span())})
    return {"entities": list(entities.values()), "relations": []}


@dataclass
class _State:
    accepted_keys: set[str]
    default: Behaviour
    requests_per_minute: int | None
    latency_ms: int
    models: list[str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    scripts: dict[str | None, collections.deque] = field(default_factory=lambda: collections.defaultdict(collections.deque))
    defaults: dict[str, Behaviour] = field(default_factory=dict)
    window: collections.deque = field(default_factory=collections.deque)
    requests: int = 0
    requests_by_model: collections.Counter = field(default_factory=collections.Counter)
    requests_by_path: collections.Counter = field(default_factory=collections.Counter)
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    bodies: list[dict] = field(default_factory=list)


class OpenAICompatibleServer:
    """Start with ``with OpenAICompatibleServer() as server:``; point the client at ``server.base_url``."""

    def __init__(
        self,
        accepted_keys: set[str] | None = None,
        default: Behaviour | None = None,
        requests_per_minute: int | None = None,
        latency_ms: int = 0,
        models: list[str] | None = None,
    ) -> None:
        self.state = _State(
            accepted_keys=accepted_keys or {"sk-test-key"},
            default=default or Behaviour(),
            requests_per_minute=requests_per_minute,
            latency_ms=latency_ms,
            models=models or ["gpt-4o-mini", "gpt-4o", "o3-mini"],
        )
        state = self.state

        class Handler(_Handler):
            pass

        Handler.state = state
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> OpenAICompatibleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- scripting ------------------------------------------------------------------------------------

    def script(self, behaviours: list[Behaviour], model: str | None = None) -> None:
        """Queue behaviours for the next requests (of this model, or of any model when None)."""
        with self.state.lock:
            self.state.scripts[model].extend(behaviours)

    def set_default(self, behaviour: Behaviour, model: str | None = None) -> None:
        with self.state.lock:
            if model is None:
                self.state.default = behaviour
            else:
                self.state.defaults[model] = behaviour

    # -- counters -------------------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        return self.state.requests

    def requests_for(self, model: str) -> int:
        return self.state.requests_by_model[model]

    @property
    def rate_limited(self) -> int:
        return self.state.rate_limited

    @property
    def prompt_tokens(self) -> int:
        return self.state.prompt_tokens

    @property
    def bodies(self) -> list[dict]:
        return list(self.state.bodies)

    def reset_counters(self) -> None:
        with self.state.lock:
            self.state.requests = self.state.rate_limited = 0
            self.state.prompt_tokens = self.state.completion_tokens = 0
            self.state.requests_by_model.clear()
            self.state.requests_by_path.clear()
            self.state.bodies.clear()


class _Handler(BaseHTTPRequestHandler):
    state: _State
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: tests read counters, not access logs

    # -- plumbing -------------------------------------------------------------------------------------

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, message: str, type_: str, code: str | None, headers: dict | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": type_, "param": None, "code": code}}, headers)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        key = header.removeprefix("Bearer ").strip()
        if key in self.state.accepted_keys:
            return True
        shown = f"{key[:3]}*{key[-4:]}" if len(key) > 8 else "*" * len(key)
        self._error(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )
        return False

    def _rate_headers(self) -> tuple[dict[str, str], float | None]:
        """x-ratelimit-* headers, and the seconds to wait when the window is full (None when not)."""
        limit = self.state.requests_per_minute
        if not limit:
            return {}, None
        now = time.monotonic()
        window = self.state.window
        while window and now - window[0] >= 60:
            window.popleft()
        reset = 60 - (now - window[0]) if window else 0.0
        if len(window) >= limit:
            return (
                {
                    "x-ratelimit-limit-requests": str(limit),
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": f"{reset:.3f}s",
                },
                reset,
            )
        window.append(now)
        remaining = limit - len(window)
        reset = 60 - (now - window[0])
        return (
            {
                "x-ratelimit-limit-requests": str(limit),
                "x-ratelimit-remaining-requests": str(remaining),
                "x-ratelimit-reset-requests": f"{reset:.3f}s",
            },
            None,
        )

    # -- endpoints ------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        with self.state.lock:
            self.state.requests_by_path[self.path] += 1
        if self.path.rstrip("/") != "/v1/models":
            self._error(404, f"Invalid URL (GET {self.path})", "invalid_request_error", None)
            return
        if not self._authorized():
            return
        created = 1_700_000_000
        self._send(200, {"object": "list", "data": [
            {"id": model, "object": "model", "created": created, "owned_by": "atom-test"} for model in self.state.models
        ]})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"Invalid URL (POST {self.path})", "invalid_request_error", None)
            return
        if not self._authorized():
            return
        model = body.get("model", "")
        with self.state.lock:
            self.state.requests += 1
            self.state.requests_by_model[model] += 1
            self.state.requests_by_path[self.path] += 1
            self.state.bodies.append(body)
            queued = self.state.scripts.get(model) or self.state.scripts.get(None)
            behaviour = queued.popleft() if queued else self.state.defaults.get(model, self.state.default)
            rate_headers, wait = self._rate_headers()
            if wait is not None:
                self.state.rate_limited += 1
        delay = (self.state.latency_ms + behaviour.latency_ms) / 1000
        if delay:
            time.sleep(delay)
        if wait is not None:
            self._rate_limited(model, wait, rate_headers)
            return
        if behaviour.kind == "rate_limited":
            with self.state.lock:
                self.state.rate_limited += 1
            wait = behaviour.retry_after
            self._rate_limited(model, wait, {
                "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{wait:.3f}s",
            })
            return
        if behaviour.kind == "server_error":
            self._error(500, "The server had an error while processing your request. Sorry about that!", "server_error", None)
            return
        self._complete(body, model, behaviour, rate_headers)

    def _rate_limited(self, model: str, wait: float, headers: dict[str, str]) -> None:
        headers = {**headers, "retry-after": str(max(1, math.ceil(wait))), "retry-after-ms": str(int(wait * 1000))}
        limit = headers.get("x-ratelimit-limit-requests", "3")
        self._error(429, RATE_LIMIT_BODY.format(model=model, limit=limit, wait=math.ceil(wait)), "requests",
                    "rate_limit_exceeded", headers)

    def _complete(self, request: dict, model: str, behaviour: Behaviour, headers: dict[str, str]) -> None:
        messages = request.get("messages", [])
        user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        prompt_text = "".join(str(m.get("content", "")) for m in messages)
        answer = behaviour.answer if behaviour.answer is not None else deterministic_answer(user)
        valid = json.dumps(answer)
        content: str | None
        refusal = None
        finish = "stop"
        kind = behaviour.kind
        if kind in ("deterministic", "valid"):
            content = valid
        elif kind == "fenced":
            content = f"```json\n{json.dumps(answer, indent=2)}\n```"
        elif kind == "prose":
            content = f"Here is the output in JSON format:\n{valid}\nLet me know if you need anything else."
        elif kind == "trailing_comma":
            content = json.dumps(answer, indent=1).replace("\n]", ",\n]").replace("\n}", ",\n}")
        elif kind == "empty":
            content = ""
        elif kind == "null":
            content = None
        elif kind == "whitespace":
            content = "  \n\t "
        elif kind == "truncated":
            content, finish = valid[: max(1, len(valid) // 2)], "length"
        elif kind == "refusal":
            content, refusal = None, "I'm sorry, I can't help with that."
        elif kind == "content_filter":
            content, finish = None, "content_filter"
        elif kind == "invalid_schema":
            content = json.dumps({"entities": [{"name": e["name"]} for e in answer["entities"]] or [{"name": "x"}]})
        elif kind == "not_json":
            content = "I could not find any entities in this e-mail, sorry."
        else:
            raise ValueError(f"unknown behaviour {kind!r}")
        prompt_tokens = tokens(prompt_text)
        completion_tokens = tokens(content or refusal or "")
        with self.state.lock:
            self.state.prompt_tokens += prompt_tokens
            self.state.completion_tokens += completion_tokens
        self._send(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        }, headers)
