"""The settings model (``atom_pipelines.config.Settings``) is the only reader of the deployment's variables,
a bad value stops the code location from loading with a message that says which variable and what it
accepts, and no secret reaches a resource's config, the settings or an error message.

Why: the variables used to be read in seven places with different parsers (two boolean parsers accepting
different words), and a bad ``ATOM_LLM_CHAIN`` or ``ATOM_LLM_CONCURRENCY`` failed every run instead of the
load, with a bare ValueError from a lambda. These tests hold the model to the README's Configuration table
(every variable once, its default, what it accepts), fail when a module names an ``ATOM_*`` variable the
model does not hold or reads one from ``os.environ`` itself, and prove that the load itself (a fresh
interpreter importing the Definitions, and Dagster's own validation) fails on each bad value.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dagster import EnvVar

from atom_pipelines import config
from atom_pipelines.config import FALSE_WORDS, RETIRED_VARIABLES, TRUE_WORDS, Settings, SettingsError, load_settings
from atom_pipelines.mail.msgraph import GraphMailSource
from atom_pipelines.mail.source import ExportMailSource
from atom_pipelines.provider_chain import DEFAULT_CHAIN_WITH_KEY, DEFAULT_CHAIN_WITHOUT_KEY
from atom_pipelines.resources import build_alert_channels, build_mail_source, build_resources
from atom_pipelines_tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "atom_pipelines"
VARIABLES = Settings.variables()

#: One distinct value per secret, so a leak anywhere is found by a substring search.
SECRETS = {
    "ATOM_GRAPH_TENANT_ID": "tenant-s3cret-1",
    "ATOM_GRAPH_CLIENT_ID": "client-s3cret-2",
    "ATOM_GRAPH_CLIENT_SECRET": "graph-s3cret-3",
    "OPENAI_API_KEY": "sk-s3cret-4",
    "ATOM_ALERT_TEAMS_WEBHOOK_URL": "https://teams.example/workflows/s3cret-5",
    "ATOM_ALERT_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/s3cret-6",
    "ATOM_ALERT_SMTP_PASSWORD": "smtp-s3cret-7",
}
DATABASE_PASSWORD = "db-s3cret-8"


def _clean(environ: dict[str, str]) -> dict[str, str]:
    """The environment without any variable the settings read (in any case)."""
    return {name: value for name, value in environ.items() if name.upper() not in VARIABLES}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets configures the settings."""
    for name in list(os.environ):
        if name.upper() in VARIABLES:
            monkeypatch.delenv(name)


