"""The Celery app the workers run: ``celery -A atom_pipelines.deployment.celery_worker worker``.

dagster-celery's own ``dagster_celery.app`` reads its broker from a ``dagster_celery_config`` module that
``dagster-celery worker start -y config.yaml`` writes under ``$DAGSTER_HOME``, the broker URL (and its
password) in clear, on every start. This app reads the same settings as the code location instead
(``ATOM_CELERY_BROKER_URL``, ``ATOM_CELERY_BACKEND_URL``), with the same Celery settings as the run worker
that sends the steps (``executors.celery_app_args``), so the two cannot disagree.

A task names the job by its code pointer (``atom_pipelines.defs``) and the Dagster instance by the run
worker's instance ref: the worker loads our Definitions from its own environment, so it needs the ATOM_*
settings, ``DAGSTER_HOME``/``dagster.yaml`` and the ``DAGSTER_PG_*`` variables of the daemon (see
docs/runbook/celery.md). The settings are validated here, when the worker starts: a bad value stops it
with the SettingsError, not each step later.
"""

from __future__ import annotations

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from atom_pipelines.config import load_settings
from atom_pipelines.deployment.executors import celery_app_args

_args = celery_app_args(load_settings())
# CeleryExecutor.app_args(): the exact shape dagster-celery's run worker builds its app from.
app = make_app(CeleryExecutor.for_cli(**_args).app_args())

# The tasks of dagster_celery.app: execute_plan is what the celery executor sends (one step per task);
# execute_job / resume_job serve dagster-celery's run launcher, registered so a worker answers them too.
execute_plan = create_task(app)
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)
