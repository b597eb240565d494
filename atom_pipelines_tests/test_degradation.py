"""No silent degradation (issue 10): a dead key, an unknown model, a provider that is down, answers the
message does not support, a model gone quiet or a reasoning model under another name never turn into green
checks. All through the real ``openai`` client against our OpenAI-compatible server, the real store and
Dagster's own check evaluation; the alerts are the ones the analyst_alerts sensor would send."""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance

from atom_pipelines.alerts.cursor import AlertCursor
from atom_pipelines.alerts.scan import scan_for_alerts
from atom_pipelines.config import load_settings
from atom_pipelines.extraction import quality
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.extraction.outcomes import Outcome
from atom_pipelines.extraction.providers import MessageText
from atom_pipelines.resources import build_alert_channels
from atom_pipelines.store import schema
from atom_pipelines_tests.conftest import corpus_records, write_export
from atom_pipelines_tests.helpers import TURBINE_MESSAGE, check_metadata, check_results, materialize_days, resources
from atom_pipelines_tests.servers.openai_server import Behaviour, OpenAICompatibleServer

KEY = "sk-degrade-test-key-0123456789"
KEY_ENV = "ATOM_DEGRADE_TEST_KEY"
MAILBOX = "kevin.hyatt@enron.com"
DAY = dt.date(2001, 11, 27)  # 5 messages
DEFAULT_CHAIN = "openai:gpt-4o-mini,openai:gpt-4o,heuristic"

MESSAGE = TURBINE_MESSAGE


@pytest.fixture
def server() -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer(accepted_keys={KEY}, reject_unknown_models=True) as running:
        yield running


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return write_export(tmp_path / "export", corpus_records({MAILBOX}))


def extractor(base_url: str, chain: str = DEFAULT_CHAIN, **kwargs) -> EntityExtractor:
    settings = {"max_retries": 0, "timeout_seconds": 10, "max_concurrency": 1, **kwargs}
    return EntityExtractor(chain=chain, openai_base_url=base_url, key_env=KEY_ENV, **settings)


def table(url: str, t: sa.Table) -> list[dict]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(t))]
    finally:
        engine.dispose()


def alert_texts(instance: DagsterInstance) -> list[str]:
    """What the analyst_alerts sensor would send for the runs so far (its own scan, its own rendering)."""
    return [alert.text for alert in scan_for_alerts(instance, AlertCursor(), alert_channels()).alerts]


def alert_channels():
    return build_alert_channels(load_settings())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_no_links(instance: DagsterInstance) -> None:
    assert instance.get_materialized_partitions(AssetKey("entity_links")) == set()


# -- 1. a key or configuration error fails loudly, at once ---------------------------------------------


def test_a_revoked_key_fails_the_partition_naming_the_key_variable_and_code_and_sends_one_request(
    server: OpenAICompatibleServer, instance: DagsterInstance, sqlite_database_url: str, export: Path
) -> None:
    server.revoke_key(KEY)
    run = resources(export, sqlite_database_url, extractor=extractor(server.base_url))
    result = materialize_days(instance, run, MAILBOX, DAY, raise_on_error=False)

    assert not result.success
    checks = check_results(result)
    assert checks["llm_configuration_accepted"] is False and checks["extraction_succeeded"] is False
    (failure,) = check_metadata(result, "llm_configuration_accepted")["failures"].values()
    detail = failure["openai:gpt-4o-mini"]
    assert f"{MAILBOX}: ${KEY_ENV} rejected with invalid_api_key (HTTP 401), 5 message(s)" in detail
    # The chain stopped: not one message reached gpt-4o or the heuristic, and the run asked the provider once.
    assert server.requests == 1 and server.requests_for("gpt-4o") == 0
    outcomes = table(sqlite_database_url, schema.extraction_outcomes)
    assert {(o["provider"], o["model"], o["outcome"]) for o in outcomes} == {("openai", "gpt-4o-mini", "rejected")}
    assert table(sqlite_database_url, schema.entities) == []
    assert_no_links(instance)
    (alert,) = [text for text in alert_texts(instance) if "llm_configuration_accepted" in text]
    assert f"${KEY_ENV} rejected with invalid_api_key" in alert and KEY not in alert


