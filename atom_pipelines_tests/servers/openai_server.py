"""An OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks, driven by the real ``openai``
client: ``GET /v1/models``, ``GET /v1/models/{id}`` and ``POST /v1/chat/completions`` in the real wire
format, OpenAI's real error bodies and headers, and scripted faults per request or per model.

    with OpenAICompatibleServer(accepted_keys={"sk-test-key"}) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test-key", max_retries=0)
        server.script([Behaviour("null"), Behaviour("rate_limited", retry_after=0.2)], model="gpt-4o-mini")
        server.set_default(Behaviour("empty"), model="gpt-4o")

Which behaviour answers a request: the next one queued for its model, else the next one queued for any
model (``script(..., model=None)``), else the model's default (``set_default(..., model=...)``), else the
server's default (``deterministic`` unless the constructor says otherwise).

Behaviours (``Behaviour(kind, ...)``; ``BEHAVIOURS`` lists them):
  deterministic   default: a "model" that reads the user message and returns what it can find
                  deterministically (e-mail addresses and capitalized two-word names as person, dollar
                  amounts as money), each with a verbatim evidence quote; always schema-valid; no
                  relations; {"entities": [], "relations": []} when it finds nothing
  valid           ``answer`` as given (the deterministic answer when ``answer`` is None)
  latency         the deterministic answer after ``latency_ms`` (``latency_ms`` also combines with any kind)
  fenced          the answer inside ```json fences
  prose           "Here is the output in JSON format:\\n" + JSON + a closing sentence
  trailing_comma  the answer with trailing commas (not JSON; json-repair mends it)
  empty / null / whitespace   content "" / null (as reasoning models answer) / "  \\n\\t "
  truncated       finish_reason "length", the JSON cut off half way
  refusal         content null, message.refusal "I'm sorry, I can't help with that."
  content_filter  finish_reason "content_filter", content null
  invalid_schema  valid JSON of the wrong shape (entities without "type")
  not_json        plain prose
  rate_limited    429, OpenAI's rate-limit body (type "requests", code "rate_limit_exceeded"), Retry-After
                  (whole seconds) and retry-after-ms (the openai client prefers it) and x-ratelimit-* headers
  server_error    500, OpenAI's server_error body

The protocol rules the real service enforces and a client can get wrong are enforced here too: Bearer
auth (401 with OpenAI's body, the key masked, never echoed whole), strict ``json_schema`` response formats
(every object ``additionalProperties: false`` and every property required, else 400 as OpenAI answers),
``json_object`` only when the messages say "json" (else 400), ``max_completion_tokens``/``max_tokens``
(a longer answer is cut and ends with finish_reason "length"), unknown models (404, when
``reject_unknown_models``), and an optional requests-per-minute limit over a sliding 60 s window (429 with
a correct Retry-After; x-ratelimit-* headers on every chat completion response while a limit is set).

Tokens are counted approximately as ``len(text) // 4``: prompt tokens over the concatenated message
contents, completion tokens over the returned content (or refusal), plus any scripted reasoning tokens.
The ``usage`` in each answer is exactly what the counters add up.
"""

from __future__ import annotations

import collections
import json
import math
import random
import re
import threading
import time
import traceback
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal, get_args

from atom_pipelines_tests.servers.http import BackgroundServer, QuietHandler

if TYPE_CHECKING:
    import openai

BehaviourKind = Literal[
    "deterministic",
    "valid",
    "latency",
    "fenced",
    "prose",
    "trailing_comma",
    "empty",
    "null",
    "whitespace",
    "truncated",
    "refusal",
    "content_filter",
    "invalid_schema",
    "not_json",
    "rate_limited",
    "server_error",
]
BEHAVIOURS: frozenset[str] = frozenset(get_args(BehaviourKind))

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "o3-mini")
REFUSAL = "I'm sorry, I can't help with that."
NOT_JSON = "I could not find any entities in this e-mail, sorry."
ORGANIZATION = "org-atomtest"

