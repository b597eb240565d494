"""LLM extraction through the real ``openai`` client against our OpenAI-compatible server: every fault ends
in a correct extraction by the next provider or a loud partition failure, never a silent empty (production
bugs #8 and #9); reasoning models get no request; only good answers are cached; budgets stop spending;
keys are reported truthfully per mailbox (bug #1) and never leak."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance, materialize

from atom_pipelines.assets import llm_key_status
from atom_pipelines.extraction.budget import BudgetExceeded
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.extraction.key_status import key_status
from atom_pipelines.extraction.outcomes import Outcome
from atom_pipelines.extraction.prompt import prompt_for
from atom_pipelines.extraction.providers import MessageText
from atom_pipelines.extraction.tokens import prompt_tokens
from atom_pipelines.partitions import mailbox_day_key
from atom_pipelines.store import schema
from atom_pipelines_tests.conftest import corpus_records, write_export
from atom_pipelines_tests.helpers import TURBINE_MESSAGE, check_metadata, check_results, materialize_days, resources
from atom_pipelines_tests.servers.openai_server import Behaviour, OpenAICompatibleServer

KEY = "sk-test-key"
KEY_ENV = "ATOM_TEST_OPENAI_KEY"
MAILBOX = "kevin.hyatt@enron.com"
DAY = dt.date(2001, 11, 27)  # 5 messages

MESSAGE = TURBINE_MESSAGE


@pytest.fixture
def server() -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer(accepted_keys={KEY}) as running:
        yield running


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def extractor(
    server: OpenAICompatibleServer, chain: str = "openai:gpt-4o-mini,openai:gpt-4o", **kwargs
) -> EntityExtractor:
    settings = {"max_retries": 0, "timeout_seconds": 10, **kwargs}
    return EntityExtractor(chain=chain, openai_base_url=server.base_url, key_env=KEY_ENV, **settings)


PRIMARY_FAILURES = [
    ("empty", Outcome.NO_CONTENT),
    ("null", Outcome.NO_CONTENT),
    ("whitespace", Outcome.NO_CONTENT),
    ("truncated", Outcome.TRUNCATED),
    ("refusal", Outcome.REFUSED),
    ("content_filter", Outcome.REFUSED),
    ("not_json", Outcome.UNPARSABLE),
    ("invalid_schema", Outcome.INVALID),
    ("server_error", Outcome.TRANSPORT),
    ("rate_limited", Outcome.TRANSPORT),
]


@pytest.mark.parametrize(("kind", "outcome"), PRIMARY_FAILURES)
def test_every_failure_of_the_primary_falls_through_to_the_fallback(
    server: OpenAICompatibleServer, kind: str, outcome: Outcome
) -> None:
    server.script([Behaviour(kind)], model="gpt-4o-mini")

    (result,) = extractor(server).extract_all([MESSAGE])

    first, second = result.attempts
    assert (first.model, first.outcome) == ("gpt-4o-mini", outcome), first.reason
    assert first.reason and not first.mentions
    assert (second.model, second.outcome) == ("gpt-4o", Outcome.ENTITIES)
    keys = {m.entity_key for m in result.accepted.mentions}
    assert {"person:sheila.tweed@enron.com", "person-name:ben jacoby", "money:$5 million"} <= keys
    assert server.requests_for("gpt-4o-mini") == 1 and server.requests_for("gpt-4o") == 1


@pytest.mark.parametrize("kind", ["fenced", "prose", "trailing_comma"])
def test_damaged_but_complete_json_is_repaired_not_retried(server: OpenAICompatibleServer, kind: str) -> None:
    server.script([Behaviour(kind)], model="gpt-4o-mini")
    (result,) = extractor(server).extract_all([MESSAGE])
    (attempt,) = result.attempts
    assert attempt.outcome is Outcome.ENTITIES and "after repair" in attempt.reason
    assert server.requests_for("gpt-4o") == 0


def test_when_every_provider_fails_the_message_fails_with_each_reason(server: OpenAICompatibleServer) -> None:
    server.script([Behaviour("null")], model="gpt-4o-mini")
    server.script([Behaviour("truncated")], model="gpt-4o")
    (result,) = extractor(server).extract_all([MESSAGE])
    assert not result.succeeded
    assert "gpt-4o-mini: no_content" in result.failure_reasons and "gpt-4o: truncated" in result.failure_reasons


def test_reasoning_models_are_never_asked(server: OpenAICompatibleServer, caplog: pytest.LogCaptureFixture) -> None:
    chain = extractor(server, chain="openai:o3-mini,openai:gpt-4o-mini,heuristic", reasoning_models="deepthink-1")
    with caplog.at_level(logging.WARNING):
        (result,) = chain.extract_all([MESSAGE])
    assert [a.model for a in result.attempts] == ["gpt-4o-mini"]
    assert server.requests_for("o3-mini") == 0
    assert "o3-mini is a reasoning model" in caplog.text
    assert (
        chain.is_reasoning_model("deepthink-1")
        and chain.is_reasoning_model("o1")
        and not chain.is_reasoning_model("gpt-4o")
    )
    (status,) = key_status(chain, [MESSAGE.mailbox])
    assert status.skipped_reasoning_models == ("o3-mini",) and "o3-mini" in status.reason


def test_structured_outputs_where_supported_json_mode_elsewhere(server: OpenAICompatibleServer) -> None:
    extractor(server, chain="openai:gpt-4o-mini,openai:llama3.1").extract_all([MESSAGE])
    server.script([Behaviour("null")], model="gpt-4o-mini")
    extractor(server, chain="openai:gpt-4o-mini,openai:llama3.1").extract_all([MESSAGE])
    formats = {b["model"]: b["response_format"] for b in server.bodies}
    assert formats["gpt-4o-mini"]["type"] == "json_schema" and formats["gpt-4o-mini"]["json_schema"]["strict"] is True
    assert formats["llama3.1"] == {"type": "json_object"}
    user = server.bodies[0]["messages"][1]["content"]
    # Participants by name (v2 prompt): the header entities carry the addresses.
    assert "Ben Jacoby agreed" in user and "- from: Sheila Tweed\n" in user and "@" not in user


def test_rate_limits_are_waited_out_as_retry_after_says(server: OpenAICompatibleServer) -> None:
    server.script([Behaviour("rate_limited", retry_after=1)], model="gpt-4o-mini")
    started = time.monotonic()
    (result,) = extractor(server, max_retries=2).extract_all([MESSAGE])
    assert result.attempts[0].outcome is Outcome.ENTITIES
    assert time.monotonic() - started >= 1.0
    assert server.requests_for("gpt-4o-mini") == 2 and server.rate_limited == 1


def _numbered(count: int, day: dt.date = DAY, mailbox: str = MESSAGE.mailbox) -> list[MessageText]:
    """``count`` messages like MESSAGE (bodies differ) in one partition: ``mailbox`` x ``day``."""
    fields = {**MESSAGE.__dict__, "mailbox": mailbox, "day": day}
    return [
        MessageText(**{**fields, "message_id": f"m-{day}-{n}", "body": f"{MESSAGE.body} #{n}"}) for n in range(count)
    ]


def _budget_for_two_calls(server: OpenAICompatibleServer, message: MessageText, max_output_tokens: int) -> int:
    """A budget that two calls for ``message`` fit and a third does not: each call reserves its estimate
    (tiktoken's count of the request plus the whole output allowance) and settles at what the server says it
    used, so after n calls n * used are spent, and call n + 1 needs n * used + estimate."""
    estimate = prompt_tokens(prompt_for(message)) + max_output_tokens
    before = server.prompt_tokens + server.completion_tokens
    extractor(server, chain="openai:gpt-4o-mini").extract_all([message])
    used = server.prompt_tokens + server.completion_tokens - before
    assert 0 < used < estimate, (used, estimate)  # the reservation bounds what a call spends
    server.reset_counters()
    return estimate + used + used // 2


def test_a_token_budget_stops_extraction_loudly(server: OpenAICompatibleServer) -> None:
    messages = _numbered(5)
    budget = _budget_for_two_calls(server, messages[0], max_output_tokens=1_000)
    tight = extractor(server, max_concurrency=1, budget_tokens_per_run=budget, max_output_tokens=1_000)
    with pytest.raises(BudgetExceeded, match=rf"token budget per run \({budget:,}\) would be exceeded: .* on 2 calls"):
        tight.extract_all(messages)
    assert server.requests == 2  # stopped before the third call, not after it


def test_a_per_partition_budget_stops_the_partition_that_would_exceed_it_and_names_it(
    server: OpenAICompatibleServer,
) -> None:
    other_day = DAY + dt.timedelta(days=1)
    # The other partition's one message first, then three of DAY's (one at a time: a fixed order of calls).
    messages = [*_numbered(1, other_day), *_numbered(3)]
    budget = _budget_for_two_calls(server, messages[1], max_output_tokens=1_000)
    tight = extractor(server, max_concurrency=1, budget_tokens_per_partition=budget, max_output_tokens=1_000)
    with pytest.raises(BudgetExceeded) as stopped:
        tight.extract_all(messages)
    assert str(stopped.value).startswith(
        f"token budget per partition ({budget:,}) would be exceeded in {mailbox_day_key(MESSAGE.mailbox, DAY)}: "
    )
    # The other day's call and two of DAY's were made; DAY's third was not.
    assert server.requests == 3

    server.reset_counters()
    generous = extractor(server, max_concurrency=1, budget_tokens_per_partition=4 * budget, max_output_tokens=1_000)
    results = generous.extract_all(messages)
    assert [r.succeeded for r in results] == [True] * 4 and server.requests == 4
    # Per partition, not per run: DAY's budget is not spent by the other day's call, nor by another mailbox's.
    per_day = extractor(server, max_concurrency=1, budget_tokens_per_partition=budget, max_output_tokens=1_000)
    assert len(per_day.extract_all([*_numbered(2), *_numbered(2, other_day), *_numbered(2, mailbox=MAILBOX)])) == 6


# -- through Dagster and the store ---------------------------------------------------------------------


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return write_export(tmp_path / "export", corpus_records({MAILBOX}))


def table(url: str, t: sa.Table) -> list[dict]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(t))]
    finally:
        engine.dispose()


def test_rematerializing_and_a_copied_mailbox_make_zero_llm_calls(
    server: OpenAICompatibleServer, instance: DagsterInstance, database_url: str, tmp_path: Path
) -> None:
    records = [r for r in corpus_records({MAILBOX}) if r["receivedDateTime"].startswith(DAY.isoformat())]
    copies = [{**r, "id": f"copy-{r['id']}", "mailbox": "kay.mann@enron.com"} for r in records]
    export = write_export(tmp_path / "export", records + copies)
    run_resources = resources(export, database_url, extractor=extractor(server, chain="openai:gpt-4o-mini,heuristic"))

    materialize_days(instance, run_resources, MAILBOX, DAY)
    assert server.requests == len(records) == 5
    materialize_days(instance, run_resources, MAILBOX, DAY)
    materialize_days(instance, run_resources, "kay.mann@enron.com", DAY)
    assert server.requests == 5  # the re-run and the copy were answered by the cache

    outcomes = table(database_url, schema.extraction_outcomes)
    assert sum(o["cache_hit"] for o in outcomes) == 10 and len(outcomes) == 10
    assert {o["provider"] for o in outcomes} == {"openai"}


def test_only_good_answers_are_admitted_to_the_cache(
    server: OpenAICompatibleServer, instance: DagsterInstance, sqlite_database_url: str, export: Path
) -> None:
    server.script([Behaviour("null")] * 5, model="gpt-4o-mini")
    run_resources = resources(export, sqlite_database_url, extractor=extractor(server))
    materialize_days(instance, run_resources, MAILBOX, DAY)
    cached = table(sqlite_database_url, schema.extraction_cache)
    assert {c["model"] for c in cached} == {"gpt-4o"} and len(cached) == 5

    server.reset_counters()
    materialize_days(instance, run_resources, MAILBOX, DAY)
    # The primary's empty answers were not cached: it is asked again (and now answers).
    assert server.requests_for("gpt-4o-mini") == 5 and server.requests_for("gpt-4o") == 0


def test_fallback_to_the_heuristic_is_visible_in_rows_and_metadata(
    server: OpenAICompatibleServer, instance: DagsterInstance, sqlite_database_url: str, export: Path
) -> None:
    server.set_default(Behaviour("null"), model="gpt-4o-mini")
    run_resources = resources(
        export, sqlite_database_url, extractor=extractor(server, chain="openai:gpt-4o-mini,heuristic")
    )
    result = materialize_days(instance, run_resources, MAILBOX, DAY, raise_on_error=False)

    # Every message fell to the heuristic: stored and visible, and the degraded-share check stops the links.
    assert check_results(result)["degraded_share_within_limit"] is False
    assert instance.get_materialized_partitions(AssetKey("entity_links")) == set()
    assert {e["provider"] for e in table(sqlite_database_url, schema.entities)} == {"heuristic"}
    meta = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == AssetKey("email_entities")
    )
    assert meta["share_by_provider"].value == {"heuristic": 1.0}
    outcomes = table(sqlite_database_url, schema.extraction_outcomes)
    assert {(o["provider"], o["outcome"]) for o in outcomes} == {("openai", "no_content"), ("heuristic", "entities")}
    assert all(o["raw_preview"] == "<None>" for o in outcomes if o["provider"] == "openai")


def test_when_every_provider_fails_the_partition_fails_naming_the_messages(
    server: OpenAICompatibleServer, instance: DagsterInstance, sqlite_database_url: str, export: Path
) -> None:
    server.set_default(Behaviour("empty"))
    run_resources = resources(export, sqlite_database_url, extractor=extractor(server))
    result = materialize_days(instance, run_resources, MAILBOX, DAY, raise_on_error=False)

    assert not result.success and check_results(result)["extraction_succeeded"] is False
    failures = check_metadata(result, "extraction_succeeded")["failures"]
    (partition,) = failures.values()
    assert len(partition["failed_messages"]) == 5
    assert all(
        "gpt-4o-mini: no_content" in r and "gpt-4o: no_content" in r for r in partition["failed_messages"].values()
    )
    assert instance.get_materialized_partitions(AssetKey("entity_links")) == set()


def test_tokens_and_cost_are_recorded_per_call_and_summed(
    server: OpenAICompatibleServer, instance: DagsterInstance, sqlite_database_url: str, export: Path
) -> None:
    run_resources = resources(export, sqlite_database_url, extractor=extractor(server))
    result = materialize_days(instance, run_resources, MAILBOX, DAY)
    outcomes = table(sqlite_database_url, schema.extraction_outcomes)
    assert sum(o["prompt_tokens"] for o in outcomes) == server.prompt_tokens > 0
    meta = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == AssetKey("email_entities")
    )
    assert meta["prompt_tokens"].value == server.prompt_tokens
    assert meta["llm_calls"].value == 5
    # Rounded to micro-dollars in metadata.
    assert meta["estimated_cost_usd"].value == pytest.approx(sum(o["cost_usd"] for o in outcomes), abs=1e-6)
    assert meta["estimated_cost_usd"].value > 0


# -- bring your own key ---------------------------------------------------------------------------------


def test_key_status_missing_rejected_and_accepted(
    server: OpenAICompatibleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOD_KEY", KEY)
    monkeypatch.setenv("BAD_KEY", "sk-revoked-0123456789")
    monkeypatch.delenv("MISSING_KEY", raising=False)
    chain = extractor(server, tenant_keys="enron.com=GOOD_KEY,kay.mann@enron.com=BAD_KEY,example.org=MISSING_KEY")

    statuses = {
        s.mailbox: s for s in key_status(chain, ["sally.beck@enron.com", "kay.mann@enron.com", "a@example.org"])
    }

    assert statuses["sally.beck@enron.com"].accepted is True and statuses["sally.beck@enron.com"].key_env == "GOOD_KEY"
    rejected = statuses["kay.mann@enron.com"]
    # OpenAI's code and message read from its error body (the same reading as an extraction call's reason).
    assert rejected.accepted is False and rejected.reason.startswith(
        "rejected by the provider: HTTP 401 invalid_api_key: Incorrect API key provided"
    )
    assert (
        statuses["a@example.org"].configured is False and "$MISSING_KEY is not set" in statuses["a@example.org"].reason
    )
    assert all("sk-revoked-0123456789" not in s.reason for s in statuses.values())


def test_one_tenants_key_never_extracts_another_tenants_mail(
    server: OpenAICompatibleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv("ENRON_KEY", KEY)
    chain = extractor(server, tenant_keys="enron.com=ENRON_KEY")
    other = MessageText(**{**MESSAGE.__dict__, "mailbox": "someone@example.org"})
    enron, foreign = chain.extract_all([MESSAGE, other])
    assert enron.succeeded
    # A chain meant to start with a model: the missing key is a configuration error, never a quiet skip.
    assert not foreign.succeeded and foreign.attempts[0].outcome is Outcome.REJECTED
    assert len(foreign.attempts) == 1 and foreign.attempts[0].error_code == "key_not_set"
    assert f"${KEY_ENV} is not set" in foreign.attempts[0].reason
    assert server.requests == 1  # the enron message only; the other mailbox's mail never reached the provider


def test_the_key_status_asset_turns_its_check_red_for_a_rejected_key(
    server: OpenAICompatibleServer,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-revoked-0123456789")
    instance.add_dynamic_partitions("mailbox", [MAILBOX])
    with caplog.at_level(logging.DEBUG):
        result = materialize(
            [llm_key_status], instance=instance, resources={"extractor": extractor(server)}, raise_on_error=False
        )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed is False and MAILBOX in evaluation.metadata["unusable"].value
    logs = caplog.text + str(result.get_asset_materialization_events()[0].materialization.metadata)
    assert "sk-revoked-0123456789" not in logs
