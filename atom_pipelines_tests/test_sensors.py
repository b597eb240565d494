"""Mailboxes become partitions without a code change: the registration sensor, at its edges (zero new
mailboxes, some, all already known) — production bug #4 was housekeeping code that broke on zero items.
Their history syncs are catch-up runs (no day tags) of at most ATOM_MAILBOXES_PER_RUN mailboxes that are
consecutive in registration order, one partition or one partition range each, which a mailbox held back
for its key breaks.

And the key first (issue 10, item 8): a new mailbox whose LLM key is not usable (not set, rejected by the
provider, a chain model missing) is registered but its history is not launched; an ``llm_key_status`` run
is requested instead, whose failing check ``analyst_alerts`` delivers before any message reaches the
provider; the history is launched, once, on the first tick that finds the key usable. The provider is the
OpenAI-compatible test server, asked through the real ``openai`` client.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    RunRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
    instance_for_test,
)

from atom_pipelines.alerts import AlertChannels, analyst_alerts
from atom_pipelines.assets import llm_key_status
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.jobs import llm_key_status_job
from atom_pipelines.mail.source import ExportMailSource
from atom_pipelines.sensors import KEY_STATUS_GATE_TAG, register_mailboxes
from atom_pipelines.tags import FIRST_DAY_TAG, LAST_DAY_TAG, MAILBOX_TAG, PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG
from atom_pipelines_tests.conftest import corpus_records, write_export
from atom_pipelines_tests.servers.openai_server import OpenAICompatibleServer
from atom_pipelines_tests.servers.receivers import WebhookReceiver

HYATT, HARRIS = "kevin.hyatt@enron.com", "steven.harris@enron.com"
FARMER = "daren.farmer@enron.com"
MAILBOXES = {HYATT, HARRIS}


def _evaluate(
    instance: DagsterInstance, export: Path, extractor: EntityExtractor | None = None, cursor: str | None = None
) -> SensorResult | SkipReason:
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "mail_source": ExportMailSource(export_dir=str(export)),
            # The heuristic alone by default: usable, nothing to ask.
            "extractor": extractor or EntityExtractor(),
        },
    )
    return register_mailboxes(context)


def test_new_mailboxes_are_registered_once(instance: DagsterInstance, tmp_path: Path) -> None:
    export = write_export(tmp_path / "export", corpus_records(MAILBOXES))

    first = _evaluate(instance, export)
    assert isinstance(first, SensorResult)
    (request,) = first.dynamic_partitions_requests
    assert request.partitions_def_name == "mailbox"
    assert sorted(request.partition_keys) == sorted(MAILBOXES)

    instance.add_dynamic_partitions("mailbox", list(request.partition_keys))
    second = _evaluate(instance, export)
    assert isinstance(second, SkipReason)
    assert "all 2 mailboxes" in second.skip_message


def test_only_the_mailboxes_not_yet_known_are_added(instance: DagsterInstance, tmp_path: Path) -> None:
    export = write_export(tmp_path / "export", corpus_records(MAILBOXES))
    instance.add_dynamic_partitions("mailbox", ["kevin.hyatt@enron.com"])

    result = _evaluate(instance, export)

    assert isinstance(result, SensorResult)
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["steven.harris@enron.com"]


def test_mailbox_case_does_not_create_a_second_partition(instance: DagsterInstance, tmp_path: Path) -> None:
    records = corpus_records({"kevin.hyatt@enron.com"})[:2]
    records[1] = {**records[1], "mailbox": "Kevin.Hyatt@Enron.com"}
    export = write_export(tmp_path / "export", records)

    result = _evaluate(instance, export)

    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["kevin.hyatt@enron.com"]


def _covered(request: RunRequest) -> tuple[str, str]:
    """(first, last) mailbox of a request's run: its one partition twice, or its partition range."""
    if PARTITION_TAG in request.tags:
        assert RANGE_START_TAG not in request.tags and request.tags[MAILBOX_TAG] == request.tags[PARTITION_TAG]
        return request.tags[PARTITION_TAG], request.tags[PARTITION_TAG]
    assert MAILBOX_TAG not in request.tags  # dagster.yaml limits runs per mailbox: a range names none
    return request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]