# Error messages as OpenAI words them.
INCORRECT_KEY = (
    "Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
)
MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth "
    "(i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the "
    "API from your browser and are prompted for a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
RATE_LIMIT = (
    "Rate limit reached for {model} in organization {organization} on requests per min (RPM): Limit {limit}, "
    "Used {used}, Requested 1. Please try again in {wait}. Visit https://platform.openai.com/account/rate-limits "
    "to learn more."
)
SERVER_ERROR = (
    "The server had an error while processing your request. Sorry about that! You can retry your request, or "
    "contact us through our help center at help.openai.com if the error persists. (Please include the request ID "
    "{request_id} in your message.)"
)
MODEL_NOT_FOUND = "The model `{model}` does not exist or you do not have access to it."
INVALID_JSON_BODY = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library "
    "correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble "
    "figuring out how to fix this, please contact us through our help center at help.openai.com.)"
)
JSON_WORD_MISSING = (
    "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'."
)

_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_NAME = re.compile(r"\b[A-Z][a-z]+ [A-Z][a-z]+\b")
# Whole tokens only, as a model quotes them: "$110k" is "$110k", never "$110" (which grounding rightly rejects).
_MONEY = re.compile(r"\$\d+(?:,\d{3})*(?:\.\d+)?(?:[kKmMbB]{1,2})?(?: (?:thousand|million|billion))?(?!\w)")
_SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: Characters of context either side of a match in an evidence quote.
EVIDENCE_CONTEXT = 40
#: The deterministic model lists at most this many entities (a long mail stays inside 2,000 output tokens).
MAX_ENTITIES = 40


@dataclass(frozen=True)
class Behaviour:
    """How the server answers one chat completion request.

    kind: one of ``BEHAVIOURS``. latency_ms: wait this long before answering (adds to the server's fixed
    latency). answer: the ExtractionAnswer-shaped dict (or pydantic model) that content-bearing kinds
    render; None means the deterministic answer for the request. retry_after: seconds a ``rate_limited``
    answer asks the client to wait; send_retry_after_ms: also send ``retry-after-ms`` (the openai client
    reads it first; real OpenAI may send only ``retry-after``). reasoning_tokens / cached_tokens: reported
    in ``usage`` (reasoning tokens count as completion tokens, as OpenAI bills them).
    """

    kind: str = "deterministic"
    latency_ms: int = 0
    answer: Any = None
    retry_after: float = 1.0
    send_retry_after_ms: bool = True
    reasoning_tokens: int = 0
    cached_tokens: int = 0

    def __post_init__(self) -> None:
        if self.kind not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {self.kind!r}; known: {', '.join(sorted(BEHAVIOURS))}")
        if self.latency_ms < 0 or self.retry_after <= 0 or self.reasoning_tokens < 0 or self.cached_tokens < 0:
            raise ValueError(f"negative latency/tokens or non-positive retry_after in {self!r}")
        if self.answer is not None and hasattr(self.answer, "model_dump"):
            object.__setattr__(self, "answer", self.answer.model_dump(mode="json"))


def tokens(text: str) -> int:
    """The server's approximate token count: four characters a token."""
    return len(text) // 4


