"""The cost estimate (``python -m atom_pipelines.estimate MAILBOX START END``) prices exactly what the pipeline
sends, from the source the code location would read.

Before a large backfill an operator runs the estimate to decide whether to launch it; an estimate that
counts other messages, other prompts or another source than the run will is worse than none. So the CLI
runs as an operator runs it (a subprocess configured only through the environment) and its printed
figures are compared with what the pipeline itself stores and sends: the stored messages' prompts, built
with the pipeline's own ``prompt_for`` and counted with ``prompt_tokens``, and the requests the OpenAI test
server received when extraction ran with the same settings; after that run the cache answers them all.
With the Graph credentials set it reads the Graph test server (the export directory then does not exist).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from atom_pipelines.config import Settings, load_settings
from atom_pipelines.extraction.prompt import prompt_for
from atom_pipelines.extraction.providers import MessageText
from atom_pipelines.extraction.tokens import prompt_tokens
from atom_pipelines.partitions import MailboxWindow
from atom_pipelines.resources import build_resources
from atom_pipelines.store import schema
from atom_pipelines.store.resource import MailStore, dispose_engine
from atom_pipelines_tests.conftest import REPO_ROOT, corpus_records, write_export
from atom_pipelines_tests.helpers import materialize_days
from atom_pipelines_tests.servers.graph_server import GraphServer
from atom_pipelines_tests.servers.openai_server import OpenAICompatibleServer
from atom_pipelines_tests.test_graph_sync import received_day

MAILBOX = "kevin.hyatt@enron.com"
FIRST, LAST = dt.date(2001, 11, 26), dt.date(2001, 11, 30)
KEY = "sk-estimate-test"
MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return corpus_records({MAILBOX})


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'estimate.sqlite'}"
    yield url
    dispose_engine(url)


def _environment(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without any setting, plus these: the CLI sees only what a test sets."""
    inherited = {name: value for name, value in os.environ.items() if name.upper() not in Settings.variables()}
    return {**inherited, **env}


def _estimate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "atom_pipelines.estimate", MAILBOX, FIRST.isoformat(), LAST.isoformat()],
        env=_environment(env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _figures(env: dict[str, str]) -> dict[str, int]:
    """The printed figures: messages, and (with an LLM in the chain) calls, cached and prompt tokens."""
    completed = _estimate(env)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    figures = {"messages": int(re.search(rf"{FIRST} \.\. {LAST}: (\d+) messages", out).group(1))}
    calls = re.search(rf"model {MODEL}: (\d+) calls \((\d+) answered by the cache\)", out)
    if calls:
        tokens = re.search(r"prompt tokens: ([\d,]+);", out).group(1)
        figures.update(
            calls=int(calls.group(1)), cached=int(calls.group(2)), prompt_tokens=int(tokens.replace(",", ""))
        )
    return figures


def _window() -> MailboxWindow:
    return MailboxWindow(MAILBOX, tuple(FIRST + dt.timedelta(days=n) for n in range((LAST - FIRST).days + 1)))


def test_the_estimate_prices_what_the_pipeline_sends_and_then_what_the_cache_answers(
    records: list[dict],
    tmp_path: Path,
    database_url: str,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    export = write_export(tmp_path / "export", records)
    with OpenAICompatibleServer(accepted_keys={KEY}) as server:
        env = {
            "ATOM_MAIL_EXPORT_DIR": str(export),
            "ATOM_DATABASE_URL": database_url,
            "DAGSTER_HOME": str(tmp_path / "home"),
            "ATOM_LLM_CHAIN": f"openai:{MODEL}",
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": server.base_url,
        }
        before = _figures(env)

        # The pipeline with the same settings, built by the same builders the code location uses.
        for name in list(os.environ):
            if name.upper() in Settings.variables():
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        run_resources = build_resources(load_settings())
        del run_resources["alert_channels"]
        materialize_days(instance, run_resources, MAILBOX, FIRST, LAST)
        sent = [next(m["content"] for m in body["messages"] if m["role"] == "user") for body in server.bodies]
        after = _figures(env)

    stored = [
        MessageText.from_stored(row) for row in MailStore(database_url=database_url).rows(schema.messages, [_window()])
    ]
    prompts = [prompt_for(text) for text in stored]
    assert len(stored) >= 5
    assert len(set(prompts)) == len(prompts)  # no two share a prompt, so every message is one call
    assert before == {
        "messages": len(stored),
        "calls": len(stored),
        "cached": 0,
        "prompt_tokens": sum(prompt_tokens(prompt) for prompt in prompts),
    }
    # What extraction actually sent: one request per message, the same prompts, the same tokens.
    assert sorted(sent) == sorted(prompts)
    assert sum(prompt_tokens(content) for content in sent) == before["prompt_tokens"]
    assert after == {"messages": len(stored), "calls": 0, "cached": len(stored), "prompt_tokens": 0}


def test_with_graph_configured_the_estimate_reads_graph(records: list[dict], tmp_path: Path, database_url: str) -> None:
    expected = {r["id"] for r in records if FIRST <= received_day(r) <= LAST}
    assert expected
    with GraphServer(records) as server:
        env = {
            "ATOM_GRAPH_TENANT_ID": server.tenant_id,
            "ATOM_GRAPH_CLIENT_ID": server.client_id,
            "ATOM_GRAPH_CLIENT_SECRET": server.client_secret,
            "ATOM_GRAPH_AUTHORITY_HOST": server.authority_host,
            "ATOM_GRAPH_API_URL": server.api_url,
            "REQUESTS_CA_BUNDLE": str(server.ca_bundle_path),
            "ATOM_DATABASE_URL": database_url,
            "DAGSTER_HOME": str(tmp_path / "home"),
            # Had the CLI read the export, it would fail: there is none.
            "ATOM_MAIL_EXPORT_DIR": str(tmp_path / "no-export"),
            "ATOM_LLM_CHAIN": "heuristic",
        }
        figures = _figures(env)
        listed = [r for r in server.request_log if r.mailbox == MAILBOX and r.path.endswith("/messages")]

    assert figures == {"messages": len(expected)}
    assert listed and all(r.status == 200 for r in listed)
    assert sum(r.items or 0 for r in listed) >= len(expected)


def test_a_bad_setting_stops_the_estimate_with_the_load_s_message(tmp_path: Path) -> None:
    completed = _estimate({"DAGSTER_HOME": str(tmp_path), "ATOM_GRAPH_PAGE_SIZE": "5000"})
    assert completed.returncode == 2
    assert "ATOM_GRAPH_PAGE_SIZE='5000' must be an integer 1-1000" in completed.stderr
    assert "Traceback" not in completed.stderr and completed.stdout == ""
