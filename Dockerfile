# The Atom Pipelines code-location image: the gRPC code server of the `atom-pipelines` user deployment in
# Dagster's Helm chart, and (same image, other commands) every run pod and step pod it launches.
#
# Not built here: this project's machines have no Docker engine. atom_pipelines_tests/test_k8s_config.py
# checks what can be checked without one (every COPY source exists and is not excluded by .dockerignore, the
# command is the module workspace.yaml loads, the user is not root, no secret is set). How to build, push and
# deploy it: docs/runbook/kubernetes.md.
#
# No secret is ever written into this image: OPENAI_API_KEY, ATOM_GRAPH_CLIENT_SECRET, ATOM_DATABASE_URL,
# DAGSTER_PG_PASSWORD and the rest reach the pods from Kubernetes Secrets (deploy/helm/values.yaml).

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/dagster/app

# The package with its `k8s` extra (dagster-k8s, pinned with dagster in setup.py): ATOM_EXECUTOR=k8s makes
# every step a Kubernetes Job through dagster_k8s.k8s_job_executor, and the step pods run this same image.
# Every dependency ships a manylinux wheel (psycopg 3 and psycopg2 binary builds included), so the slim image
# needs no compiler.
COPY setup.py ./
COPY atom_pipelines/ ./atom_pipelines/
RUN pip install ".[k8s]"

# The sample mailbox export, the mail source when Microsoft Graph is not configured (the embedded default).
# The settings find it next to the package in a checkout; an installed package sits in site-packages, so
# name the directory explicitly.
COPY data/ ./data/
ENV ATOM_MAIL_EXPORT_DIR=/opt/dagster/app/data

# Not copied: workspace.yaml (in Kubernetes the chart writes the webserver's workspace, one grpc_server per
# user deployment, and the code server is told its module by its arguments) and the top-level dagster.yaml
# (its LocalRunLauncher judges run workers by pid on one machine; the chart writes the instance's
# dagster.yaml, with the K8sRunLauncher, into a ConfigMap that run and step pods mount).

# A numeric, unprivileged user: Kubernetes can only enforce `runAsNonRoot` on an image whose USER is a
# number. Its home is writable (matplotlib keeps its font cache there); DAGSTER_HOME is the chart's default
# (global.dagsterHome), writable by that user for Dagster's local artifacts.
ENV DAGSTER_HOME=/opt/dagster/dagster_home
RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid 10001 --home-dir /opt/dagster/home --create-home --shell /usr/sbin/nologin dagster \
    && mkdir -p "$DAGSTER_HOME" \
    && chown -R 10001:10001 "$DAGSTER_HOME"
USER 10001:10001

# The gRPC port of the user deployment (dagster-user-deployments.deployments[0].port).
EXPOSE 3030

# What the chart runs for `dagsterApiGrpcArgs` (its deployment-user.yaml passes
# `dagster api grpc -h 0.0.0.0 -p <port> <dagsterApiGrpcArgs>` as the container's args, replacing this CMD),
# so `docker run <image>` serves exactly what the pod serves. `-a defs`: atom_pipelines loads `defs` on first
# access (a module __getattr__), which Dagster's module scan cannot see, so the attribute is named, as
# workspace.yaml names it.
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "atom_pipelines", "-a", "defs"]

# For `docker run`; Kubernetes ignores it and runs the chart's readiness probe, the same command.
HEALTHCHECK --interval=20s --timeout=10s --start-period=60s CMD ["dagster", "api", "grpc-health-check", "-p", "3030"]