def go_duration(seconds: float) -> str:
    """A duration as OpenAI writes it in x-ratelimit-reset-* and rate-limit messages: "120ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{float(f'{seconds:.3f}'):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{float(f'{rest:.3f}'):g}s"


def mask_key(key: str) -> str:
    """How OpenAI shows a rejected key: the first 8 and last 4 characters, stars between."""
    if len(key) > 12:
        return f"{key[:8]}{'*' * (len(key) - 12)}{key[-4:]}"
    return "*" * len(key)


def message_text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def deterministic_answer(user_content: str) -> dict:
    """What the deterministic 'model' finds in the user message of a request.

    With our prompt's layout ("Subject: ..." and a "Body:" line) it reads the subject and the body only
    (the participants are header data, which the pipeline adds itself); otherwise the whole message.
    """
    if "\nBody:\n" in user_content:
        subject = re.search(r"^Subject: (.*)$", user_content, re.MULTILINE)
        body = user_content.split("\nBody:\n", 1)[1]
        text = f"{subject.group(0) if subject else ''}\n{body}"
    else:
        text = user_content
    entities: dict[tuple[str, str], dict] = {}

    def evidence(start: int, end: int) -> str:
        """A verbatim quote around the match, inside its line."""
        line_start = text.rfind("\n", 0, start) + 1
        line_end = text.find("\n", end)
        line_end = len(text) if line_end == -1 else line_end
        return text[max(line_start, start - EVIDENCE_CONTEXT) : min(line_end, end + EVIDENCE_CONTEXT)].strip()

    def add(name: str, type_: str, email: str | None, span: tuple[int, int]) -> None:
        if len(entities) < MAX_ENTITIES:
            entities.setdefault(
                (name.casefold(), type_),
                {
                    "name": name,
                    "type": type_,
                    "email": email,
                    "evidence": evidence(*span),
                },
            )

    for match in _EMAIL.finditer(text):
        add(match.group(), "person", match.group().lower(), match.span())
    for match in _NAME.finditer(text):
        add(match.group(), "person", None, match.span())
    for match in _MONEY.finditer(text):
        add(match.group(), "money", None, match.span())
    return {"entities": list(entities.values()), "relations": []}


def strict_schema_problem(schema: Any) -> str | None:
    """Why OpenAI would refuse ``schema`` as a strict structured-output schema, worded as OpenAI words it
    after "Invalid schema for response_format 'NAME': "; None when it would accept it."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        got = schema.get("type") if isinstance(schema, dict) else type(schema).__name__
        return f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{got}\"'."

    def walk(node: Any, context: tuple) -> str | None:
        if not isinstance(node, dict):
            return None
        if node.get("type") == "object" or "properties" in node:
            if node.get("additionalProperties") is not False:
                return f"In context={context!r}, 'additionalProperties' is required to be supplied and to be false."
            required = node.get("required")
            missing = [
                key for key in node.get("properties", {}) if not isinstance(required, list) or key not in required
            ]
            if missing:
                return (
                    f"In context={context!r}, 'required' is required to be supplied and to be an array including "
                    f"every key in properties. Missing '{missing[0]}'."
                )
        for container in ("properties", "$defs", "definitions"):
            for name, child in (node.get(container) or {}).items():
                if problem := walk(child, (*context, container, name)):
                    return problem
        if problem := walk(node.get("items"), (*context, "items")):
            return problem
        for combinator in ("anyOf", "oneOf", "allOf"):
            for index, child in enumerate(node.get(combinator) or []):
                if problem := walk(child, (*context, combinator, index)):
                    return problem
        return None

    return walk(schema, ())


@dataclass
class _Reply:
    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class _Counters:
    requests: int = 0
    unauthorized: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_model: collections.Counter = field(default_factory=collections.Counter)
    by_path: collections.Counter = field(default_factory=collections.Counter)
    bodies: list[dict] = field(default_factory=list)