def _assert_history(request: RunRequest) -> None:
    """A history sync: a catch-up run of mail_to_links (no day tags: ATOM_START_DATE to the latest complete day)."""
    assert request.job_name == "mail_to_links"
    assert request.partition_key is None
    assert FIRST_DAY_TAG not in request.tags and LAST_DAY_TAG not in request.tags


def test_a_new_mailbox_gets_its_history_in_one_catch_up_run(instance: DagsterInstance, tmp_path: Path) -> None:
    export = write_export(tmp_path / "export", corpus_records({"kevin.hyatt@enron.com"}))

    result = _evaluate(instance, export)

    assert isinstance(result, SensorResult)
    (request,) = result.run_requests
    _assert_history(request)
    assert _covered(request) == ("kevin.hyatt@enron.com", "kevin.hyatt@enron.com")
    assert request.run_key == "history:kevin.hyatt@enron.com..kevin.hyatt@enron.com:1"
    assert request.tags["atom/history_sync"] == "kevin.hyatt@enron.com"


def test_new_mailboxes_are_chunked_by_the_configured_run_size(
    instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ATOM_MAILBOXES_PER_RUN=2, three new mailboxes (registered in sorted order): a range of the first two,
    the third alone."""
    monkeypatch.setenv("ATOM_MAILBOXES_PER_RUN", "2")
    export = write_export(tmp_path / "export", corpus_records({*MAILBOXES, FARMER}))

    result = _evaluate(instance, export)

    assert isinstance(result, SensorResult)
    assert list(result.dynamic_partitions_requests[0].partition_keys) == [FARMER, HYATT, HARRIS]
    ranged, single = result.run_requests
    for request in (ranged, single):
        _assert_history(request)
    assert (_covered(ranged), _covered(single)) == ((FARMER, HYATT), (HARRIS, HARRIS))
    assert (ranged.run_key, single.run_key) == (f"history:{FARMER}..{HYATT}:2", f"history:{HARRIS}..{HARRIS}:1")
    assert (ranged.tags["atom/history_sync"], single.tags["atom/history_sync"]) == (f"{FARMER},{HYATT}", HARRIS)


def test_the_chunks_follow_registration_order_not_the_alphabet(
    instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two mailboxes registered earlier (Harris before Farmer) whose history waited for their key, and a new
    one: a partition range of a dynamic dimension runs in registration order, so the runs do too."""
    monkeypatch.setenv("ATOM_MAILBOXES_PER_RUN", "2")
    instance.add_dynamic_partitions("mailbox", [HARRIS, FARMER])
    export = write_export(tmp_path / "export", corpus_records({*MAILBOXES, FARMER}))
    cursor = json.dumps({"history_waiting_for_key": [FARMER, HARRIS]})

    result = _evaluate(instance, export, cursor=cursor)

    assert isinstance(result, SensorResult)
    assert list(result.dynamic_partitions_requests[0].partition_keys) == [HYATT]
    assert [_covered(r) for r in result.run_requests] == [(HARRIS, FARMER), (HYATT, HYATT)]
    assert json.loads(result.cursor or "") == {"history_waiting_for_key": []}


def test_the_history_waits_while_no_complete_day_exists(
    instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ATOM_START_DATE today: no day is complete yet, so nothing is launched; the mailboxes are registered
    (the daily schedule's catch-up syncs them once a day is complete)."""
    monkeypatch.setenv("ATOM_START_DATE", dt.datetime.now(dt.timezone.utc).date().isoformat())
    export = write_export(tmp_path / "export", corpus_records(MAILBOXES))

    result = _evaluate(instance, export)

    assert isinstance(result, SensorResult)
    assert result.run_requests == []
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == sorted(MAILBOXES)


def test_history_sync_can_be_turned_off(
    instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATOM_HISTORY_SYNC_ON_REGISTER", "false")
    export = write_export(tmp_path / "export", corpus_records(MAILBOXES))

    result = _evaluate(instance, export)

    assert result.run_requests == []
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == sorted(MAILBOXES)


# -- the key first ----------------------------------------------------------------------------------------

KEY = "sk-test-register"
KEY_ENV = "ATOM_TEST_REGISTER_KEY"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAICompatibleServer]:
    monkeypatch.setenv(KEY_ENV, KEY)
    with OpenAICompatibleServer(accepted_keys={KEY}) as running:
        yield running


def _llm_extractor(
    server: OpenAICompatibleServer, chain: str = "openai:gpt-4o-mini,heuristic", **kwargs
) -> EntityExtractor:
    return EntityExtractor(
        chain=chain, openai_base_url=server.base_url, key_env=KEY_ENV, max_retries=0, timeout_seconds=10, **kwargs
    )


def _split(result: SensorResult) -> tuple[list[RunRequest], list[RunRequest]]:
    """(history runs, llm_key_status runs) of a tick."""
    history = [r for r in result.run_requests if r.job_name == "mail_to_links"]
    gates = [r for r in result.run_requests if r.job_name == llm_key_status_job.name]
    assert len(history) + len(gates) == len(result.run_requests)
    return history, gates


def _register(instance: DagsterInstance, result: SensorResult) -> None:
    """What the daemon does with a tick's dynamic partition requests."""
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_a_rejected_key_registers_the_mailbox_but_holds_its_history_until_the_key_is_usable(
    instance: DagsterInstance, tmp_path: Path, server: OpenAICompatibleServer
) -> None:
    export = write_export(tmp_path / "export", corpus_records({HYATT}))
    extractor = _llm_extractor(server)
    server.revoke_key(KEY)

    first = _evaluate(instance, export, extractor)

    assert isinstance(first, SensorResult)
    assert list(first.dynamic_partitions_requests[0].partition_keys) == [HYATT]  # registered all the same
    history, (gate,) = _split(first)
    assert history == []
    assert gate.tags[KEY_STATUS_GATE_TAG] == HYATT and gate.run_key.startswith("key_status_gate:")
    assert json.loads(first.cursor or "") == {"history_waiting_for_key": [HYATT]}
    _register(instance, first)

    # Still rejected a tick later: still held back, and the same llm_key_status run key (launched once).
    second = _evaluate(instance, export, extractor, cursor=first.cursor)
    assert isinstance(second, SensorResult) and second.dynamic_partitions_requests == []
    history, (again,) = _split(second)
    assert history == [] and again.run_key == gate.run_key
    assert second.cursor == first.cursor

    server.accept_key(KEY)
    third = _evaluate(instance, export, extractor, cursor=second.cursor)
    history, gates = _split(third)
    assert gates == [] and history and {r.tags["atom/history_sync"] for r in history} == {HYATT}
    assert json.loads(third.cursor or "") == {"history_waiting_for_key": []}

    # Launched: nothing waits, nothing is new.
    fourth = _evaluate(instance, export, extractor, cursor=third.cursor)
    assert isinstance(fourth, SkipReason)
    assert server.requests_by_path.get("POST /v1/chat/completions", 0) == 0  # no mail was sent meanwhile


def test_the_history_runs_launched_later_have_the_run_keys_of_a_first_tick_launch(
    instance: DagsterInstance, tmp_path: Path, server: OpenAICompatibleServer
) -> None:
    export = write_export(tmp_path / "export", corpus_records({HYATT}))
    extractor = _llm_extractor(server)
    with instance_for_test() as fresh:
        direct = _evaluate(fresh, export, extractor)
    server.revoke_key(KEY)
    held = _evaluate(instance, export, extractor)
    _register(instance, held)
    server.accept_key(KEY)

    released = _evaluate(instance, export, extractor, cursor=held.cursor)

    assert [r.run_key for r in _split(released)[0]] == [r.run_key for r in _split(direct)[0]]


def test_only_the_mailbox_whose_key_is_unusable_waits(
    instance: DagsterInstance, tmp_path: Path, server: OpenAICompatibleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HARRIS_KEY", raising=False)  # Harris's tenant key is not set
    export = write_export(tmp_path / "export", corpus_records({HYATT, HARRIS}))

    result = _evaluate(instance, export, _llm_extractor(server, tenant_keys=f"{HARRIS}=HARRIS_KEY"))

    history, (gate,) = _split(result)
    assert {r.tags["atom/history_sync"] for r in history} == {HYATT}
    assert gate.tags[KEY_STATUS_GATE_TAG] == HARRIS
    assert json.loads(result.cursor or "") == {"history_waiting_for_key": [HARRIS]}


def test_a_held_back_mailbox_breaks_a_range(
    instance: DagsterInstance, tmp_path: Path, server: OpenAICompatibleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Farmer, Hyatt, Harris registered in that order, Hyatt's key not set: a range farmer..harris would
    cover Hyatt too, so the others run alone, and Hyatt's history follows once its key is usable."""
    monkeypatch.delenv("HYATT_KEY", raising=False)
    export = write_export(tmp_path / "export", corpus_records({HYATT, HARRIS, FARMER}))
    extractor = _llm_extractor(server, tenant_keys=f"{HYATT}=HYATT_KEY")

    result = _evaluate(instance, export, extractor)

    assert list(result.dynamic_partitions_requests[0].partition_keys) == [FARMER, HYATT, HARRIS]
    history, (gate,) = _split(result)
    assert [_covered(r) for r in history] == [(FARMER, FARMER), (HARRIS, HARRIS)]
    assert [r.run_key for r in history] == [f"history:{FARMER}..{FARMER}:1", f"history:{HARRIS}..{HARRIS}:1"]
    assert gate.tags[KEY_STATUS_GATE_TAG] == HYATT
    _register(instance, result)

    monkeypatch.setenv("HYATT_KEY", KEY)
    released = _evaluate(instance, export, extractor, cursor=result.cursor)

    history, gates = _split(released)
    assert gates == [] and [_covered(r) for r in history] == [(HYATT, HYATT)]
    assert json.loads(released.cursor or "") == {"history_waiting_for_key": []}


def test_a_missing_chain_model_holds_the_history_and_a_new_problem_asks_again(
    instance: DagsterInstance, tmp_path: Path, server: OpenAICompatibleServer
) -> None:
    export = write_export(tmp_path / "export", corpus_records({HYATT}))
    missing_model = _llm_extractor(server, chain="openai:gpt-4o-mini,openai:gpt-4.1,heuristic")

    first = _evaluate(instance, export, missing_model)
    _register(instance, first)
    history, (gate,) = _split(first)
    assert history == []

    server.revoke_key(KEY)  # now the key is rejected too: a different verdict, a new llm_key_status run
    second = _evaluate(instance, export, missing_model, cursor=first.cursor)
    history, (other,) = _split(second)
    assert history == [] and other.run_key != gate.run_key


def test_the_held_back_history_reaches_the_alert_channels_before_any_mail_reaches_the_provider(
    instance: DagsterInstance, tmp_path: Path, server: OpenAICompatibleServer
) -> None:
    export = write_export(tmp_path / "export", corpus_records({HYATT}))
    extractor = _llm_extractor(server, chain="openai:gpt-4o-mini,openai:gpt-4.1,heuristic")  # gpt-4.1 not served
    tick = _evaluate(instance, export, extractor)
    _register(instance, tick)
    (gate,) = _split(tick)[1]

    # The daemon launches the requested run; here it runs in process on the same instance.
    job = Definitions(
        assets=[llm_key_status], jobs=[llm_key_status_job], resources={"extractor": extractor}
    ).resolve_job_def(llm_key_status_job.name)
    run = job.execute_in_process(instance=instance, tags=gate.tags)
    assert run.success  # the check is ERROR but not blocking: the run succeeds, the check fails

    with WebhookReceiver() as slack:
        channels = AlertChannels(slack_webhook_url=slack.url("/services/T0/B0/gate"))
        analyst_alerts(build_sensor_context(instance=instance, resources={"alert_channels": channels}))
        (post,) = slack.accepted()
    text = post.json["text"]
    assert "check llm_keys_accepted on llm_key_status failed" in text
    assert HYATT in text and "gpt-4.1 do not exist" in text
    assert server.requests_by_path.get("POST /v1/chat/completions", 0) == 0