def _load_with(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def _error_with(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> SettingsError:
    with pytest.raises(SettingsError) as raised:
        _load_with(monkeypatch, env)
    return raised.value


# -- bad values fail the load, naming the variable and what it accepts ------------------------------------

#: (environment, a line the error must hold). Each line starts with the variable as documented.
BAD_VALUES = [
    ({"ATOM_LLM_CONCURRENCY": "x"}, "ATOM_LLM_CONCURRENCY='x' must be an integer >= 1"),
    ({"ATOM_LLM_CONCURRENCY": "0"}, "ATOM_LLM_CONCURRENCY='0' must be an integer >= 1"),
    (
        {"ATOM_LLM_CHAIN": "openai:gpt-4o-mini,claude:opus"},
        "ATOM_LLM_CHAIN='openai:gpt-4o-mini,claude:opus' must be a comma-separated list of providers, each "
        "'openai:<model>' or 'heuristic', at least one of them not a reasoning model: ATOM_LLM_CHAIN entry "
        "'claude:opus' is not a provider",
    ),
    (
        {"ATOM_LLM_CHAIN": "openai:o3-mini"},
        "ATOM_LLM_CHAIN='openai:o3-mini' must be a comma-separated list of providers, each 'openai:<model>' or "
        "'heuristic', at least one of them not a reasoning model: every provider is a reasoning model",
    ),
    (
        {"ATOM_LLM_CHAIN": "openai:gpt-4o-mini", "ATOM_LLM_REASONING_MODELS": "gpt-4o-mini"},
        "ATOM_LLM_CHAIN='openai:gpt-4o-mini' must be",
    ),
    (
        {"ATOM_LLM_KEYS": "kay.mann@enron.com"},
        "ATOM_LLM_KEYS='kay.mann@enron.com' must be a comma-separated list of mailbox-or-domain=ENV_VAR: "
        "ATOM_LLM_KEYS entry 'kay.mann@enron.com' is not 'mailbox-or-domain=ENV_VAR'",
    ),
    ({"ATOM_GRAPH_PAGE_SIZE": "5000"}, "ATOM_GRAPH_PAGE_SIZE='5000' must be an integer 1-1000"),
    ({"ATOM_GRAPH_PAGE_SIZE": "0"}, "ATOM_GRAPH_PAGE_SIZE='0' must be an integer 1-1000"),
    (
        {"ATOM_HISTORY_SYNC_ON_REGISTER": "maybe"},
        "ATOM_HISTORY_SYNC_ON_REGISTER='maybe' must be a boolean: true/false, 1/0, yes/no, on/off",
    ),
    (
        {"ATOM_ALERT_SMTP_STARTTLS": "enabled"},
        "ATOM_ALERT_SMTP_STARTTLS='enabled' must be a boolean: true/false, 1/0, yes/no, on/off",
    ),
    ({"ATOM_START_DATE": "2001/01/01"}, "ATOM_START_DATE='2001/01/01' must be a day as YYYY-MM-DD"),
    ({"ATOM_START_DATE": "2001-02-30"}, "ATOM_START_DATE='2001-02-30' must be a day as YYYY-MM-DD"),
    (
        {"ATOM_START_DATE": "2001-06-01", "ATOM_END_DATE": "2001-06-01"},
        "ATOM_END_DATE='2001-06-01' must be a day as YYYY-MM-DD after ATOM_START_DATE: ATOM_START_DATE is 2001-06-01",
    ),
    ({"ATOM_MAILBOXES_PER_RUN": "-3"}, "ATOM_MAILBOXES_PER_RUN='-3' must be an integer >= 1"),
    ({"ATOM_EXECUTOR": "dask"}, "ATOM_EXECUTOR='dask' must be one of multiprocess, in_process, celery, k8s"),
    ({"ATOM_MAX_PARTITIONS_PER_RUN": "31"}, "ATOM_MAX_PARTITIONS_PER_RUN is retired: runs are per mailbox"),
    ({"ATOM_MAX_NONE_FOUND_SHARE": "1.5"}, "ATOM_MAX_NONE_FOUND_SHARE='1.5' must be a share, a number 0-1"),
    ({"ATOM_MAX_NONE_FOUND_SHARE": "nan"}, "ATOM_MAX_NONE_FOUND_SHARE='nan' must be a share, a number 0-1"),
    ({"ATOM_LLM_RPM": "0"}, "ATOM_LLM_RPM='0' must be a number > 0"),
    (
        {"ATOM_LLM_BUDGET_TOKENS_PER_RUN": "1e6"},
        "ATOM_LLM_BUDGET_TOKENS_PER_RUN='1e6' must be a number of tokens, an integer >= 1",
    ),
    ({"ATOM_ALERT_SMTP_PORT": "smtp"}, "ATOM_ALERT_SMTP_PORT='smtp' must be a port number, an integer 1-65535"),
    ({"ATOM_UI_BASE_URL": "localhost:3000"}, "ATOM_UI_BASE_URL='localhost:3000' must be an http(s) URL"),
    ({"OPENAI_BASE_URL": "ftp://llm.example"}, "OPENAI_BASE_URL='ftp://llm.example' must be an http(s) URL"),
    ({"ATOM_GRAPH_DELTA_FOLDERS": " , "}, "ATOM_GRAPH_DELTA_FOLDERS=' , ' must be a comma-separated list of at least"),
    (
        {"ATOM_ALERT_SMTP_HOST": "smtp.example", "ATOM_ALERT_SMTP_FROM": "dagster@atom.test"},
        "ATOM_ALERT_SMTP_TO (unset) must be a comma-separated list of e-mail addresses (required with "
        "ATOM_ALERT_SMTP_HOST): ATOM_ALERT_SMTP_HOST is set, so e-mail alerts need it",
    ),
    (
        {"ATOM_ALERT_SMTP_USERNAME": "dagster"},
        "ATOM_ALERT_SMTP_USERNAME='dagster' must be a user name (requires ATOM_ALERT_SMTP_PASSWORD)",
    ),
    (
        {"ATOM_DATABASE_URL": f"postgresql+psycopg2://atom:{DATABASE_PASSWORD}@db.example:port/atom"},
        "ATOM_DATABASE_URL (value not shown: it may hold a password) must be a SQLAlchemy database URL",
    ),
]


@pytest.mark.parametrize(("env", "line"), BAD_VALUES, ids=[next(iter(env)) for env, _ in BAD_VALUES])
def test_a_bad_value_fails_loading_naming_the_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str
) -> None:
    error = _error_with(monkeypatch, env)
    assert isinstance(error, ValueError)
    assert any(problem.startswith(line) for problem in error.problems), error.problems
    assert line in str(error)
    assert DATABASE_PASSWORD not in str(error)


def test_every_bad_variable_is_listed_in_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    error = _error_with(
        monkeypatch,
        {"ATOM_LLM_CONCURRENCY": "x", "ATOM_GRAPH_PAGE_SIZE": "5000", "ATOM_HISTORY_SYNC_ON_REGISTER": "maybe"},
    )
    assert [problem.split("=")[0] for problem in error.problems] == [
        "ATOM_HISTORY_SYNC_ON_REGISTER",
        "ATOM_GRAPH_PAGE_SIZE",
        "ATOM_LLM_CONCURRENCY",
    ]
    assert str(error).startswith("invalid settings (3 variables")


def test_a_variable_named_in_another_case_is_reported_upper_case(monkeypatch: pytest.MonkeyPatch) -> None:
    error = _error_with(monkeypatch, {"atom_llm_concurrency": "many"})
    assert error.problems == ["ATOM_LLM_CONCURRENCY='many' must be an integer >= 1"]


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        env={**_clean(dict(os.environ)), **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


#: The bad values the load must refuse, each checked in a fresh interpreter importing the Definitions.
LOAD_FAILURES = [
    ({"ATOM_LLM_CONCURRENCY": "x"}, "ATOM_LLM_CONCURRENCY='x' must be an integer >= 1"),
    ({"ATOM_LLM_CHAIN": "anthropic:claude-3"}, "ATOM_LLM_CHAIN entry 'anthropic:claude-3' is not a provider"),
    ({"ATOM_LLM_KEYS": "enron.com"}, "ATOM_LLM_KEYS entry 'enron.com' is not 'mailbox-or-domain=ENV_VAR'"),
    ({"ATOM_GRAPH_PAGE_SIZE": "5000"}, "ATOM_GRAPH_PAGE_SIZE='5000' must be an integer 1-1000"),
    ({"ATOM_ALERT_SMTP_STARTTLS": "sure"}, "ATOM_ALERT_SMTP_STARTTLS='sure' must be a boolean"),
]


@pytest.mark.parametrize(("env", "line"), LOAD_FAILURES, ids=[next(iter(env)) for env, _ in LOAD_FAILURES])
def test_the_code_location_does_not_load_with_a_bad_value(env: dict[str, str], line: str) -> None:
    # The secrets are set too: the error and its traceback must not show them.
    completed = _python("import atom_pipelines.definitions", {**SECRETS, **env})
    assert completed.returncode != 0
    assert "atom_pipelines.config.SettingsError: invalid settings (1 variable" in completed.stderr
    assert line in completed.stderr
    assert "s3cret" not in completed.stderr + completed.stdout


def test_dagster_refuses_the_workspace_with_a_bad_value(tmp_path: Path) -> None:
    """The load as a code server does it: Dagster's own validation of workspace.yaml."""
    env = {**_clean(dict(os.environ)), "DAGSTER_HOME": str(tmp_path), "ATOM_LLM_CONCURRENCY": "x"}
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0
    assert "All code locations passed validation" not in output
    assert "ATOM_LLM_CONCURRENCY='x' must be an integer >= 1" in output


# -- one boolean parser ----------------------------------------------------------------------------------

BOOLEAN_VARIABLES = [name for name, field in VARIABLES.items() if Settings.model_fields[field].annotation is bool]


def test_the_boolean_variables_are_the_documented_ones() -> None:
    assert BOOLEAN_VARIABLES == ["ATOM_HISTORY_SYNC_ON_REGISTER", "ATOM_GRAPH_AUTO_REFRESH", "ATOM_ALERT_SMTP_STARTTLS"]


@pytest.mark.parametrize("name", BOOLEAN_VARIABLES)
def test_every_boolean_variable_accepts_the_same_words(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    field = VARIABLES[name]
    assert set(TRUE_WORDS) | set(FALSE_WORDS) == {"true", "false", "1", "0", "yes", "no", "on", "off"}
    for words, expected in ((TRUE_WORDS, True), (FALSE_WORDS, False)):
        for word in words:
            for spelling in (word, word.upper(), f" {word.capitalize()} "):
                monkeypatch.setenv(name, spelling)
                assert getattr(load_settings(), field) is expected, spelling
    # pydantic's own bool would take these; ours refuses them, for every boolean alike.
    for word in ("t", "f", "y", "n", "2", "enabled", "none"):
        monkeypatch.setenv(name, word)
        with pytest.raises(SettingsError, match=rf"{name}='{word}' must be a boolean: true/false"):
            load_settings()


# -- defaults: what the README says ----------------------------------------------------------------------


def _readme_table() -> dict[str, tuple[str, str]]:
    """variable -> (default cell, accepts cell) of the Configuration table, each variable once."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Configuration\n") :]
    section = section[: section.index("\n## ", 1)]
    header = "| variable | default | accepts | meaning |"
    lines = section[section.index(header) :].splitlines()[2:]
    rows: dict[str, tuple[str, str]] = {}
    for line in lines:
        if not line.startswith("|"):
            break
        variable, default, accepts, _meaning = (cell.strip() for cell in line.strip("|").split(" | "))
        name = variable.strip("`")
        assert name not in rows, f"{name} appears twice in the README's Configuration table"
        rows[name] = (default, accepts)
    return rows


def _code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def _as_documented(value: Any, home: Path) -> str | None:
    """A default as the README writes it: None for "-" (unset), paths relative to the repo or DAGSTER_HOME."""
    if value is None or value == () or value == {}:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        if home in value.parents:
            return f"$DAGSTER_HOME/{value.relative_to(home)}"
        return f"{value.relative_to(REPO_ROOT)}/"
    return str(value).replace(str(home), "$DAGSTER_HOME")


def test_the_readme_documents_every_variable_once_with_what_it_accepts() -> None:
    table = _readme_table()
    assert set(table) == set(VARIABLES)
    for name, (_default, accepts) in table.items():
        assert accepts.replace("`", "") == Settings.accepts(VARIABLES[name]), name


def test_defaults_are_what_the_readme_says() -> None:
    settings = load_settings()
    table = _readme_table()
    assert settings.dagster_home == REPO_ROOT / ".dagster_home"
    for name, field in VARIABLES.items():
        default_cell = table[name][0]
        documented = None if default_cell.startswith("-") else _code_spans(default_cell)[0]
        assert _as_documented(getattr(settings, field), settings.dagster_home) == documented, name


@pytest.mark.parametrize(
    ("name", "env", "field", "value"),
    [
        ("ATOM_LLM_CHAIN", {"OPENAI_API_KEY": "sk-x"}, "llm_chain", DEFAULT_CHAIN_WITH_KEY),
        ("ATOM_ALERT_SMTP_PORT", {"ATOM_ALERT_SMTP_STARTTLS": "on"}, "alert_smtp_port", 587),
    ],
)
def test_defaults_that_depend_on_another_variable_are_what_the_readme_says(
    monkeypatch: pytest.MonkeyPatch, name: str, env: dict[str, str], field: str, value: Any
) -> None:
    without, conditional = _code_spans(_readme_table()[name][0])[:2]
    assert str(getattr(load_settings(), field)) == without
    assert getattr(_load_with(monkeypatch, env), field) == value
    assert str(value) == conditional


def test_the_chain_defaults_on_whether_a_key_is_set_and_a_set_chain_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().llm_chain == DEFAULT_CHAIN_WITHOUT_KEY
    monkeypatch.setenv("OPENAI_API_KEY", "")  # set but empty is unset
    assert load_settings().llm_chain == DEFAULT_CHAIN_WITHOUT_KEY
    assert _load_with(monkeypatch, {"OPENAI_API_KEY": "sk-x"}).llm_chain == DEFAULT_CHAIN_WITH_KEY
    assert _load_with(monkeypatch, {"ATOM_LLM_CHAIN": " heuristic "}).llm_chain == "heuristic"


def test_empty_means_the_default_and_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _load_with(
        monkeypatch,
        {
            "ATOM_MAILBOXES_PER_RUN": "",
            "ATOM_GRAPH_MAILBOXES": " Alice@Contoso.com, ,bob@contoso.com ",
            "ATOM_LLM_KEYS": "Kay.Mann@enron.com=KAY_KEY, enron.com=ENRON_KEY",
            "ATOM_END_DATE": "2002-07-01",
            "ATOM_LLM_RPM": "97.5",
            "DAGSTER_HOME": "/srv/dagster",
        },
    )
    assert settings.mailboxes_per_run == 5
    assert settings.graph_mailboxes == ("Alice@Contoso.com", "bob@contoso.com")
    assert settings.llm_keys == {"kay.mann@enron.com": "KAY_KEY", "enron.com": "ENRON_KEY"}
    assert settings.end_date == dt.date(2002, 7, 1)
    assert settings.llm_rpm == 97.5
    assert settings.database_url == "sqlite:////srv/dagster/atom_pipelines.sqlite"
    assert settings.graph_export_dir == Path("/srv/dagster/exports")


def test_settings_are_validated_once_per_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_settings()
    assert load_settings() is first  # the load's validation is what every later call gets
    monkeypatch.setenv("ATOM_LLM_CONCURRENCY", "9")
    assert load_settings() is not first and load_settings().llm_concurrency == 9
    monkeypatch.delenv("ATOM_LLM_CONCURRENCY")
    assert load_settings() is first


# -- secrets ---------------------------------------------------------------------------------------------


def test_secrets_reach_resources_only_as_env_var_names(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql+psycopg2://atom:{DATABASE_PASSWORD}@db.example/atom"
    settings = _load_with(
        monkeypatch,
        {
            **SECRETS,
            "ATOM_DATABASE_URL": url,
            "ATOM_ALERT_SMTP_HOST": "smtp.example",
            "ATOM_ALERT_SMTP_FROM": "dagster@atom.test",
            "ATOM_ALERT_SMTP_TO": "analysts@atom.test",
        },
    )
    resources = build_resources(settings)
    source, store, extractor, alerts = (resources[k] for k in ("mail_source", "store", "extractor", "alert_channels"))
    expected = [
        (source, "tenant_id", "ATOM_GRAPH_TENANT_ID"),
        (source, "client_id", "ATOM_GRAPH_CLIENT_ID"),
        (source, "client_secret", "ATOM_GRAPH_CLIENT_SECRET"),
        (source, "gate_database_url", "ATOM_DATABASE_URL"),
        (store, "database_url", "ATOM_DATABASE_URL"),
        (alerts, "teams_webhook_url", "ATOM_ALERT_TEAMS_WEBHOOK_URL"),
        (alerts, "slack_webhook_url", "ATOM_ALERT_SLACK_WEBHOOK_URL"),
        (alerts, "smtp_password", "ATOM_ALERT_SMTP_PASSWORD"),
    ]
    for resource, field, name in expected:
        value = getattr(resource, field)
        assert isinstance(value, EnvVar) and value.env_var_name == name, (type(resource).__name__, field)
    assert extractor.key_env == "OPENAI_API_KEY"  # the key's variable, read when a request is made
    configs = json.dumps({key: resource.model_dump() for key, resource in resources.items()}, default=str)
    held = json.dumps(settings.model_dump(exclude={"database_url"}), default=str) + repr(settings)
    for text in (configs, held):
        assert not [secret for secret in SECRETS.values() if secret in text]
        assert DATABASE_PASSWORD not in text


def test_a_secret_named_in_another_case_still_reaches_the_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings match names in any case; EnvVar looks them up exactly, so it gets the name as set."""
    settings = _load_with(
        monkeypatch,
        {"atom_graph_tenant_id": "t", "ATOM_GRAPH_CLIENT_ID": "c", "Atom_Graph_Client_Secret": "graph-s3cret"},
    )
    assert settings.graph_configured
    source = build_mail_source(settings)
    assert isinstance(source, GraphMailSource) and source.client_secret.env_var_name == "Atom_Graph_Client_Secret"
    resolved = source.process_config_and_initialize()  # as Dagster resolves it for a run
    assert (resolved.tenant_id, resolved.client_secret) == ("t", "graph-s3cret")


def test_graph_needs_all_three_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = _load_with(
        monkeypatch,
        {"ATOM_GRAPH_TENANT_ID": "t", "ATOM_GRAPH_CLIENT_ID": "c", "ATOM_MAIL_EXPORT_DIR": str(tmp_path)},
    )
    source = build_mail_source(settings)
    assert isinstance(source, ExportMailSource) and source.export_dir == str(tmp_path)


def test_alert_settings_reach_the_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    channels = build_alert_channels(
        _load_with(
            monkeypatch,
            {
                "ATOM_ALERT_SMTP_HOST": "smtp.example",
                "ATOM_ALERT_SMTP_STARTTLS": "yes",
                "ATOM_ALERT_SMTP_FROM": "dagster@atom.test",
                "ATOM_ALERT_SMTP_TO": "analysts@atom.test, oncall@atom.test",
                "ATOM_ALERT_SILENCED": "no_quarantined_records",
                "ATOM_UI_BASE_URL": "https://dagster.atom.test",
            },
        )
    )
    assert (channels.smtp_port, channels.smtp_starttls) == (587, True)
    assert channels.smtp_to == ["analysts@atom.test", "oncall@atom.test"]
    assert channels.configured_channels() == ["email"]
    assert channels.is_silenced("No_Quarantined_Records")
    assert channels.run_url("r1") == "https://dagster.atom.test/runs/r1"


# -- no stray reader ---------------------------------------------------------------------------------------


def _package_modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)


def test_every_atom_variable_the_package_names_is_a_setting() -> None:
    """A module that mentions an ATOM_* variable (code, message or docstring) mentions one the model holds;
    a name ending in `_` (as in `ATOM_ALERT_*`) is a prefix of some. A retired one is named only where the
    load refuses it (config.py)."""
    stray: dict[str, list[str]] = {}
    for path in _package_modules():
        for name in set(re.findall(r"\bATOM_[A-Z0-9_]*", path.read_text())):
            known = any(v.startswith(name) for v in VARIABLES) if name.endswith("_") else name in VARIABLES
            known = known or (name in RETIRED_VARIABLES and path.name == "config.py")
            if not known:
                stray.setdefault(name, []).append(str(path.relative_to(REPO_ROOT)))
    assert stray == {}


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ" and _is_name(node.value, "os")) or (
        _is_name(node, "environ")
    )


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _environment_reads(tree: ast.AST) -> list[tuple[int, str | None]]:
    """(line, variable) of every read of one variable; None when the name is computed."""
    reads: list[tuple[int, ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_environ(node.value):
            reads.append((node.lineno, node.slice))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr in ("get", "pop", "setdefault")
                and _is_environ(func.value)
            ):
                reads.append((node.lineno, node.args[0]))
            elif (isinstance(func, ast.Attribute) and func.attr == "getenv" and _is_name(func.value, "os")) or (
                _is_name(func, "getenv")
            ):
                reads.append((node.lineno, node.args[0]))
        elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
            reads.append((node.lineno, node.left))
    return [(line, key.value if isinstance(key, ast.Constant) else None) for line, key in reads]


def test_the_environment_reader_finds_reads() -> None:
    """The scan below would pass vacuously if it recognized nothing."""
    code = "import os\nos.environ['ATOM_A']\nos.environ.get('ATOM_B')\nos.getenv(name)\n'ATOM_C' in os.environ\n"
    found = sorted(_environment_reads(ast.parse(code)), key=lambda read: read[0])
    assert found == [(2, "ATOM_A"), (3, "ATOM_B"), (4, None), (5, "ATOM_C")]


#: Reads with a computed name allowed outside config.py, and why.
COMPUTED_READS = {
    # The API key of the variable the settings name (OPENAI_API_KEY or an ATOM_LLM_KEYS entry), read when a
    # request is made so that the key itself never enters config.
    "atom_pipelines/extraction/extractor.py": 1,
}


def test_no_module_but_config_reads_a_setting_from_the_environment() -> None:
    settings_names = set(VARIABLES)
    literal: list[str] = []
    computed: dict[str, int] = {}
    for path in _package_modules():
        relative = str(path.relative_to(REPO_ROOT))
        if relative == "atom_pipelines/config.py":
            continue
        for line, name in _environment_reads(ast.parse(path.read_text())):
            if name is None:
                computed[relative] = computed.get(relative, 0) + 1
            elif name.upper().startswith(config.ENV_PREFIX) or name.upper() in settings_names:
                literal.append(f"{relative}:{line} reads {name}")
    assert literal == []
    assert computed == COMPUTED_READS