class OpenAICompatibleServer(BackgroundServer):
    """A real HTTP server on 127.0.0.1 (a free port) that speaks OpenAI's chat completions protocol.

    Start it with ``with OpenAICompatibleServer(...) as server:`` (or ``start()``/``stop()``) and point the
    real client at ``server.base_url``. Everything is thread-safe.

    accepted_keys: the API keys it accepts (default {"sk-test-key"}). default: the behaviour when nothing
    is scripted (default deterministic). requests_per_minute: a limit for the whole server over a sliding
    60 s window (None: no limit). latency_ms: a fixed delay before every chat completion answer (not before
    a 429 from the limit, which the real service answers at once). models: what ``/v1/models`` lists.
    reject_unknown_models: answer 404 model_not_found for a model not in ``models``.
    """

    def __init__(
        self,
        accepted_keys: Iterable[str] | None = None,
        default: Behaviour | None = None,
        requests_per_minute: int | None = None,
        latency_ms: int = 0,
        models: Iterable[str] | None = None,
        reject_unknown_models: bool = False,
    ) -> None:
        if requests_per_minute is not None and requests_per_minute < 1:
            raise ValueError("requests_per_minute must be at least 1 (or None for no limit)")
        self._lock = threading.Lock()
        self._accepted_keys = set(accepted_keys or {"sk-test-key"})
        self._default = default or Behaviour()
        self._model_defaults: dict[str, Behaviour] = {}
        self._scripts: dict[str | None, collections.deque[Behaviour]] = collections.defaultdict(collections.deque)
        self.requests_per_minute = requests_per_minute
        self.latency_ms = latency_ms
        self.models = tuple(models or DEFAULT_MODELS)
        self.reject_unknown_models = reject_unknown_models
        self._window: collections.deque[float] = collections.deque()
        self._failing: tuple[float, Behaviour, random.Random] | None = None
        self._counters = _Counters()
        self._errors: list[str] = []
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.app = self  # type: ignore[attr-defined]
        self._serve_in_background(httpd, "openai-test-server")

    # -- lifecycle --------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What ``openai.OpenAI(base_url=...)`` needs: ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def client(
        self, api_key: str | None = None, max_retries: int = 0, timeout: float = 10.0, **options: Any
    ) -> openai.OpenAI:
        """A real ``openai.OpenAI`` client pointed at this server (by default with an accepted key)."""
        import openai

        key = api_key if api_key is not None else min(self._accepted_keys)
        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=max_retries, timeout=timeout, **options)

    # -- keys and scripting -----------------------------------------------------------------------------

    def accept_key(self, key: str) -> None:
        with self._lock:
            self._accepted_keys.add(key)

    def revoke_key(self, key: str) -> None:
        with self._lock:
            self._accepted_keys.discard(key)

    def script(self, behaviours: Iterable[Behaviour | str], model: str | None = None) -> None:
        """Queue behaviours for the next requests, one each: of ``model``, or of any model when None."""
        queued = [b if isinstance(b, Behaviour) else Behaviour(b) for b in behaviours]
        with self._lock:
            self._scripts[model].extend(queued)

    def set_default(self, behaviour: Behaviour | str, model: str | None = None) -> None:
        """The behaviour once nothing is queued: for ``model``, or for every model when None."""
        behaviour = behaviour if isinstance(behaviour, Behaviour) else Behaviour(behaviour)
        with self._lock:
            if model is None:
                self._default = behaviour
            else:
                self._model_defaults[model] = behaviour

    def fail_share(self, share: float, behaviour: Behaviour | str = "server_error", seed: int = 0) -> None:
        """Answer about ``share`` of the chat completions (drawn from a seeded generator, so a run is
        repeatable) with ``behaviour`` instead of what would have answered them: a provider having a bad
        day. Scripts and defaults answer the rest. ``share=0`` switches it off."""
        if not 0 <= share <= 1:
            raise ValueError("share must be between 0 and 1")
        behaviour = behaviour if isinstance(behaviour, Behaviour) else Behaviour(behaviour)
        with self._lock:
            self._failing = (share, behaviour, random.Random(seed)) if share else None

    def scripted_left(self, model: str | None = None) -> int:
        """How many queued behaviours are still waiting (for ``model``, or in the any-model queue)."""
        with self._lock:
            return len(self._scripts.get(model, ()))

    # -- counters ---------------------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """Chat completion requests received (every answer: 200, 401, 404, 400, 429 and 500)."""
        with self._lock:
            return self._counters.requests

    def requests_for(self, model: str) -> int:
        """Chat completion requests received for ``model``."""
        with self._lock:
            return self._counters.by_model[model]

    @property
    def requests_by_model(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters.by_model)

    @property
    def requests_by_path(self) -> dict[str, int]:
        """Every HTTP request received, by method and path ("POST /v1/chat/completions", "GET /v1/models")."""
        with self._lock:
            return dict(self._counters.by_path)

    @property
    def unauthorized(self) -> int:
        """Requests answered 401."""
        with self._lock:
            return self._counters.unauthorized

    @property
    def rate_limited(self) -> int:
        """Requests answered 429 (scripted or by the requests-per-minute limit)."""
        with self._lock:
            return self._counters.rate_limited

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens reported in the ``usage`` of every 200 answer, summed."""
        with self._lock:
            return self._counters.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        """Completion tokens (reasoning included) reported in the ``usage`` of every 200 answer, summed."""
        with self._lock:
            return self._counters.completion_tokens

    @property
    def bodies(self) -> list[dict]:
        """The JSON bodies of the chat completion requests received, in order (a copy)."""
        with self._lock:
            return list(self._counters.bodies)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of bugs in this server (each also answered 500); a test may assert it is empty."""
        with self._lock:
            return list(self._errors)

    def reset_counters(self) -> None:
        """Zero every counter and forget the bodies (scripts, defaults and the rate window stay)."""
        with self._lock:
            self._counters = _Counters()

    # -- request handling (called from the handler threads) ---------------------------------------------

    def _handle(self, method: str, path: str, headers: Any, raw_body: bytes) -> _Reply:
        path = path.split("?", 1)[0].rstrip("/")
        with self._lock:
            self._counters.by_path[f"{method} {path}"] += 1
        if method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
            return self._auth_error(headers) or self._models(path)
        if method == "POST" and path == "/v1/chat/completions":
            return self._chat_completion(headers, raw_body)
        return _error(404, f"Invalid URL ({method} {path})", "invalid_request_error", None, None)

    def _auth_error(self, headers: Any) -> _Reply | None:
        header = headers.get("Authorization") or ""
        key = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
        with self._lock:
            if key and key in self._accepted_keys:
                return None
            self._counters.unauthorized += 1
        message = INCORRECT_KEY.format(masked=mask_key(key)) if key else MISSING_KEY
        return _error(401, message, "invalid_request_error", None, "invalid_api_key" if key else None)

    def _models(self, path: str) -> _Reply:
        def entry(model: str) -> dict:
            return {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "system"}

        if path == "/v1/models":
            return _Reply(200, {"object": "list", "data": [entry(m) for m in self.models]})
        model = path.removeprefix("/v1/models/")
        if model in self.models:
            return _Reply(200, entry(model))
        return _error(404, MODEL_NOT_FOUND.format(model=model), "invalid_request_error", "model", "model_not_found")

    def _chat_completion(self, headers: Any, raw_body: bytes) -> _Reply:
        try:
            body = json.loads(raw_body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        model = body.get("model") if isinstance(body, dict) else None
        with self._lock:
            self._counters.requests += 1
            self._counters.by_model[str(model)] += 1
            self._counters.bodies.append(
                body if isinstance(body, dict) else {"unparsable": raw_body.decode("utf-8", "replace")}
            )
        if unauthorized := self._auth_error(headers):
            return unauthorized
        if not isinstance(body, dict):
            return _error(400, INVALID_JSON_BODY, "invalid_request_error", None, None)

        rate_headers, wait = self._take_rate_slot()
        if wait is not None:
            with self._lock:
                self._counters.rate_limited += 1
            limit = self.requests_per_minute or 0
            return self._rate_limit_reply(str(model), wait, limit, limit, rate_headers, send_ms=True)

        invalid = self._invalid_request(body)
        if invalid:
            invalid.headers.update(rate_headers)
            return invalid

        with self._lock:
            queued = self._scripts.get(model) or self._scripts.get(None)
            behaviour = queued.popleft() if queued else self._model_defaults.get(model, self._default)
            if self._failing is not None and self._failing[2].random() < self._failing[0]:
                behaviour = self._failing[1]
        delay_s = (self.latency_ms + behaviour.latency_ms) / 1000
        if behaviour.kind == "rate_limited":
            with self._lock:
                self._counters.rate_limited += 1
            limit = self.requests_per_minute or 3  # the free tier's RPM, as in OpenAI's best-known 429
            headers_429 = {
                **rate_headers,
                "x-ratelimit-limit-requests": str(limit),
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": go_duration(behaviour.retry_after),
            }
            reply = self._rate_limit_reply(
                model, behaviour.retry_after, limit, limit, headers_429, behaviour.send_retry_after_ms
            )
        elif behaviour.kind == "server_error":
            reply = _error(500, SERVER_ERROR, "server_error", None, None)
        else:
            reply = self._completion(body, model, behaviour)
        reply.headers.update({k: v for k, v in rate_headers.items() if k not in reply.headers})
        reply.delay_s = delay_s
        return reply

    def _take_rate_slot(self) -> tuple[dict[str, str], float | None]:
        """Take a slot in the sliding 60 s window: (x-ratelimit-* headers, None), or (headers, seconds until
        a slot frees) when the window is full. Refused requests take no slot. ``x-ratelimit-reset-requests``
        is the time until the oldest request leaves the window, i.e. until one more is allowed."""
        limit = self.requests_per_minute
        if not limit:
            return {}, None
        with self._lock:
            now = time.monotonic()
            while self._window and now - self._window[0] >= 60:
                self._window.popleft()
            full = len(self._window) >= limit
            if not full:
                self._window.append(now)
            reset = 60 - (now - self._window[0])
            remaining = limit - len(self._window)
        headers = {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": go_duration(reset),
        }
        return headers, (reset if full else None)

    def _rate_limit_reply(
        self, model: str, wait: float, limit: int, used: int, headers: dict[str, str], send_ms: bool
    ) -> _Reply:
        retry = {"retry-after": str(max(1, math.ceil(wait)))}
        if send_ms:
            retry["retry-after-ms"] = str(max(1, round(wait * 1000)))
        message = RATE_LIMIT.format(
            model=model, organization=ORGANIZATION, limit=limit, used=used, wait=go_duration(wait)
        )
        return _error(429, message, "requests", None, "rate_limit_exceeded", {**headers, **retry})

    def _invalid_request(self, body: dict) -> _Reply | None:
        """The 400/404 the real service answers before any model runs, or None."""
        model = body.get("model")
        if not model:
            return _error(400, "you must provide a model parameter", "invalid_request_error", None, None)
        messages = body.get("messages")
        if messages is None:
            return _error(
                400,
                "Missing required parameter: 'messages'.",
                "invalid_request_error",
                "messages",
                "missing_required_parameter",
            )
        if not isinstance(messages, list) or not messages:
            return _error(
                400,
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                "empty array instead.",
                "invalid_request_error",
                "messages",
                "empty_array",
            )
        if body.get("stream"):
            return _error(
                400,
                "This test server does not stream; send stream=false.",
                "invalid_request_error",
                "stream",
                "unsupported_value",
            )
        if self.reject_unknown_models and model not in self.models:
            return _error(404, MODEL_NOT_FOUND.format(model=model), "invalid_request_error", None, "model_not_found")
        response_format = body.get("response_format")
        if response_format is None:
            return None
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            return _error(
                400,
                f"Invalid value: '{kind}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
                "invalid_request_error",
                "response_format.type",
                "invalid_value",
            )
        if kind == "json_object":
            said = " ".join(message_text(m.get("content")) for m in messages if isinstance(m, dict))
            if "json" not in said.lower():
                return _error(400, JSON_WORD_MISSING, "invalid_request_error", "messages", None)
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, dict) or not spec.get("name"):
                return _error(
                    400,
                    "Missing required parameter: 'response_format.json_schema.name'.",
                    "invalid_request_error",
                    "response_format.json_schema.name",
                    "missing_required_parameter",
                )
            if not _SCHEMA_NAME.match(str(spec["name"])):
                return _error(
                    400,
                    "Invalid 'response_format.json_schema.name': string does not match pattern. "
                    "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                    "invalid_request_error",
                    "response_format.json_schema.name",
                    "invalid_value",
                )
            if spec.get("strict") is True and (problem := strict_schema_problem(spec.get("schema"))):
                return _error(
                    400,
                    f"Invalid schema for response_format '{spec['name']}': {problem}",
                    "invalid_request_error",
                    "response_format",
                    None,
                )
        return None

    def _completion(self, request: dict, model: str, behaviour: Behaviour) -> _Reply:
        messages = [m for m in request["messages"] if isinstance(m, dict)]
        user = next((message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        prompt_text = "".join(message_text(m.get("content")) for m in messages)
        answer = behaviour.answer if behaviour.answer is not None else deterministic_answer(user)
        valid = json.dumps(answer)
        content: str | None = valid
        refusal: str | None = None
        finish = "stop"
        kind = behaviour.kind
        if kind == "fenced":
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
            content, refusal = None, REFUSAL
        elif kind == "content_filter":
            content, finish = None, "content_filter"
        elif kind == "invalid_schema":
            wrong = [{k: v for k, v in e.items() if k != "type"} for e in answer.get("entities", [])]
            content = json.dumps(
                {
                    "entities": wrong or [{"name": "Unknown", "email": None, "evidence": ""}],
                    "relations": answer.get("relations", []),
                }
            )
        elif kind == "not_json":
            content = NOT_JSON
        # The output allowance: an answer longer than it is cut off, as a real model's would be.
        allowance = request.get("max_completion_tokens") or request.get("max_tokens")
        if isinstance(allowance, int) and content and tokens(content) > allowance:
            content, finish = content[: allowance * 4], "length"
        prompt_tokens = tokens(prompt_text)
        completion_tokens = tokens(content or refusal or "") + behaviour.reasoning_tokens
        cached = min(behaviour.cached_tokens, prompt_tokens)
        with self._lock:
            self._counters.prompt_tokens += prompt_tokens
            self._counters.completion_tokens += completion_tokens
        return _Reply(
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                    "completion_tokens_details": {
                        "reasoning_tokens": behaviour.reasoning_tokens,
                        "audio_tokens": 0,
                        "accepted_prediction_tokens": 0,
                        "rejected_prediction_tokens": 0,
                    },
                },
                "service_tier": "default",
                "system_fingerprint": "fp_atomtest",
            },
        )

    def _record_bug(self) -> _Reply:
        with self._lock:
            self._errors.append(traceback.format_exc())
        return _error(
            500,
            "openai_server bug (see server.errors): " + traceback.format_exc(limit=1).strip().splitlines()[-1],
            "server_error",
            None,
            "test_server_bug",
        )


