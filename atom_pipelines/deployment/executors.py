"""Where a run's steps execute: the Dagster executor ``ATOM_EXECUTOR`` names (issue 12).

- ``multiprocess`` (default): ``multi_or_in_process_executor``, what Definitions use without an executor:
  one subprocess per step, and ``execution: {config: {in_process: {}}}`` still runs a run in one process.
- ``in_process``: every step in the run worker.
- ``celery``: every step a Celery task on the broker ``ATOM_CELERY_BROKER_URL``, executed by whichever
  worker (``celery -A atom_pipelines.deployment.celery_worker worker``, docs/runbook/celery.md) takes it; the
  run worker waits on the result backend ``ATOM_CELERY_BACKEND_URL``.
- ``k8s``: one Kubernetes Job per step (``dagster-k8s``, the ``k8s`` extra), imported only when chosen.

The broker URL may hold a password. ``dagster_celery.celery_executor`` takes it as config, and config
(configured or not) is what the launchpad and the run's config show; so the celery executor here has no
broker in its config at all: the run worker loads the Definitions, hence the settings, from its own
environment, and the executor closes over them. Errors show the URL with its password masked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dagster import (
    ExecutorDefinition,
    executor,
    in_process_executor,
    multi_or_in_process_executor,
    multiple_process_executor_requirements,
)
from dagster._core.execution.retries import RetryMode, get_retries_config

if TYPE_CHECKING:
    from atom_pipelines.config import Settings

#: The variables the celery executor and the workers read (named in errors, never their values).
BROKER_VARIABLE = "ATOM_CELERY_BROKER_URL"
BACKEND_VARIABLE = "ATOM_CELERY_BACKEND_URL"

#: How long a run sending a step waits for an unreachable broker before it fails (see CELERY_CONFIG_SOURCE).
BROKER_WAIT_S = 30

#: Celery settings both sides must agree on (the run worker that sends, the worker that executes), on top
#: of dagster-celery's own (prefetch multiplier 1, the "dagster" queue, priorities).
#:
#: ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged when its step has finished,
#: not when a worker takes it. Celery's default acknowledges first, so a worker killed mid-step (OOM, a
#: machine gone) loses the task: nobody sends its result and the run worker waits on it for ever, STARTED,
#: with a healthy run worker that run monitoring sees nothing wrong with (test_celery.py kills a worker). Late,
#: the broker hands the unacknowledged step to another worker when the dead worker's connection closes; the
#: step's writes are idempotent (each partition's rows replaced in one transaction), so running it again is
#: safe. ``worker_cancel_long_running_tasks_on_connection_loss``: a worker that loses the broker while a
#: step runs stops it, because the broker will hand that step to another worker (otherwise both run it).
#: ``broker_transport_options``: a run that sends a step while the broker is unreachable keeps trying to
#: connect, every second or two, for BROKER_WAIT_S before it fails naming the broker. kombu's default gives
#: up after its 5 s connect timeout, so a broker restart of a few seconds failed every run sending a step
#: meanwhile, the run_retries retry of a run the restart had failed included (test_celery.py's lost broker).
CELERY_CONFIG_SOURCE: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_cancel_long_running_tasks_on_connection_loss": True,
    "broker_connection_retry_on_startup": True,
    "broker_transport_options": {
        "connect_retries_timeout": BROKER_WAIT_S,
        "interval_start": 0,
        "interval_step": 1,
        "interval_max": 2,
    },
}

K8S_EXTRA_HINT = (
    "ATOM_EXECUTOR=k8s needs dagster-k8s, which is not installed: install the package with its k8s extra "
    "(pip install 'atom_pipelines[k8s]'), as the deployment image does"
)


class CeleryBrokerError(ConnectionError):
    """The Celery broker could not be reached (or was lost) while a run sent or awaited its steps."""


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``**`` (kombu's own masking, as Celery logs broker URLs)."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def celery_app_args(settings: Settings) -> dict[str, Any]:
    """The arguments of the Celery app, for the run worker (``CeleryExecutor``) and the workers alike."""
    return {
        "broker": settings.celery_broker_url,
        "backend": settings.celery_backend_url,
        "include": [],
        "config_source": dict(CELERY_CONFIG_SOURCE),
    }


def build_executor(settings: Settings) -> ExecutorDefinition:
    """The Dagster executor for ``settings.executor`` (``ATOM_EXECUTOR``)."""
    if settings.executor == "multiprocess":
        return multi_or_in_process_executor
    if settings.executor == "in_process":
        return in_process_executor
    if settings.executor == "celery":
        return _celery_executor(settings)
    if settings.executor == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ImportError(K8S_EXTRA_HINT) from exc
        return k8s_job_executor
    raise ValueError(f"unknown executor {settings.executor!r}")  # the settings accept only the four above


def _celery_executor(settings: Settings) -> ExecutorDefinition:
    from dagster_celery.executor import CeleryExecutor

    app_args = celery_app_args(settings)
    broker = masked_url(settings.celery_broker_url)

    class AtomCeleryExecutor(CeleryExecutor):
        """dagster-celery's executor, failing with the (masked) broker named when the broker is unreachable."""

        def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
            from amqp.exceptions import ConnectionError as AmqpConnectionError
            from kombu.exceptions import OperationalError

            try:
                yield from super().execute(plan_context, execution_plan)
            # OSError: a broker lost while the run waits on a result surfaces as the transport's own
            # ``OSError('Server unexpectedly closed connection')`` (amqp), not as kombu's OperationalError.
            except (OperationalError, AmqpConnectionError, OSError) as exc:
                raise CeleryBrokerError(
                    f"Celery broker {broker} ({BROKER_VARIABLE}) unreachable while the run sent or awaited "
                    f"its steps: {type(exc).__name__}: {exc}. The steps not yet finished were not run; "
                    "re-execute the run from failure once the broker is back."
                ) from exc

    @executor(
        name="celery",
        # Only retries are configurable per run: the broker and backend come from the settings, never config.
        config_schema={"retries": get_retries_config()},
        requirements=multiple_process_executor_requirements(),
    )
    def atom_celery_executor(init_context: Any) -> CeleryExecutor:
        return AtomCeleryExecutor(retries=RetryMode.from_config(init_context.executor_config["retries"]), **app_args)

    return atom_celery_executor
