"""The key status says, per key, whether the provider accepts it and whether every model of the chain exists
for it (issue 10, item 6): a chain model the provider does not serve would fail every extraction with 404
model_not_found, so such a key is not usable, and ``llm_key_status`` (its table and its ERROR check) says
which model is missing for which mailbox. Through the real ``openai`` client against the OpenAI-compatible
test server (its listing and its ``GET /v1/models/{id}`` answer from the same model list)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dagster import DagsterInstance, materialize

from atom_pipelines.assets import llm_key_status
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.extraction.key_status import is_azure_endpoint, key_status
from atom_pipelines_tests.servers.openai_server import OpenAICompatibleServer

KEY = "sk-test-key-status"
KEY_ENV = "ATOM_TEST_KEY_STATUS_KEY"
ENRON = ["kay.mann@enron.com", "sally.beck@enron.com"]


@pytest.fixture
def server() -> Iterator[OpenAICompatibleServer]:
    # Serves gpt-4o-mini only: gpt-4o, the chain's second model, does not exist here.
    with OpenAICompatibleServer(accepted_keys={KEY}, models=["gpt-4o-mini"], reject_unknown_models=True) as running:
        yield running


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def extractor(server: OpenAICompatibleServer, chain: str, **kwargs) -> EntityExtractor:
    return EntityExtractor(
        chain=chain, openai_base_url=server.base_url, key_env=KEY_ENV, max_retries=0, timeout_seconds=10, **kwargs
    )


def test_every_model_listed_is_usable_with_one_call(server: OpenAICompatibleServer) -> None:
    statuses = key_status(extractor(server, "openai:gpt-4o-mini,heuristic"), ENRON)

    assert [(s.accepted, s.models_missing, s.usable, s.problem) for s in statuses] == [(True, (), True, None)] * 2
    assert statuses[0].reason == "accepted"
    # One listing for both mailboxes (one key variable), no model asked for by its id.
    assert server.requests_by_path == {"GET /v1/models": 1}


def test_a_chain_model_the_provider_does_not_have_makes_the_key_unusable(server: OpenAICompatibleServer) -> None:
    statuses = key_status(extractor(server, "openai:gpt-4o-mini,openai:gpt-4o,heuristic"), ENRON)

    for status in statuses:
        assert status.accepted is True and status.configured is True
        assert status.models_missing == ("gpt-4o",)
        assert status.usable is False and status.problem == "model_missing:gpt-4o"
        assert "gpt-4o do not exist for this key" in status.reason and "model_not_found" in status.reason
    # The listing lacked gpt-4o, so it was asked for by its id, once for the key variable both share.
    assert server.requests_by_path == {"GET /v1/models": 1, "GET /v1/models/gpt-4o": 1}


def test_each_key_variable_gets_its_own_verdict(
    server: OpenAICompatibleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVOKED_KEY", "sk-revoked-9876543210")
    monkeypatch.delenv("UNSET_KEY", raising=False)
    chain = extractor(
        server, "openai:gpt-4o-mini,heuristic", tenant_keys="kay.mann@enron.com=REVOKED_KEY,example.org=UNSET_KEY"
    )

    statuses = {s.mailbox: s for s in key_status(chain, [*ENRON, "a@example.org"])}

    assert statuses["sally.beck@enron.com"].usable is True
    assert statuses["kay.mann@enron.com"].problem == "key_rejected"
    assert statuses["kay.mann@enron.com"].reason.startswith("rejected by the provider: HTTP 401 invalid_api_key")
    assert statuses["a@example.org"].problem == "key_not_set" and statuses["a@example.org"].configured is False
    assert all("sk-revoked-9876543210" not in s.reason for s in statuses.values())


def test_a_key_revoked_later_turns_unusable(server: OpenAICompatibleServer) -> None:
    chain = extractor(server, "openai:gpt-4o-mini,heuristic")
    assert key_status(chain, ENRON[:1])[0].usable is True

    server.revoke_key(KEY)

    (status,) = key_status(chain, ENRON[:1])
    assert status.usable is False and status.accepted is False and status.problem == "key_rejected"


def test_an_unreachable_provider_is_not_usable() -> None:
    with OpenAICompatibleServer(accepted_keys={KEY}) as stopped:
        base_url = stopped.base_url
    chain = EntityExtractor(chain="openai:gpt-4o-mini,heuristic", openai_base_url=base_url, key_env=KEY_ENV)

    (status,) = key_status(chain, ENRON[:1], timeout_seconds=2)

    assert status.usable is False and status.problem == "provider_error"
    assert status.reason.startswith("provider unreachable: APIConnectionError")


def test_a_chain_without_an_llm_is_usable_without_asking(server: OpenAICompatibleServer) -> None:
    (status,) = key_status(extractor(server, "heuristic"), ENRON[:1])
    assert status.usable is True and status.accepted is None and status.llm_models == ()
    assert server.requests_by_path == {}


@pytest.mark.parametrize(
    ("base_url", "azure"),
    [
        ("https://atom-prod.openai.azure.com/openai/v1/", True),
        ("https://ATOM.cognitiveservices.azure.com/openai/v1", True),
        ("https://atom.services.ai.azure.com/openai/v1", True),
        ("https://api.openai.com/v1", False),
        ("https://openai.azure.com.example.org/v1", False),  # a look-alike host is not Azure
        ("http://127.0.0.1:8000/v1", False),
        (None, False),
    ],
)
def test_azure_endpoints_are_told_by_their_host(base_url: str | None, azure: bool) -> None:
    assert is_azure_endpoint(base_url) is azure


def test_the_asset_shows_the_missing_model_per_mailbox_and_its_check_fails(
    server: OpenAICompatibleServer, instance: DagsterInstance
) -> None:
    instance.add_dynamic_partitions("mailbox", ENRON)

    result = materialize(
        [llm_key_status],
        instance=instance,
        resources={"extractor": extractor(server, "openai:gpt-4o-mini,openai:gpt-4o,heuristic")},
        raise_on_error=False,
    )

    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["usable"].value == 0
    rows = [record.data for record in metadata["status"].value.records]
    assert [(row["mailbox"], row["accepted"], row["models_missing"], row["usable"]) for row in rows] == [
        ("kay.mann@enron.com", True, "gpt-4o", False),
        ("sally.beck@enron.com", True, "gpt-4o", False),
    ]
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed is False and evaluation.severity.value == "ERROR"
    assert evaluation.metadata["models_missing"].value == {mailbox: ["gpt-4o"] for mailbox in ENRON}
    assert "gpt-4o do not exist" in evaluation.metadata["unusable"].value["kay.mann@enron.com"]
    assert "lacking a chain model" in (evaluation.description or "")