def _error(
    status: int, message: str, type_: str, param: str | None, code: str | None, headers: dict[str, str] | None = None
) -> _Reply:
    """OpenAI's error envelope. ``{request_id}`` in the message becomes the response's x-request-id."""
    return _Reply(
        status, {"error": {"message": message, "type": type_, "param": param, "code": code}}, dict(headers or {})
    )


class _Handler(QuietHandler):
    server_version = "atom-openai-test"

    def do_GET(self) -> None:
        self._serve("GET", b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._serve("POST", self.rfile.read(length) if length else b"")

    def _serve(self, method: str, raw_body: bytes) -> None:
        app: OpenAICompatibleServer = self.server.app  # type: ignore[attr-defined]
        started = time.perf_counter()
        try:
            reply = app._handle(method, self.path, self.headers, raw_body)
        except Exception:  # noqa: BLE001 - a bug in this server: recorded in server.errors and answered 500,
            # never a dropped connection that the client would retry as a network error
            reply = app._record_bug()
        if reply.delay_s:
            time.sleep(reply.delay_s)
        request_id = f"req_{uuid.uuid4().hex}"
        if "error" in reply.body and "{request_id}" in reply.body["error"]["message"]:
            reply.body["error"]["message"] = reply.body["error"]["message"].replace("{request_id}", request_id)
        payload = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-request-id", request_id)
        self.send_header("openai-organization", ORGANIZATION)
        self.send_header("openai-version", "2020-10-01")
        self.send_header("openai-processing-ms", str(round((time.perf_counter() - started) * 1000)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
