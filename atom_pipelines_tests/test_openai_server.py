"""The OpenAI-compatible test server speaks the protocol the real ``openai`` client expects, so the tests
built on it (the OpenAI provider, the extraction chain, the benchmark) mean something.

Every scripted behaviour is driven through the real client and checked for what the client surfaces:
the parsed ``ChatCompletion`` (content, refusal, finish_reason, usage), the exception class and body for
401/404/400/429/500, the client's own retries honouring Retry-After, ``models.list()``, strict structured
outputs through ``create`` and ``parse``. Rules the real service enforces (strict schemas, the word "json"
for JSON mode, output allowances, a requests-per-minute limit) are enforced here too, so a client that
would fail against OpenAI fails against this server.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import json_repair
import openai
import pydantic
import pytest

from atom_pipelines.extraction.schema import ExtractionAnswer, response_json_schema
from atom_pipelines_tests.servers.openai_server import (
    BEHAVIOURS,
    REFUSAL,
    Behaviour,
    OpenAICompatibleServer,
    deterministic_answer,
    tokens,
)

KEY = "sk-test-0123456789abcdef"
MODEL = "gpt-4o-mini"
SYSTEM = "Extract entities. Return JSON."
USER = (
    "Participants:\n- from: Sheila Tweed <sheila.tweed@enron.com>\n\nSubject: Turbine contract\n\nBody:\n"
    "Kay, Ben Jacoby agreed to pay $5 million for the turbine.\nWrite to kay.mann@enron.com with questions."
)
STRICT = {
    "type": "json_schema",
    "json_schema": {"name": "extraction_answer", "strict": True, "schema": response_json_schema()},
}
ANSWER = {
    "entities": [
        {"name": "Ben Jacoby", "type": "person", "email": None, "evidence": "Ben Jacoby agreed to pay $5 million"},
        {"name": "$5 million", "type": "money", "email": None, "evidence": "pay $5 million for the turbine"},
    ],
    "relations": [{"source": "Ben Jacoby", "target": "$5 million", "relation": "owes", "evidence": "agreed to pay"}],
}


@pytest.fixture
def server() -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer(accepted_keys={KEY}) as running:
        yield running
        assert running.errors == []


@pytest.fixture
def client(server: OpenAICompatibleServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=10)


def ask(client: openai.OpenAI, model: str = MODEL, **kwargs: object) -> openai.types.chat.ChatCompletion:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    return client.chat.completions.create(model=model, messages=messages, **{"response_format": STRICT, **kwargs})


# -- the wire format ------------------------------------------------------------------------------------


def test_models_list_and_retrieve(server: OpenAICompatibleServer, client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models] == ["gpt-4o-mini", "gpt-4o", "o3-mini"]
    assert all(m.object == "model" and m.owned_by and m.created for m in models)
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert missing.value.code == "model_not_found"
    assert server.requests_by_path == {"GET /v1/models": 1, "GET /v1/models/gpt-4o": 1, "GET /v1/models/gpt-9": 1}
    assert server.requests == 0  # `requests` counts chat completions only


def test_the_deterministic_model_answers_from_the_message_in_the_real_wire_format(
    server: OpenAICompatibleServer, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
        response_format=STRICT,
        temperature=0,
    )
    assert raw.headers["x-request-id"].startswith("req_")
    completion = raw.parse()
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    assert completion.model == MODEL and completion.created > 0
    (choice,) = completion.choices
    assert (choice.index, choice.finish_reason, choice.message.role, choice.message.refusal) == (
        0,
        "stop",
        "assistant",
        None,
    )

    answer = ExtractionAnswer.model_validate_json(choice.message.content)
    found = {(e.name, e.type, e.email) for e in answer.entities}
    assert found == {
        ("kay.mann@enron.com", "person", "kay.mann@enron.com"),
        ("Ben Jacoby", "person", None),
        ("$5 million", "money", None),
    }
    assert all(e.name in e.evidence and e.evidence in USER for e in answer.entities)  # verbatim quotes
    assert "Sheila Tweed" not in {e.name for e in answer.entities}  # participants are header data, not the text
    assert answer.relations == []

    usage = completion.usage
    assert usage.prompt_tokens == tokens(SYSTEM + USER) == server.prompt_tokens
    assert usage.completion_tokens == tokens(choice.message.content) == server.completion_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0 and usage.completion_tokens_details.reasoning_tokens == 0
    assert server.requests == server.requests_for(MODEL) == 1
    assert server.bodies[0]["response_format"] == STRICT and server.bodies[0]["temperature"] == 0


def test_a_message_with_nothing_to_find_gets_two_empty_lists(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Subject: lunch?\n\nBody:\nsee you at noon"}],
        response_format=STRICT,
    )
    assert json.loads(completion.choices[0].message.content) == {"entities": [], "relations": []}
    assert deterministic_answer("") == {"entities": [], "relations": []}


def test_valid_returns_the_given_answer_and_reports_scripted_usage(
    server: OpenAICompatibleServer, client: openai.OpenAI
) -> None:
    server.script([Behaviour("valid", answer=ANSWER, reasoning_tokens=7, cached_tokens=5)], model=MODEL)
    completion = ask(client)
    assert json.loads(completion.choices[0].message.content) == ANSWER
    usage = completion.usage
    assert usage.completion_tokens == tokens(completion.choices[0].message.content) + 7 == server.completion_tokens
    assert usage.completion_tokens_details.reasoning_tokens == 7 and usage.prompt_tokens_details.cached_tokens == 5
    # A pydantic answer is accepted too.
    server.script([Behaviour("valid", answer=ExtractionAnswer.model_validate(ANSWER))])
    assert json.loads(ask(client).choices[0].message.content) == ANSWER


# -- every content behaviour, as the client surfaces it --------------------------------------------------


def _not_json(content: str) -> bool:
    try:
        json.loads(content)
    except json.JSONDecodeError:
        return True
    return False


@pytest.mark.parametrize(
    ("kind", "finish_reason", "check"),
    [
        (
            "fenced",
            "stop",
            lambda c: c.startswith("```json\n") and c.endswith("\n```") and json.loads(c[8:-4]) == ANSWER,
        ),
        (
            "prose",
            "stop",
            lambda c: (
                c.startswith("Here is the output in JSON format:\n")
                and json.loads(c.splitlines()[1]) == ANSWER
                and _not_json(c)
            ),
        ),
        ("trailing_comma", "stop", lambda c: _not_json(c) and json_repair.loads(c) == ANSWER),
        ("empty", "stop", lambda c: c == ""),
        ("null", "stop", lambda c: c is None),
        ("whitespace", "stop", lambda c: c is not None and c.strip() == "" and c != ""),
        ("truncated", "length", lambda c: _not_json(c) and json.dumps(ANSWER).startswith(c)),
        ("content_filter", "content_filter", lambda c: c is None),
        ("not_json", "stop", lambda c: _not_json(c) and "{" not in c),
        ("invalid_schema", "stop", lambda c: "type" not in json.loads(c)["entities"][0]),
    ],
)
def test_content_behaviours(
    server: OpenAICompatibleServer, client: openai.OpenAI, kind: str, finish_reason: str, check
) -> None:
    server.script([Behaviour(kind, answer=ANSWER)], model=MODEL)
    choice = ask(client).choices[0]
    assert choice.finish_reason == finish_reason
    assert choice.message.refusal is None
    assert check(choice.message.content), repr(choice.message.content)


def test_invalid_schema_is_json_that_the_answer_model_rejects(
    server: OpenAICompatibleServer, client: openai.OpenAI
) -> None:
    server.script(["invalid_schema"])
    content = ask(client).choices[0].message.content
    assert isinstance(json.loads(content), dict)
    with pytest.raises(pydantic.ValidationError, match="type"):
        ExtractionAnswer.model_validate_json(content)


def test_refusal(server: OpenAICompatibleServer, client: openai.OpenAI) -> None:
    server.script([Behaviour("refusal")])
    choice = ask(client).choices[0]
    assert (choice.message.content, choice.message.refusal, choice.finish_reason) == (None, REFUSAL, "stop")


def test_structured_outputs_through_parse_with_the_pydantic_model(
    server: OpenAICompatibleServer, client: openai.OpenAI
) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    parsed = client.chat.completions.parse(model=MODEL, messages=messages, response_format=ExtractionAnswer)
    answer = parsed.choices[0].message.parsed
    assert isinstance(answer, ExtractionAnswer) and {e.name for e in answer.entities} >= {"Ben Jacoby", "$5 million"}
    sent = server.bodies[-1]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True  # and the server accepted it

    server.script(["refusal"])
    refused = client.chat.completions.parse(model=MODEL, messages=messages, response_format=ExtractionAnswer)
    assert refused.choices[0].message.parsed is None and refused.choices[0].message.refusal == REFUSAL
    server.script(["truncated"])
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(model=MODEL, messages=messages, response_format=ExtractionAnswer)
    server.script(["content_filter"])
    with pytest.raises(openai.ContentFilterFinishReasonError):
        client.chat.completions.parse(model=MODEL, messages=messages, response_format=ExtractionAnswer)


def test_latency_delays_any_behaviour(server: OpenAICompatibleServer, client: openai.OpenAI) -> None:
    server.script([Behaviour("latency", latency_ms=300), Behaviour("null", latency_ms=200)])
    started = time.monotonic()
    assert json.loads(ask(client).choices[0].message.content)["entities"]
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert ask(client).choices[0].message.content is None
    assert time.monotonic() - started >= 0.2


def test_an_output_allowance_cuts_the_answer_with_finish_reason_length(client: openai.OpenAI) -> None:
    choice = ask(client, max_completion_tokens=10).choices[0]
    assert choice.finish_reason == "length" and len(choice.message.content) == 40
    assert ask(client, max_completion_tokens=2_000).choices[0].finish_reason == "stop"


# -- errors, as the real service answers them -----------------------------------------------------------


def test_rate_limited_without_retries_raises_rate_limit_error(
    server: OpenAICompatibleServer, client: openai.OpenAI
) -> None:
    server.script([Behaviour("rate_limited", retry_after=2)], model=MODEL)
    with pytest.raises(openai.RateLimitError) as raised:
        ask(client)
    error = raised.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded" and error.type == "requests"
    assert error.body["message"].startswith(f"Rate limit reached for {MODEL} in organization ")
    assert "Please try again in 2s." in error.body["message"]
    headers = error.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("2", "2000")
    assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-reset-requests"] == "2s"
    assert int(headers["x-ratelimit-limit-requests"]) > 0
    assert error.request_id == headers["x-request-id"]
    assert server.rate_limited == 1 and server.requests == 1


def test_the_client_waits_out_retry_after_and_then_succeeds(server: OpenAICompatibleServer) -> None:
    # Retry-After: 1 alone (no retry-after-ms): the client must read the standard header.
    server.script(
        [Behaviour("rate_limited", retry_after=1, send_retry_after_ms=False), Behaviour("valid", answer=ANSWER)],
        model=MODEL,
    )
    retrying = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=2, timeout=10)
    started = time.monotonic()
    completion = ask(retrying)
    assert time.monotonic() - started >= 1.0
    assert json.loads(completion.choices[0].message.content) == ANSWER
    assert server.requests_for(MODEL) == 2 and server.rate_limited == 1

    # retry-after-ms, which the client prefers, allows sub-second waits.
    server.script([Behaviour("rate_limited", retry_after=0.25)], model=MODEL)
    started = time.monotonic()
    ask(retrying)
    assert 0.25 <= time.monotonic() - started < 1.0
    assert server.requests_for(MODEL) == 4


def test_server_error_raises_internal_server_error_and_is_retried(
    server: OpenAICompatibleServer, client: openai.OpenAI
) -> None:
    server.script(["server_error"])
    with pytest.raises(openai.InternalServerError) as raised:
        ask(client)
    error = raised.value
    assert error.status_code == 500 and error.type == "server_error" and error.code is None
    assert error.body["message"].startswith("The server had an error while processing your request. Sorry about that!")
    assert f"(Please include the request ID {error.request_id} in your message.)" in error.body["message"]

    server.script(["server_error", "valid"])
    assert ask(client.with_options(max_retries=1)).choices[0].finish_reason == "stop"
    assert server.requests == 3


def test_a_wrong_or_missing_key_is_rejected_without_echoing_it(server: OpenAICompatibleServer) -> None:
    wrong = "sk-proj-revoked0123456789wxyz"
    bad = openai.OpenAI(base_url=server.base_url, api_key=wrong, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        ask(bad)
    error = raised.value
    assert error.status_code == 401 and error.code == "invalid_api_key" and error.type == "invalid_request_error"
    assert error.body["message"] == (
        "Incorrect API key provided: sk-proj-*****************wxyz. "
        "You can find your API key at https://platform.openai.com/account/api-keys."
    )
    assert wrong not in str(error) and error.body["param"] is None
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()

    with pytest.raises(openai.AuthenticationError, match="You didn't provide an API key"):
        bad.models.list(extra_headers={"Authorization": openai.Omit()})
    assert server.unauthorized == 3
    assert server.requests_for(MODEL) == 1  # the rejected request still reached the server


def test_keys_can_be_accepted_and_revoked(server: OpenAICompatibleServer) -> None:
    rotated = server.client(api_key="sk-rotated-key-000000")
    with pytest.raises(openai.AuthenticationError):
        rotated.models.list()
    server.accept_key("sk-rotated-key-000000")
    assert rotated.models.list().data
    server.revoke_key("sk-rotated-key-000000")
    with pytest.raises(openai.AuthenticationError):
        rotated.models.list()


def test_strict_schemas_are_checked_as_openai_checks_them(
    server: OpenAICompatibleServer, client: openai.OpenAI
) -> None:
    loose = json.loads(json.dumps(response_json_schema()))
    del loose["$defs"]["ExtractedEntity"]["additionalProperties"]
    with pytest.raises(openai.BadRequestError) as raised:
        ask(
            client,
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": loose}},
        )
    assert raised.value.body["message"] == (
        "Invalid schema for response_format 'answer': In context=('$defs', 'ExtractedEntity'), "
        "'additionalProperties' is required to be supplied and to be false."
    )
    assert raised.value.body["param"] == "response_format"

    optional = json.loads(json.dumps(response_json_schema()))
    optional["$defs"]["ExtractedEntity"]["required"].remove("email")
    with pytest.raises(openai.BadRequestError, match=r"including every key in properties\. Missing 'email'"):
        ask(
            client,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "strict": True, "schema": optional},
            },
        )
    # Not strict: OpenAI accepts any schema (and does not promise to follow it).
    ask(client, response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": optional}})
    with pytest.raises(openai.BadRequestError, match="string does not match pattern"):
        ask(
            client,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "an answer", "strict": True, "schema": loose},
            },
        )


def test_json_mode_needs_the_word_json_in_the_messages(client: openai.OpenAI) -> None:
    ask(client, response_format={"type": "json_object"})  # SYSTEM says "JSON"
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": USER}], response_format={"type": "json_object"}
        )
    assert raised.value.body["message"] == (
        "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'."
    )


def test_unknown_models_are_404_when_the_server_says_so() -> None:
    with OpenAICompatibleServer(accepted_keys={KEY}, models=["gpt-4o-mini"], reject_unknown_models=True) as server:
        with pytest.raises(openai.NotFoundError) as raised:
            ask(server.client(), model="gpt-5-nano")
        assert raised.value.code == "model_not_found"
        assert raised.value.body["message"] == "The model `gpt-5-nano` does not exist or you do not have access to it."
        assert ask(server.client()).choices[0].finish_reason == "stop"


def test_a_body_that_is_not_json_gets_openais_400() -> None:
    with OpenAICompatibleServer(accepted_keys={KEY}) as server:
        request = urllib.request.Request(
            f"{server.base_url}/chat/completions",
            data=b"{not json",
            method="POST",
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=5)
        assert raised.value.code == 400
        error = json.loads(raised.value.read())["error"]
        assert error["message"].startswith("We could not parse the JSON body of your request.")
        assert server.bodies == [{"unparsable": "{not json"}]


def test_a_bug_in_the_server_is_answered_500_and_recorded_not_dropped() -> None:
    with OpenAICompatibleServer(accepted_keys={KEY}) as server:
        server.script([Behaviour("valid", answer={"entities": [object()], "relations": []})])
        with pytest.raises(openai.InternalServerError, match="openai_server bug"):
            ask(server.client())
        (bug,) = server.errors
        assert "not JSON serializable" in bug


def test_unknown_behaviours_fail_when_scripted_not_when_served() -> None:
    with pytest.raises(ValueError, match="unknown behaviour 'nul'"):
        Behaviour("nul")
    assert {"deterministic", "rate_limited", "server_error", "latency"} <= BEHAVIOURS


# -- scripting ------------------------------------------------------------------------------------------


def test_scripts_are_consumed_per_model_then_for_any_model_then_defaults(
    server: OpenAICompatibleServer, client: openai.OpenAI
) -> None:
    server.script(["null", "empty"], model="gpt-4o")
    server.script(["not_json"])
    server.set_default("refusal", model="gpt-4o")
    assert ask(client, model="gpt-4o").choices[0].message.content is None
    assert ask(client).choices[0].message.content == "I could not find any entities in this e-mail, sorry."
    assert ask(client, model="gpt-4o").choices[0].message.content == ""
    assert ask(client, model="gpt-4o").choices[0].message.refusal == REFUSAL
    assert json.loads(ask(client).choices[0].message.content)["entities"]  # the server default: deterministic
    server.set_default(Behaviour("whitespace"))
    assert ask(client).choices[0].message.content.strip() == ""
    assert server.scripted_left("gpt-4o") == server.scripted_left() == 0
    assert server.requests_by_model == {"gpt-4o": 3, MODEL: 3}
    assert server.requests_by_path == {"POST /v1/chat/completions": 6}


def test_counters_are_consistent_under_concurrency(server: OpenAICompatibleServer, client: openai.OpenAI) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        completions = list(pool.map(lambda n: ask(client, model=["gpt-4o", MODEL][n % 2]), range(40)))
    assert server.requests == len(server.bodies) == 40
    assert server.requests_by_model == {"gpt-4o": 20, MODEL: 20}
    assert server.prompt_tokens == sum(c.usage.prompt_tokens for c in completions)
    assert server.completion_tokens == sum(c.usage.completion_tokens for c in completions)
    server.reset_counters()
    assert (server.requests, server.prompt_tokens, server.bodies, server.requests_by_path) == (0, 0, [], {})


# -- the requests-per-minute limit (for the benchmark) ---------------------------------------------------


def test_a_requests_per_minute_limit_answers_429_with_a_correct_retry_after() -> None:
    with OpenAICompatibleServer(accepted_keys={KEY}, requests_per_minute=2, latency_ms=50) as server:
        client = server.client(api_key=KEY)
        server.script(["null"])
        first = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        assert (
            first.headers["x-ratelimit-limit-requests"] == "2"
            and first.headers["x-ratelimit-remaining-requests"] == "1"
        )
        second = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        assert second.headers["x-ratelimit-remaining-requests"] == "0"
        server.script(["empty"])
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert time.monotonic() - started < 0.05 + 0.5  # refused at once, not after the latency
        headers = raised.value.response.headers
        assert 58 <= int(headers["retry-after"]) <= 60 and 58_000 <= int(headers["retry-after-ms"]) <= 60_000
        assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-reset-requests"].endswith("s")
        assert "Limit 2, Used 2, Requested 1" in raised.value.body["message"]
        assert server.rate_limited == 1 and server.requests == 3
        assert server.scripted_left() == 1  # a refused request consumes no scripted behaviour
