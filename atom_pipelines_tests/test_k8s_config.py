"""The Kubernetes deployment configuration holds together, checked without Docker, Helm or a cluster.

Nothing here builds the image or installs the chart (this project's machines have neither a Docker engine nor a
cluster); what can go wrong in these files without running them is checked statically, with no network:

- ``deploy/helm/values.yaml`` validates against the official chart's ``values.schema.json`` (and the
  user-deployments subchart's), vendored in ``atom_pipelines_tests/k8s/`` with their commits; as an overlay on the
  chart's defaults (``required`` left to the defaults in maps, enforced in lists, which Helm replaces whole), and the
  validator refuses a misspelled key, a wrong type, a bad enum and an incomplete list item, so a pass means something;
- the instance the chart would write (the values mapped the way the chart's templates map them) has the same run
  queue, tag limits, pool, run monitoring, run retries and logging as the top-level ``dagster.yaml``, with the one
  deliberate difference named;
- the Dockerfile copies only what exists and ``.dockerignore`` lets through, runs as a numeric non-root user, has no
  ENTRYPOINT that the chart's args would be appended to, and its CMD is exactly what the chart runs, serving the
  module and attribute ``workspace.yaml`` loads (Dagster's module scan cannot find the lazy ``defs`` alone);
- every environment variable set is one the settings read (or Dagster's), no secret variable is set as plain env, no
  value looks like a secret, and the Secrets the runbook creates are the ones the values name;
- the store-upgrade Job runs the release's image and a command the store's CLI has.
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import hashlib
import inspect
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.workspace.autodiscovery import loadable_targets_from_loaded_module

import atom_pipelines
from atom_pipelines import tags
from atom_pipelines.config import Settings
from atom_pipelines.store.__main__ import main as store_cli
from atom_pipelines_tests.conftest import REPO_ROOT

VALUES_PATH = REPO_ROOT / "deploy" / "helm" / "values.yaml"
STORE_JOB_PATH = REPO_ROOT / "deploy" / "k8s" / "store-upgrade-job.yaml"
DOCKERFILE_PATH = REPO_ROOT / "Dockerfile"
DOCKERIGNORE_PATH = REPO_ROOT / ".dockerignore"
RUNBOOK_PATH = REPO_ROOT / "docs" / "runbook" / "kubernetes.md"
SCHEMA_DIR = Path(__file__).resolve().parent / "k8s"
CHART_SCHEMA_PATH = SCHEMA_DIR / "dagster.values.schema.json"
SUBCHART_SCHEMA_PATH = SCHEMA_DIR / "dagster-user-deployments.values.schema.json"

#: Where the vendored schemas' $refs to Kubernetes object schemas point (not followed: no network).
KUBERNETES_SCHEMA_URLS = (
    "https://raw.githubusercontent.com/yannh/kubernetes-json-schema/",
    "https://kubernetesjsonschema.dev/",
)
#: Variables Dagster itself reads that the values or the image may set (beside the settings' own).
DAGSTER_VARIABLES = {"DAGSTER_HOME", "DAGSTER_EVENT_BATCH_SIZE", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"}
#: The image's interpreter and installer settings (Dockerfile ENV only).
BUILD_VARIABLES = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}
#: What the values set on purpose differently from dagster.yaml: (section, key) -> (dagster.yaml, values).
DELIBERATE_DIFFERENCES = {
    # A run pod may wait for a node to be added and the image to be pulled (values.yaml, runMonitoring).
    ("run_monitoring", "start_timeout_seconds"): (180, 300),
}


# -- loading -------------------------------------------------------------------------------------------------------


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _values() -> dict[str, Any]:
    return _yaml(VALUES_PATH)


def _deployment(values: dict[str, Any]) -> dict[str, Any]:
    deployments = values["dagster-user-deployments"]["deployments"]
    assert len(deployments) == 1, "one code location: atom-pipelines"
    return deployments[0]


def _setup_constants() -> tuple[dict[str, str], dict[str, list[str]]]:
    """setup.py's top-level string constants and its extras_require, read without running setup()."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            names.update({target.id: node.value.value for target in node.targets if isinstance(target, ast.Name)})

    def text(node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if isinstance(node, ast.JoinedStr):
            return "".join(text(part) for part in node.values)
        if isinstance(node, ast.FormattedValue) and isinstance(node.value, ast.Name):
            return names[node.value.id]
        raise AssertionError(f"setup.py: cannot read {ast.dump(node)}")

    extras: dict[str, list[str]] = {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "setup":
            for keyword in call.keywords:
                if keyword.arg == "extras_require" and isinstance(keyword.value, ast.Dict):
                    for key, value in zip(keyword.value.keys, keyword.value.values, strict=True):
                        assert isinstance(value, ast.List)
                        extras[text(key)] = [text(item) for item in value.elts]
    return names, extras


# -- the schema, as an overlay ---------------------------------------------------------------------------------------


def _without_external_refs(schema: Any, removed: list[str]) -> Any:
    """The schema with its $refs to Kubernetes object schemas dropped (their sibling keywords stay)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            removed.append(ref)
            schema = {key: value for key, value in schema.items() if key != "$ref"}
        return {key: _without_external_refs(value, removed) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_without_external_refs(item, removed) for item in schema]
    return schema


def _overlay_validator(schema_path: Path) -> jsonschema.protocols.Validator:
    """A validator for values that Helm merges over the chart's defaults before validating them.

    Maps merge with the defaults, so a key the schema requires may come from them: ``required`` is not checked
    on maps. Lists replace the defaults whole, so every item of a list we write is validated strictly."""
    removed: list[str] = []
    schema = _without_external_refs(json.loads(schema_path.read_text()), removed)
    assert removed and all(ref.startswith(KUBERNETES_SCHEMA_URLS) for ref in removed), sorted(set(removed))
    strict_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    strict_class.check_schema(schema)
    definitions = {"$defs": schema["$defs"]}

    def items_strictly(validator: Any, items: Any, instance: Any, _schema: Any) -> Iterator[jsonschema.ValidationError]:
        if not validator.is_type(instance, "array"):
            return
        strict = strict_class({**definitions, **items})
        for index, item in enumerate(instance):
            for error in strict.iter_errors(item):
                yield jsonschema.ValidationError(error.message, path=[index, *error.absolute_path])

    def required_from_defaults(*_args: Any) -> Iterator[jsonschema.ValidationError]:
        return iter(())

    overlay_class = jsonschema.validators.extend(
        strict_class, {"required": required_from_defaults, "items": items_strictly}
    )
    return overlay_class(schema)


def _errors(validator: jsonschema.protocols.Validator, instance: Any) -> list[str]:
    return sorted(
        "/".join(str(part) for part in error.absolute_path) + ": " + error.message
        for error in validator.iter_errors(instance)
    )


def _subchart_values(values: dict[str, Any]) -> dict[str, Any]:
    """What Helm hands the user-deployments subchart: its section of the values, and the parent's globals."""
    return {**values["dagster-user-deployments"], "global": values["global"]}


def test_the_vendored_schemas_are_the_files_their_readme_names() -> None:
    readme = (SCHEMA_DIR / "README.md").read_text()
    for path in (CHART_SCHEMA_PATH, SUBCHART_SCHEMA_PATH):
        data = path.read_bytes()
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{path.name}`"))
        assert hashlib.sha256(data).hexdigest() in row, f"{path.name} changed: re-vendor it and update the README"
        assert f"| {len(data)} |" in row
        assert re.search(r"\b[0-9a-f]{40}\b", row), "the README names the commit each schema comes from"


def test_the_values_validate_against_the_charts_schema() -> None:
    values = _values()
    assert _errors(_overlay_validator(CHART_SCHEMA_PATH), values) == []
    assert _errors(_overlay_validator(SUBCHART_SCHEMA_PATH), _subchart_values(values)) == []


def test_every_top_level_key_is_one_the_chart_knows() -> None:
    # The chart's schema leaves its root open, so a misspelled section (dagsterDeamon) would validate and be
    # ignored by every template.
    known = set(json.loads(CHART_SCHEMA_PATH.read_text())["properties"])
    assert set(_values()) <= known, sorted(set(_values()) - known)


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("dagsterDaemon.runMonitorring", {"enabled": True}, "Additional properties are not allowed"),
        ("concurrency.runs.maxConcurrentRuns", "4", "is not valid under any of the given schemas"),
        ("runLauncher.type", "K8sRunLaunch", "is not one of"),
        ("telemetry.enabled", "false", "is not of type 'boolean'"),
        ("dagster-user-deployments.deployments.0.port", _DELETE, "'port' is a required property"),
        ("concurrency.runs.tagConcurrencyLimits.0.limit", _DELETE, "'limit' is a required property"),
    ],
    ids=["misspelled-key", "wrong-type", "bad-enum", "string-for-boolean", "list-item-incomplete", "limit-missing"],
)
def test_the_schema_check_refuses_broken_values(path: str, value: Any, expected: str) -> None:
    broken = copy.deepcopy(_values())
    _set(broken, path, value)
    errors = _errors(_overlay_validator(CHART_SCHEMA_PATH), broken)
    assert any(expected in error for error in errors), errors


# -- the same instance as dagster.yaml -------------------------------------------------------------------------------


def _instance_from_values(values: dict[str, Any]) -> dict[str, Any]:
    """The parts of dagster.yaml the chart writes from these values, keyed as its templates key them
    (configmap-instance.yaml and helpers/instance/_concurrency.tpl of the vendored schema's era)."""
    concurrency, daemon = values["concurrency"], values["dagsterDaemon"]
    monitoring, retries, logs = daemon["runMonitoring"], daemon["runRetries"], values["pythonLogs"]
    assert concurrency["enabled"] is True, "the chart writes `concurrency:` only when concurrency.enabled"
    coordinator = daemon["runCoordinator"]
    assert (coordinator["enabled"], coordinator["type"]) == (True, "QueuedRunCoordinator")
    assert set(coordinator["config"]["queuedRunCoordinator"]) == {"dequeueIntervalSeconds"}, "limits go in concurrency"
    return {
        # The chart writes it as run_coordinator's config; dagster.yaml as run_queue (the same setting).
        "run_queue": {
            "dequeue_interval_seconds": coordinator["config"]["queuedRunCoordinator"]["dequeueIntervalSeconds"]
        },
        "concurrency.runs": {
            "max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"],
            "tag_concurrency_limits": concurrency["runs"]["tagConcurrencyLimits"],
        },
        "concurrency.pools": {"default_limit": concurrency["pools"]["defaultLimit"]},
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "run_retries": {
            "enabled": retries["enabled"],
            "max_retries": retries["maxRetries"],
            "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"],
        },
        "python_logs": {
            "python_log_level": logs["pythonLogLevel"],
            "managed_python_loggers": logs["managedPythonLoggers"],
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


def test_the_tag_concurrency_limits_are_dagster_yamls() -> None:
    chart = _values()["concurrency"]["runs"]["tagConcurrencyLimits"]
    instance = _yaml(REPO_ROOT / "dagster.yaml")["concurrency"]["runs"]["tag_concurrency_limits"]

    def by_key(limits: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {limit["key"]: limit for limit in limits}

    assert by_key(chart) == by_key(instance)
    # The keys are the tags the code and Dagster put on runs: the mailbox of a one-mailbox run, and ours.
    assert set(by_key(chart)) == {tags.PARTITION_TAG, tags.MAILBOX_TAG}
    assert all(limit["value"] == {"applyLimitPerUniqueValue": True} and limit["limit"] == 3 for limit in chart)


def test_the_instance_the_chart_writes_is_dagster_yamls() -> None:
    instance = _yaml(REPO_ROOT / "dagster.yaml")
    rendered = _instance_from_values(_values())
    compared = 0
    for section, settings in rendered.items():
        in_instance = instance
        for part in section.split("."):
            in_instance = in_instance[part]
        for key, value in settings.items():
            expected = in_instance[key]
            if (section, key) in DELIBERATE_DIFFERENCES:
                assert (expected, value) == DELIBERATE_DIFFERENCES[(section, key)], (section, key)
            elif key == "tag_concurrency_limits":
                assert sorted(value, key=lambda limit: limit["key"]) == sorted(expected, key=lambda limit: limit["key"])
            else:
                assert value == expected, (section, key)
            compared += 1
    assert compared == 15
    # Instance storage: the same scheme (SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3).
    postgres = _values()["postgresql"]
    assert postgres["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert postgres["enabled"] is False


def test_the_run_limits_are_set_once() -> None:
    # The chart fails to render when the run limits are set both in `concurrency.runs` and in the queued run
    # coordinator's config (helpers/instance/_concurrency.tpl), and Dagster refuses both at start-up.
    coordinator = _values()["dagsterDaemon"]["runCoordinator"].get("config", {}).get("queuedRunCoordinator", {})
    assert coordinator.get("maxConcurrentRuns") is None
    assert not coordinator.get("tagConcurrencyLimits")


def test_runs_use_the_kubernetes_launcher_with_the_application_secret() -> None:
    values = _values()
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert launcher["config"]["k8sRunLauncher"]["envSecrets"] == _deployment(values)["envSecrets"]
    assert _deployment(values)["env"]["ATOM_EXECUTOR"] == "k8s"
    assert _deployment(values)["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert "k8s" in Settings.model_fields["executor"].annotation.__args__


# -- the image -------------------------------------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE_PATH.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, arguments = pending.strip().partition(" ")
        instructions.append((word.upper(), arguments.strip()))
        pending = ""
    return instructions


def _instruction(name: str) -> list[str]:
    return [arguments for word, arguments in _dockerfile() if word == name]


def _env_instructions() -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in _instruction("ENV"):
        for pair in shlex.split(arguments):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def _dockerignored(path: str) -> bool:
    """Docker's rule: the last .dockerignore pattern that matches the path or a folder above it decides."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    excluded = False
    for line in DOCKERIGNORE_PATH.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            excluded = not negate
    return excluded


def _copy_sources() -> list[str]:
    sources = []
    for arguments in _instruction("COPY"):
        words = [word for word in shlex.split(arguments) if not word.startswith("--")]
        sources.extend(words[:-1])
    return sources


def _command() -> list[str]:
    (cmd,) = _instruction("CMD")
    return json.loads(cmd)


def test_the_dockerfile_copies_what_the_repo_has_and_the_context_lets_through() -> None:
    sources = _copy_sources()
    assert {"setup.py", "atom_pipelines/", "data/"} <= set(sources)
    for source in sources:
        path = REPO_ROOT / source
        assert path.exists(), f"COPY {source}: not in the repo"
        files = [path] if path.is_file() else [file for file in path.rglob("*") if file.is_file()]
        shipped = [file for file in files if "__pycache__" not in file.parts]
        assert shipped, f"COPY {source}: nothing to copy"
        for file in shipped:
            relative = file.relative_to(REPO_ROOT).as_posix()
            assert not _dockerignored(relative), f"COPY {source}: .dockerignore excludes {relative}"
    # Never in the build context: local secrets, the virtual environment, a Dagster home with its SQLite store,
    # the one-machine instance config, tests and their corpora, and bytecode.
    for path in [
        ".env",
        ".venv/bin/python",
        ".dagster_home/atom_pipelines.sqlite",
        "dagster.yaml",
        "atom_pipelines_tests/corpus/enron_dev.jsonl.gz",
        "atom_pipelines/__pycache__/config.cpython-311.pyc",
    ]:
        assert _dockerignored(path), f"{path} would be sent to the Docker build"
    assert "dagster.yaml" not in sources and "workspace.yaml" not in sources


def test_the_image_installs_the_k8s_extra_that_setup_py_pins() -> None:
    (base,) = _instruction("FROM")
    assert base == "python:3.11-slim"
    installs = [run for run in _instruction("RUN") if run.startswith("pip install")]
    assert installs == ['pip install ".[k8s]"']
    names, extras = _setup_constants()
    # pip only warns about an extra a package lacks: the image would build without dagster-k8s and every run
    # would fail to load with ATOM_EXECUTOR=k8s.
    assert "k8s" in extras, "setup.py has no `k8s` extra: the image would lack dagster-k8s"
    assert f"dagster-k8s=={names['DAGSTER_LIBS_VERSION']}" in extras["k8s"]


def test_the_image_runs_as_a_numeric_unprivileged_user_the_pods_enforce() -> None:
    (user,) = _instruction("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0, user
    values = _values()
    pod_contexts = [
        _deployment(values)["podSecurityContext"],
        values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]["securityContext"],
        _yaml(STORE_JOB_PATH)["spec"]["template"]["spec"]["securityContext"],
    ]
    for context in pod_contexts:
        assert context["runAsNonRoot"] is True
        assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))
    assert _env_instructions()["DAGSTER_HOME"] == values["global"]["dagsterHome"]


def test_the_command_is_what_the_chart_runs_for_the_module_workspace_yaml_loads() -> None:
    # A Kubernetes `args` replaces CMD but is appended to an ENTRYPOINT: the chart's `dagster api grpc ...` args
    # would then run as arguments of that entrypoint.
    assert _instruction("ENTRYPOINT") == []
    deployment = _deployment(_values())
    port = deployment["port"]
    # helm/dagster/charts/dagster-user-deployments/templates/deployment-user.yaml, for dagsterApiGrpcArgs.
    chart_args = ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(port), *deployment["dagsterApiGrpcArgs"]]
    assert _command() == chart_args
    assert _instruction("EXPOSE") == [str(port)]
    (location,) = _yaml(REPO_ROOT / "workspace.yaml")["load_from"]
    module = location["python_module"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", module["module_name"], "-a", module["attribute"]]


def test_dagsters_module_scan_alone_cannot_find_the_lazy_defs() -> None:
    # Why the args name the attribute: atom_pipelines builds `defs` on first access (a module __getattr__), and
    # `dagster api grpc -m atom_pipelines` without `-a` scans the module's members, where `defs` is not.
    assert "defs" not in dict(inspect.getmembers(atom_pipelines))
    with pytest.raises(DagsterInvariantViolationError, match="No Definitions"):
        loadable_targets_from_loaded_module(atom_pipelines)


# -- variables and secrets -------------------------------------------------------------------------------------------


def _sensitive_variables() -> set[str]:
    """The settings' secrets (EnvVar only) and the settings whose values may hold a password."""
    sensitive = {
        Settings.variable(field)
        for field, info in Settings.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("sensitive")
    }
    return Settings.secret_variables() | sensitive


def _env_set_by_values(values: dict[str, Any]) -> dict[str, str | None]:
    env: dict[str, str | None] = {}

    def add(block: Any) -> None:
        if isinstance(block, dict):
            env.update(block)
        elif isinstance(block, list):
            env.update({item["name"]: item.get("value") for item in block})

    add(_deployment(values).get("env"))
    add(values.get("dagsterWebserver", {}).get("env"))
    add(values.get("dagsterDaemon", {}).get("env"))
    for item in values["runLauncher"]["config"]["k8sRunLauncher"].get("envVars", []):
        name, _, value = item.partition("=")
        env[name] = value or None
    return env


def test_every_variable_set_is_one_the_settings_or_dagster_read() -> None:
    known = set(Settings.variables()) | DAGSTER_VARIABLES
    env = _env_set_by_values(_values())
    assert env and set(env) <= known, sorted(set(env) - known)
    image_env = _env_instructions()
    assert set(image_env) <= known | BUILD_VARIABLES, sorted(set(image_env) - known - BUILD_VARIABLES)
    assert image_env["ATOM_MAIL_EXPORT_DIR"] == "/opt/dagster/app/data"
    assert "data/" in _copy_sources()


def test_every_process_that_creates_runs_writes_one_planned_event_per_asset_and_run() -> None:
    """What keeps the daily tick at 10,000 mailboxes under 30 s (README, benchmarks): Dagster reads it where it
    creates a run, which is the daemon (schedules, sensors, backfills) and the webserver (the launchpad)."""
    values = _values()
    for process in ("dagsterDaemon", "dagsterWebserver"):
        assert values[process]["env"]["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] == "1", process


def test_no_secret_is_set_as_plain_configuration() -> None:
    sensitive = _sensitive_variables()
    assert {"OPENAI_API_KEY", "ATOM_GRAPH_CLIENT_SECRET", "ATOM_DATABASE_URL", "ATOM_CELERY_BROKER_URL"} <= sensitive
    plain = set(_env_set_by_values(_values())) | set(_env_instructions())
    for arguments in _instruction("ARG"):
        plain.add(arguments.partition("=")[0])
    assert not plain & (sensitive | {"DAGSTER_PG_PASSWORD"}), sorted(plain & sensitive)


#: Values that look like credentials: an OpenAI-style key, a URL with a password, a private key, a JWT.
SECRET_LOOKING = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}|://[^/\s:@]+:[^/\s@]+@|-----BEGIN|\beyJ[A-Za-z0-9_-]{10,}\.")
#: Keys whose value would be the secret itself (a key naming a Secret, such as postgresqlSecretName, is fine).
SECRET_KEYS = re.compile(r"password|passwd|secret|token|api_?key", re.IGNORECASE)


def _secret_findings(document: Any, path: str = "") -> list[str]:
    findings = []
    if isinstance(document, dict):
        for key, value in document.items():
            where = f"{path}.{key}" if path else str(key)
            if (
                SECRET_KEYS.search(str(key))
                and not str(key).endswith(("SecretName", "Secrets"))
                and isinstance(value, str | int)
                and not isinstance(value, bool)
                and str(value)
            ):
                findings.append(f"{where}: a literal under a secret's key")
            findings.extend(_secret_findings(value, where))
    elif isinstance(document, list):
        for index, item in enumerate(document):
            findings.extend(_secret_findings(item, f"{path}.{index}"))
    elif isinstance(document, str) and SECRET_LOOKING.search(document):
        findings.append(f"{path}: looks like a credential")
    return findings


def test_no_value_looks_like_a_secret() -> None:
    assert _secret_findings(_values()) == []
    assert _secret_findings(_yaml(STORE_JOB_PATH)) == []
    assert not SECRET_LOOKING.search(DOCKERFILE_PATH.read_text())


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("postgresql.postgresqlPassword", "hunter2"),
        ("dagster-user-deployments.deployments.0.env.OPENAI_API_KEY", "sk-proj-abcdefghijklmnop"),
        ("dagster-user-deployments.deployments.0.env.ATOM_UI_BASE_URL", "https://admin:hunter2@dagster.example.com"),
    ],
    ids=["password-literal", "openai-key", "url-with-password"],
)
def test_the_secret_check_finds_a_planted_secret(path: str, value: str) -> None:
    planted = copy.deepcopy(_values())
    _set(planted, path, value)
    assert _secret_findings(planted)


def _runbook_env_block() -> list[str]:
    (block,) = re.findall(r"```env\n(.*?)```", RUNBOOK_PATH.read_text(), re.DOTALL)
    return [line.partition("=")[0] for line in block.splitlines() if line.strip()]


def test_the_runbooks_secrets_are_the_ones_the_values_name() -> None:
    values, runbook = _values(), RUNBOOK_PATH.read_text()
    names = _runbook_env_block()
    # Every key of the application Secret is a variable the settings read and one that must be secret.
    assert set(names) <= set(Settings.variables()) & _sensitive_variables(), sorted(set(names) - _sensitive_variables())
    assert {"ATOM_DATABASE_URL", "OPENAI_API_KEY", "ATOM_GRAPH_CLIENT_SECRET"} <= set(names)
    (application_secret,) = {item["name"] for item in _deployment(values)["envSecrets"]}
    assert f"create secret generic {application_secret} --from-env-file=" in runbook
    # The instance password: the Secret the chart reads, under the key it reads.
    postgres_secret = values["global"]["postgresqlSecretName"]
    assert re.search(rf"create secret generic {postgres_secret} \\\n\s+--from-literal=postgresql-password=", runbook)
    assert values["generatePostgresqlPasswordSecret"] is False


def test_the_runbook_installs_the_chart_version_setup_py_pins() -> None:
    names, _ = _setup_constants()
    installs = re.findall(r"helm upgrade --install \S+ dagster/dagster --version (\S+)", RUNBOOK_PATH.read_text())
    assert installs == [names["DAGSTER_VERSION"]]
    assert f"--version {names['DAGSTER_VERSION']}" in VALUES_PATH.read_text()


# -- resources and the store upgrade ---------------------------------------------------------------------------------

_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "m": 10**-3}


def _quantity(text: str | int) -> float:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    assert match and (not match[2] or match[2] in _UNITS), f"not a Kubernetes quantity: {text!r}"
    return float(match[1]) * _UNITS.get(match[2], 1)


@pytest.mark.parametrize("where", ["code location", "webserver", "daemon"])
def test_every_long_running_pod_has_requests_within_its_limits(where: str) -> None:
    values = _values()
    resources = {
        "code location": _deployment(values),
        "webserver": values["dagsterWebserver"],
        "daemon": values["dagsterDaemon"],
    }[where]["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert {"cpu", "memory"} <= set(requests) and "memory" in limits
    for name, limit in limits.items():
        assert _quantity(requests[name]) <= _quantity(limit), (where, name)
    assert _quantity(requests["memory"]) >= 256 * 2**20


def test_the_code_location_memory_limit_covers_the_measured_graph_build() -> None:
    # entity_graph peaks at 2.09 GB on a million links (README, benchmarks); its step pod gets these resources.
    assert _quantity(_deployment(_values())["resources"]["limits"]["memory"]) > 2.09e9


def test_the_store_upgrade_job_runs_the_releases_image_and_a_real_command(capsys: pytest.CaptureFixture) -> None:
    job = _yaml(STORE_JOB_PATH)
    assert job["kind"] == "Job" and job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    image = _deployment(_values())["image"]
    assert container["image"] == f"{image['repository']}:{image['tag']}", "the Job must migrate with the release"
    assert container["envFrom"] == [{"secretRef": item} for item in _deployment(_values())["envSecrets"]]
    python, flag, module, command = container["command"]
    assert (python, flag, module, command) == ("python", "-m", "atom_pipelines.store", "upgrade")
    with pytest.raises(SystemExit) as exited:
        store_cli([command, "--help"])
    assert exited.value.code == 0 and "revision" in capsys.readouterr().out
