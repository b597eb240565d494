"""ATOM_EXECUTOR picks where a run's steps execute (issue 12, item 4), in process: Dagster's own local
executors, dagster-celery's with the broker kept out of every config and snapshot, and dagster-k8s's only
with its extra, failing the load by name without it.

The Celery deployment itself (workers on RabbitMQ, a killed worker, a lost broker, the Graph gate and the
openai pool across workers) is test_celery.py's.
"""

from __future__ import annotations

import sys

import pytest
from dagster import Definitions, asset, in_process_executor, multi_or_in_process_executor
from dagster._serdes import serialize_value

from atom_pipelines.config import load_settings
from atom_pipelines.deployment.executors import build_executor, celery_app_args, masked_url

SECRET_BROKER = "amqp://atom:s3cret-broker-password@rabbit.example:5672/atom"


def _settings(monkeypatch: pytest.MonkeyPatch, **variables: str):  # noqa: ANN202 - Settings
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.mark.parametrize(
    ("name", "expected"), [("multiprocess", multi_or_in_process_executor), ("in_process", in_process_executor)]
)
def test_the_local_executors_are_dagsters_own(monkeypatch: pytest.MonkeyPatch, name: str, expected) -> None:  # noqa: ANN001
    assert build_executor(_settings(monkeypatch, ATOM_EXECUTOR=name)) is expected


def test_without_atom_executor_definitions_keep_dagsters_default_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    """multiprocess is what Definitions use without an executor: `execution: {config: {in_process: {}}}` still
    runs a run in one process (test_run_recovery launches runs so)."""
    monkeypatch.delenv("ATOM_EXECUTOR", raising=False)
    assert build_executor(load_settings()) is multi_or_in_process_executor
    assert (
        Definitions(assets=[_tiny]).resolve_implicit_global_asset_job_def().executor_def is multi_or_in_process_executor
    )


@asset
def _tiny() -> None:
    """An asset for a job to be built around."""


def test_the_celery_executor_keeps_the_broker_out_of_config_and_the_job_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(monkeypatch, ATOM_EXECUTOR="celery", ATOM_CELERY_BROKER_URL=SECRET_BROKER)
    celery = build_executor(settings)
    assert celery.name == "celery"
    assert set(celery.config_schema.config_type.fields) == {"retries"}  # no broker, no backend, no config_source
    job = Definitions(assets=[_tiny], executor=celery).resolve_implicit_global_asset_job_def()
    assert "s3cret-broker-password" not in serialize_value(job.get_job_snapshot())
    # The app the run worker sends with and the one the workers run have the same settings.
    args = celery_app_args(settings)
    assert args["broker"] == SECRET_BROKER and args["backend"] == "rpc://"
    assert args["config_source"]["task_acks_late"] and args["config_source"]["task_reject_on_worker_lost"]
    assert masked_url(SECRET_BROKER) == "amqp://atom:**@rabbit.example:5672/atom"


def test_k8s_needs_its_extra_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, ATOM_EXECUTOR="k8s")
    monkeypatch.setitem(sys.modules, "dagster_k8s", None)  # as if the k8s extra were not installed
    with pytest.raises(ImportError, match=r"ATOM_EXECUTOR=k8s needs dagster-k8s.*atom_pipelines\[k8s\]"):
        build_executor(settings)