def test_an_unknown_model_is_rejected_and_never_fallen_through(
    server: OpenAICompatibleServer, instance: DagsterInstance, sqlite_database_url: str, export: Path
) -> None:
    chain = extractor(server.base_url, chain="openai:gpt-4o-mnii,openai:gpt-4o,heuristic")
    result = materialize_days(
        instance, resources(export, sqlite_database_url, extractor=chain), MAILBOX, DAY, raise_on_error=False
    )

    assert check_results(result)["llm_configuration_accepted"] is False
    (failure,) = check_metadata(result, "llm_configuration_accepted")["failures"].values()
    assert "rejected with model_not_found (HTTP 404)" in failure["openai:gpt-4o-mnii"]
    assert "The model `gpt-4o-mnii` does not exist" in failure["openai:gpt-4o-mnii"]
    assert server.requests_for("gpt-4o") == 0
    assert_no_links(instance)


def test_a_missing_key_for_an_llm_first_chain_is_the_same_error(
    server: OpenAICompatibleServer,
    instance: DagsterInstance,
    sqlite_database_url: str,
    export: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(KEY_ENV)
    run = resources(export, sqlite_database_url, extractor=extractor(server.base_url))
    result = materialize_days(instance, run, MAILBOX, DAY, raise_on_error=False)

    (failure,) = check_metadata(result, "llm_configuration_accepted")["failures"].values()
    assert f"${KEY_ENV} rejected with key_not_set" in failure["openai:gpt-4o-mini"]
    assert server.requests == 0
    assert_no_links(instance)


class _NotOpenAI(BaseHTTPRequestHandler):
    """Some other web server at the base URL: a 200 HTML page for everything."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = b"<html><body>Welcome to nginx!</body></html>"
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def nginx() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NotOpenAI)
    Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_a_base_url_that_is_not_an_openai_server_is_rejected(nginx: str, server: OpenAICompatibleServer) -> None:
    (html,) = extractor(nginx).extract_all([MESSAGE])
    (wrong_path,) = extractor(server.base_url.removesuffix("/v1") + "/api").extract_all([MESSAGE])

    (attempt,) = html.attempts
    assert attempt.outcome is Outcome.REJECTED and attempt.error_code == "not_openai_compatible"
    assert "not an OpenAI-compatible server" in attempt.reason and "text/html" in attempt.reason
    (attempt,) = wrong_path.attempts
    assert (attempt.outcome, attempt.http_status) == (Outcome.REJECTED, 404)


def test_a_provider_that_is_down_degrades_every_message_and_fails_the_partition(
    instance: DagsterInstance, sqlite_database_url: str, export: Path
) -> None:
    down = extractor(f"http://127.0.0.1:{closed_port()}/v1")
    result = materialize_days(
        instance, resources(export, sqlite_database_url, extractor=down), MAILBOX, DAY, raise_on_error=False
    )

    assert check_results(result)["degraded_share_within_limit"] is False
    (failure,) = check_metadata(result, "degraded_share_within_limit")["failures"].values()
    assert failure["heuristic_fallback"] == 5 and failure["degraded_share"] == 1.0
    assert failure["reasons"] == "openai:gpt-4o-mini transport x5; openai:gpt-4o transport x5"
    assert_no_links(instance)
    (alert,) = [text for text in alert_texts(instance) if "degraded_share_within_limit" in text]
    assert "openai:gpt-4o-mini transport x5" in alert


# -- 2. degradation is a check, not a metric -----------------------------------------------------------


@pytest.mark.parametrize(("max_share", "passes"), [(0.2, True), (0.19, False)])
def test_the_degraded_share_at_the_threshold_passes_and_just_above_fails(
    server: OpenAICompatibleServer,
    instance: DagsterInstance,
    sqlite_database_url: str,
    export: Path,
    monkeypatch: pytest.MonkeyPatch,
    max_share: float,
    passes: bool,
) -> None:
    monkeypatch.setenv("ATOM_MAX_DEGRADED_SHARE", str(max_share))
    # One message of five: both models answer nothing, so the heuristic answers it (a share of 0.2).
    server.script([Behaviour("null")], model="gpt-4o-mini")
    server.script([Behaviour("server_error")], model="gpt-4o")
    run = resources(export, sqlite_database_url, extractor=extractor(server.base_url))
    result = materialize_days(instance, run, MAILBOX, DAY, raise_on_error=False)

    assert check_results(result)["degraded_share_within_limit"] is passes
    assert result.success is passes
    meta = {
        k: v.value
        for e in result.get_asset_materialization_events()
        if e.asset_key == AssetKey("email_entities")
        for k, v in e.materialization.metadata.items()
    }
    assert (meta["heuristic_fallbacks"], meta["model_fallbacks"], meta["degraded_share"]) == (1, 0, 0.2)
    if not passes:
        (failure,) = check_metadata(result, "degraded_share_within_limit")["failures"].values()
        assert failure["reasons"] == "openai:gpt-4o-mini no_content x1; openai:gpt-4o transport x1"


def test_a_second_model_answering_is_a_counted_fallback_not_degradation(
    server: OpenAICompatibleServer, instance: DagsterInstance, sqlite_database_url: str, export: Path
) -> None:
    server.set_default(Behaviour("empty"), model="gpt-4o-mini")
    run = resources(export, sqlite_database_url, extractor=extractor(server.base_url))
    result = materialize_days(instance, run, MAILBOX, DAY)

    assert check_results(result)["degraded_share_within_limit"] is True
    meta = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[-1] == "email_entities"
    )
    assert (meta["model_fallbacks"].value, meta["heuristic_fallbacks"].value) == (5, 0)


def test_a_heuristic_first_chain_is_never_degraded(
    instance: DagsterInstance, sqlite_database_url: str, export: Path
) -> None:
    result = materialize_days(instance, resources(export, sqlite_database_url), MAILBOX, DAY)
    assert check_results(result)["degraded_share_within_limit"] is True


# -- 3. all-grounding-dropped is not success ------------------------------------------------------------

INVENTED = {
    "entities": [
        {"name": name, "type": "person", "email": None, "evidence": f"{name} said so"}
        for name in ("Zaphod Beeblebrox", "Ford Prefect", "Trillian Astra")
    ],
    "relations": [],
}


def test_an_answer_whose_entities_are_all_ungrounded_fails_that_attempt_and_falls_through(
    server: OpenAICompatibleServer,
) -> None:
    server.script([Behaviour("valid", answer=INVENTED)], model="gpt-4o-mini")
    (result,) = extractor(server.base_url).extract_all([MESSAGE])

    first, second = result.attempts
    assert first.outcome is Outcome.UNGROUNDED and (first.answered_entities, first.dropped_entities) == (3, 3)
    assert first.mentions == () and "all 3 entities of the answer are ungrounded" in first.reason
    assert second.outcome is Outcome.ENTITIES and second.model == "gpt-4o"


def test_the_ungrounded_share_of_a_partition_is_metadata_and_a_warn_check(
    server: OpenAICompatibleServer, instance: DagsterInstance, sqlite_database_url: str, tmp_path: Path
) -> None:
    # Each answer: one person the message names and three it does not. Accepted (one is grounded), but a
    # model inventing three in four is a WARN.
    mixed = {**INVENTED, "entities": [*INVENTED["entities"], {**INVENTED["entities"][0], "name": "Mark Taylor"}]}
    server.set_default(Behaviour("valid", answer=mixed), model="gpt-4o-mini")
    day = dt.date(2001, 10, 1)
    run = resources(quiet_export(tmp_path, [day]), sqlite_database_url, extractor=extractor(server.base_url))
    result = materialize_days(instance, run, QUIET_MAILBOX, day)

    assert result.success and check_results(result)["ungrounded_share_sane"] is False
    (failure,) = check_metadata(result, "ungrounded_share_sane")["failures"].values()
    assert failure == "15 of 20 entities the models listed are not in the message"
    meta = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[-1] == "email_entities"
    )
    assert meta["ungrounded_share"].value == 0.75
    assert meta["outcome_entities"].value == 5 and meta["model_fallbacks"].value == 0


# -- 4. a model that goes quiet is caught --------------------------------------------------------------

QUIET_MAILBOX = "sara.shackleton@enron.com"
TEXT = (
    "Sara, following our call with Mark Taylor this morning, Tana Jones will send the revised ISDA schedule "
    "to Carol Clair before Friday. Please review the credit terms with Susan Bailey and let me know whether "
    "the collateral threshold still works for the counterparty."
)


def quiet_export(tmp_path: Path, days: list[dt.date], per_day: int = 5) -> Path:
    """Messages of enough text (quality.QUIET_MIN_WORDS), each naming people in the body."""
    assert quality.has_enough_text(TEXT)
    records = [
        {
            "id": f"quiet-{day.isoformat()}-{n}",
            "mailbox": QUIET_MAILBOX,
            "receivedDateTime": f"{day.isoformat()}T15:0{n}:00Z",
            # Each message its own prompt: an identical one would be answered from the cache.
            "subject": f"ISDA schedule {day.isoformat()} #{n}",
            "from": {"emailAddress": {"name": "Elizabeth Sager", "address": "elizabeth.sager@enron.com"}},
            "toRecipients": [{"emailAddress": {"name": "Sara Shackleton", "address": QUIET_MAILBOX}}],
            "ccRecipients": [],
            "body": {"contentType": "text", "content": TEXT},
        }
        for day in days
        for n in range(per_day)
    ]
    return write_export(tmp_path / "quiet-export", records)


def test_a_model_that_starts_answering_nothing_after_a_normal_baseline_fails_a_warn_check_and_alerts(
    server: OpenAICompatibleServer, instance: DagsterInstance, sqlite_database_url: str, tmp_path: Path
) -> None:
    days = [dt.date(2001, 10, d) for d in range(1, 6)]
    run = resources(quiet_export(tmp_path, days), sqlite_database_url, extractor=extractor(server.base_url))
    for day in days[:4]:  # the baseline: 20 messages with text, every one answered with body names
        assert check_results(materialize_days(instance, run, QUIET_MAILBOX, day))["model_not_gone_quiet"] is True
    # Then the model answers only the header people (what grounding and the headers give anyway).
    server.set_default(
        Behaviour("valid", answer={"entities": [], "relations": []}),
        model="gpt-4o-mini",
    )
    result = materialize_days(instance, run, QUIET_MAILBOX, days[4])

    assert result.success and check_results(result)["model_not_gone_quiet"] is False
    (failure,) = check_metadata(result, "model_not_gone_quiet")["failures"].values()
    assert failure["openai:gpt-4o-mini"].startswith("5 of 5 messages with text answered with no text entity (100%)")
    assert "0 of 20 (0%)" in failure["openai:gpt-4o-mini"]
    stored = table(sqlite_database_url, schema.model_quiet_counts)
    assert sorted((r["day"], r["with_text"], r["quiet"]) for r in stored) == [
        *[(day, 5, 0) for day in days[:4]],
        (days[4], 5, 5),
    ]
    (alert,) = [text for text in alert_texts(instance) if "model_not_gone_quiet" in text]
    assert alert.startswith("[WARN] check model_not_gone_quiet on email_entities failed in 1 partition(s)")
    # Re-running the quiet day is judged against the same past, never against its own first try.
    again = materialize_days(instance, run, QUIET_MAILBOX, days[4])
    assert check_results(again)["model_not_gone_quiet"] is False
    assert len(table(sqlite_database_url, schema.model_quiet_counts)) == 5


def test_the_quiet_rule_needs_a_jump_over_the_models_own_baseline() -> None:
    assert quality.gone_quiet(5, 5, 20, 0)
    assert not quality.gone_quiet(5, 3, 100, 40)  # 60% against a usual 40%: that mailbox is often quiet
    assert quality.gone_quiet(10, 9, 100, 40)  # 90% against 40%
    assert not quality.gone_quiet(4, 4, 100, 0)  # too few messages to judge
    assert not quality.gone_quiet(5, 5, 19, 0)  # no baseline yet


# -- 5. reasoning models recognised at run time ---------------------------------------------------------


def test_a_model_answering_with_reasoning_tokens_and_no_content_is_skipped_for_the_rest_of_the_run(
    server: OpenAICompatibleServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = OpenAICompatibleServer(accepted_keys={KEY})  # accepts any model name, as an Azure deployment
    with server, caplog.at_level(logging.WARNING):
        server.set_default(Behaviour("null", reasoning_tokens=1_500), model="prod-extractor")
        chain = extractor(server.base_url, chain="openai:prod-extractor,openai:gpt-4o-mini")
        session = chain.session()
        results = chain.extract_all(
            [MESSAGE, MessageText(**{**MESSAGE.__dict__, "message_id": "m-2"})], session=session
        )

        assert server.requests_for("prod-extractor") == 1
    first, second = results
    assert first.attempts[0].outcome is Outcome.NO_CONTENT and first.attempts[0].usage.reasoning == 1_500
    assert second.attempts[0].outcome is Outcome.SKIPPED and "reasoning model" in second.attempts[0].reason
    assert all(r.accepted.model == "gpt-4o-mini" for r in results)
    assert session.reasoning_learned == {"prod-extractor"}
    assert caplog.text.count("openai:prod-extractor answered with 1500 reasoning tokens and no content") == 1


# -- 7. the log lines ------------------------------------------------------------------------------------

ATTEMPT_LINE = re.compile(
    r"^extraction attempt (?P<n>\d+)/(?P<of>\d+) mailbox=\S+ message=\S+ provider=\S+ model=\S+ "
    r"outcome=(?P<outcome>\w+) latency_ms=\d+ tokens=\d+\+\d+( reasoning=\d+)? cache=(hit|miss) "
    r'preview="(?P<preview>.*?)"(?P<tail> reason=".*"; (falling through|chain stops))?$'
)


def test_every_attempt_logs_one_greppable_line_and_a_give_up_line_counts_the_attempts(
    server: OpenAICompatibleServer, caplog: pytest.LogCaptureFixture
) -> None:
    long_answer = {
        "entities": [
            {"name": "Nobody Here", "type": "person", "email": "nobody@example.com", "evidence": "see " * 150}
        ],
        "relations": [],
    }
    server.script([Behaviour("prose", answer=long_answer)], model="gpt-4o-mini")
    server.script([Behaviour("truncated")], model="gpt-4o")
    with caplog.at_level(logging.INFO, logger="atom_pipelines.extraction.session"):
        (result,) = extractor(server.base_url, chain="openai:gpt-4o-mini,openai:gpt-4o").extract_all([MESSAGE])

    assert not result.succeeded
    lines = [r.getMessage() for r in caplog.records]
    attempts = [ATTEMPT_LINE.match(line) for line in lines if line.startswith("extraction attempt")]
    assert all(attempts) and [(m["n"], m["of"], m["outcome"]) for m in attempts] == [
        ("1", "2", "ungrounded"),
        ("2", "2", "truncated"),
    ]
    preview = attempts[0]["preview"]
    assert len(preview) == 240 + len("...") and "<email>" in preview and "nobody@example.com" not in preview
    assert attempts[0]["tail"].endswith("; falling through") and attempts[1]["tail"].endswith("; chain stops")
    (give_up,) = [line for line in lines if line.startswith("extraction gave up")]
    assert give_up.startswith("extraction gave up mailbox=kay.mann@enron.com message=m-1 after 2 attempt(s): ")
    assert "gpt-4o-mini: ungrounded" in give_up and "gpt-4o: truncated" in give_up
    assert KEY not in caplog.text


def test_a_successful_attempt_logs_at_debug_and_a_failed_one_at_warning(
    server: OpenAICompatibleServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Dagster writes an event-log row per managed log record at dagster.yaml's python_log_level (INFO): a
    # success per message at INFO was one database write per message (bench/corpus_daemon.py).
    server.script([Behaviour("null")], model="gpt-4o-mini")
    with caplog.at_level(logging.DEBUG, logger="atom_pipelines.extraction.session"):
        (result,) = extractor(server.base_url, chain="openai:gpt-4o-mini,openai:gpt-4o").extract_all([MESSAGE])

    assert result.succeeded and result.accepted.model == "gpt-4o"
    attempts = [(r.levelno, ATTEMPT_LINE.match(r.getMessage())) for r in caplog.records]
    attempts = [(level, m["outcome"]) for level, m in attempts if m]
    assert attempts == [(logging.WARNING, "no_content"), (logging.DEBUG, "entities")]
