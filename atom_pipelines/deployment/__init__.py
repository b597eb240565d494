"""How the deployment runs: the run launcher dagster.yaml names, the executor ATOM_EXECUTOR names, and the
Celery workers' app."""
