"""Every setting the package reads from the environment, in one validated model: :class:`Settings`.

:func:`load_settings` reads and validates them. The code location calls it when it loads (``partitions.py``
and ``definitions.py`` at import), so a bad value stops the load with one :class:`SettingsError` that names
every bad variable, the value given and what the variable accepts, instead of failing each run later.

Secrets are not values here: for the three Graph credentials, ``OPENAI_API_KEY``, the Teams and Slack
webhook URLs and the SMTP password the model records only the name of the variable that holds one (None
when unset), and ``resources.py`` passes them to the resources as ``dagster.EnvVar``, so no secret reaches
run config, the UI or an error message. No other module reads ``os.environ`` for an ``ATOM_*`` variable
(``atom_pipelines_tests/test_settings.py`` holds every module to that).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# The settings check ATOM_LLM_CHAIN and ATOM_LLM_KEYS with the extractor's own grammar (stdlib only, no
# clients; the one layer below this module), so the load and the runs cannot disagree on a valid chain.
from atom_pipelines.provider_chain import (
    DEFAULT_CHAIN_WITH_KEY,
    DEFAULT_CHAIN_WITHOUT_KEY,
    DEFAULT_KEY_ENV,
    is_reasoning_model,
    parse_chain,
    parse_key_map,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

#: The sample export that ships with the repo: the embedded default source.
DEFAULT_EXPORT_DIR = REPO_ROOT / "data"

#: The corpus and the sample begin in December 2000; deployments set their own start.
DEFAULT_START_DATE = dt.date(2000, 12, 1)

ENV_PREFIX = "ATOM_"

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


# -- the value types: one parser per kind, shared by every variable of that kind --------------------------


def _boolean(value: Any) -> Any:
    """The one boolean parser: true/false, 1/0, yes/no, on/off, in any case (pydantic's own bool also takes
    t/f/y/n, which reads like a typo in a deployment file)."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise PydanticCustomError("boolean_word", "not a boolean word")
    return value


def _whole_number(value: Any) -> Any:
    # pydantic's int takes "6.0"; a setting that says 6.0 was probably meant as something else.
    if isinstance(value, str):
        if not re.fullmatch(r"[+-]?\d+", value.strip()):
            raise PydanticCustomError("whole_number", "not a whole number")
        return int(value.strip())
    return value


def _iso_day(value: Any) -> Any:
    # date.fromisoformat also reads 20001201 and 2000-W48-5; a partition start is written YYYY-MM-DD.
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise PydanticCustomError("iso_day", "not YYYY-MM-DD")
        try:
            return dt.date.fromisoformat(text)
        except ValueError as exc:
            raise PydanticCustomError("iso_day", "no such day") from exc
    return value


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _address_pairs(value: Any) -> Any:
    """``left=right`` pairs, comma-separated; each side stripped (ATOM_GRAPH_ALIASES, ATOM_GRAPH_NEVER_MERGE)."""
    if not isinstance(value, str):
        return value
    pairs = []
    for entry in (item.strip() for item in value.split(",")):
        if not entry:
            continue
        left, sep, right = entry.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise ValueError(f"entry {entry!r} is not left=right")
        pairs.append((left.strip(), right.strip()))
    return tuple(pairs)


def _http_url(value: Any) -> Any:
    if isinstance(value, str):
        parsed = urlparse(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise PydanticCustomError("http_url", "not an http(s) URL with a host")
        return value.strip()
    return value


def _key_map(value: Any) -> Any:
    # ChainConfigError is a ValueError: pydantic reports its message, which names the bad entry.
    return parse_key_map(value) if isinstance(value, str) else value


Boolean = Annotated[bool, BeforeValidator(_boolean)]
WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
IsoDay = Annotated[dt.date, BeforeValidator(_iso_day)]
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]
HttpUrl = Annotated[str, BeforeValidator(_http_url)]
KeyMap = Annotated[dict[str, str], NoDecode, BeforeValidator(_key_map)]
Pairs = Annotated[tuple[tuple[str, str], ...], NoDecode, BeforeValidator(_address_pairs)]

#: Refresh intervals of entity_graph that a cron schedule can hold evenly (minutes that divide an hour).
GRAPH_REFRESH_MINUTES = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)
_ADDRESS = re.compile(r"^[^@\s,=]+@[^@\s,=]+\.[^@\s,=]+$")


def _setting(
    default: Any = None,
    *,
    accepts: str,
    description: str,
    alias: str | None = None,
    sensitive: bool = False,
    derived: bool = False,
    **constraints: Any,
) -> Any:
    """A field with what it accepts (for error messages and the README) and what it means.

    ``derived``: the default depends on other settings; the field's validator computes it from None.
    ``sensitive``: its value may hold a password, so errors do not show it and repr leaves it out.
    """
    extra: dict[str, Any] = {"accepts": accepts, "sensitive": sensitive}
    return Field(
        default,
        description=description,
        validation_alias=alias,
        json_schema_extra=extra,
        validate_default=derived,
        repr=not sensitive,
        **constraints,
    )


def _secret(name: str, description: str) -> Any:
    """A secret: the model holds the name of the variable it was found under, never its value."""
    extra = {
        "accepts": "a secret (any value): passed to resources as EnvVar, never held by the settings",
        "secret": name,
    }
    return Field(None, description=description, validation_alias=name, json_schema_extra=extra)


class Settings(BaseSettings):
    """The deployment's settings. Field order matters: a field's validator sees only the fields above it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        # A variable set but empty means "the default", as `${NAME:-default}` reads in a shell.
        env_ignore_empty=True,
        # Our own message (SettingsError) shows the values it may show; pydantic's would show them all.
        hide_input_in_errors=True,
        frozen=True,
    )

    _database_url_var: str | None = PrivateAttr(default=None)

    # -- where things live ---------------------------------------------------------------------------------
    dagster_home: Path = _setting(
        REPO_ROOT / ".dagster_home",
        alias="DAGSTER_HOME",
        accepts="a directory path",
        description="the Dagster instance directory; the SQLite store and the GraphML export default into it",
    )
    database_url: str = _setting(
        derived=True,
        sensitive=True,
        accepts="a SQLAlchemy database URL, e.g. postgresql+psycopg2://user:password@host/db",
        description="the store; passed to resources as EnvVar when set, so the UI shows only the variable's name",
    )
    mail_export_dir: Path = _setting(
        DEFAULT_EXPORT_DIR,
        accepts="a directory path",
        description="directory of *.jsonl Graph message objects with a mailbox field (the source without Graph)",
    )
    graph_export_dir: Path = _setting(
        derived=True,
        accepts="a directory path",
        description="where entity_graph writes its exports (GraphML, GEXF, node-link JSON) and its picture",
    )

    # -- partitions and runs -------------------------------------------------------------------------------
    start_date: IsoDay = _setting(
        DEFAULT_START_DATE,
        accepts="a day as YYYY-MM-DD",
        description="first day synced: a mailbox's catch-up (history) sync starts here",
    )
    end_date: IsoDay | None = _setting(
        accepts="a day as YYYY-MM-DD after ATOM_START_DATE",
        description="exclusive last day synced, for a finished export; unset: up to yesterday (UTC)",
    )
    mailboxes_per_run: WholeNumber = _setting(
        5,
        ge=1,
        accepts="an integer >= 1",
        description="mailboxes per run of a backfill (BackfillPolicy.multi_run) and of the history syncs "
        "register_mailboxes launches",
    )
    daily_mailboxes_per_run: WholeNumber = _setting(
        500,
        ge=1,
        accepts="an integer >= 1",
        description="mailboxes per run of mail_to_links_daily (10,000 mailboxes: 20 runs a day)",
    )
    history_sync_on_register: Boolean = _setting(
        True,
        accepts="a boolean: true/false, 1/0, yes/no, on/off",
        description="registering a mailbox also launches the sync of its history",
    )
    daily_sync_hour: WholeNumber = _setting(
        6,
        ge=0,
        le=23,
        accepts="an hour of the day in UTC, an integer 0-23",
        description="when mail_to_links_daily syncs the previous UTC day of every mailbox",
    )
    daily_sync_minute: WholeNumber = _setting(
        0, ge=0, le=59, accepts="a minute of the hour, an integer 0-59", description="minute of ATOM_DAILY_SYNC_HOUR"
    )
    freshness_max_days_behind: WholeNumber = _setting(
        2,
        ge=0,
        accepts="a number of days, an integer >= 0",
        description="mailboxes_fresh fails for a mailbox whose latest synced day is further behind the latest "
        "complete day",
    )
    max_none_found_share: float = _setting(
        0.5,
        ge=0,
        le=1,
        allow_inf_nan=False,
        accepts="a share, a number 0-1",
        description='above this share of "nothing found" answers a partition\'s WARN check turns yellow',
    )
    max_degraded_share: float = _setting(
        0.05,
        ge=0,
        le=1,
        allow_inf_nan=False,
        accepts="a share, a number 0-1",
        description="above this share of messages answered by the heuristic because every model failed, a "
        "partition fails its blocking ERROR check",
    )
    max_ungrounded_share: float = _setting(
        0.25,
        ge=0,
        le=1,
        allow_inf_nan=False,
        accepts="a share, a number 0-1",
        description="above this share of model-listed entities that the message does not support, a "
        "partition's WARN check turns yellow",
    )

    # -- where steps execute -------------------------------------------------------------------------------
    executor: Literal["multiprocess", "in_process", "celery", "k8s"] = _setting(
        "multiprocess",
        accepts="one of multiprocess, in_process, celery, k8s",
        description="where a run's steps execute: subprocesses of the run worker, the run worker itself, "
        "Celery workers (dagster-celery), or one Kubernetes Job per step (dagster-k8s)",
    )
    celery_broker_url: str = _setting(
        "amqp://guest:guest@127.0.0.1:5672//",
        sensitive=True,
        accepts="a Celery broker URL, e.g. amqp://user:password@host:5672//",
        description="the broker the celery executor sends steps through and the workers read (RabbitMQ)",
    )
    celery_backend_url: str = _setting(
        "rpc://",
        sensitive=True,
        accepts="a Celery result backend URL: rpc:// (results over the broker) or redis://host:6379/0",
        description="where Celery workers put each step's task result for the run worker that waits on it",
    )

    # -- the entity graph ----------------------------------------------------------------------------------
    graph_aliases: Pairs = _setting(
        (),
        accepts="a comma-separated list of alias@domain=canonical@domain",
        description="addresses of one person: the alias's mentions count as the canonical address's (the only "
        "way two addresses become one person)",
    )
    graph_never_merge: Pairs = _setting(
        (),
        accepts="a comma-separated list of name=address",
        description="undo a name merge: a body name reducing to this name is never merged into this address",
    )
    graph_auto_refresh: Boolean = _setting(
        True,
        accepts="a boolean: true/false, 1/0, yes/no, on/off",
        description="the entity_graph_freshness sensor starts running (false: stopped until turned on in the UI)",
    )
    graph_refresh_minutes: WholeNumber = _setting(
        15,
        accepts=f"a number of minutes, one of {', '.join(map(str, GRAPH_REFRESH_MINUTES))}",
        description="entity_graph is rebuilt at most once per interval, after entity_links changed and once no "
        "run or backfill of entity_links is in progress",
    )
    graph_edge_messages: WholeNumber = _setting(
        20,
        ge=1,
        accepts="an integer >= 1",
        description="message ids kept per graph edge (graph_edge_messages), the latest first",
    )
    graph_full_rebuild_share: float = _setting(
        0.05,
        ge=0,
        le=1,
        allow_inf_nan=False,
        accepts="a share, a number 0-1",
        description="an entity_graph build that changes more than this share of the edges recomputes "
        "communities and betweenness; smaller changes keep them (new nodes join their strongest neighbour's)",
    )
    graph_full_rebuild_hours: float = _setting(
        24,
        gt=0,
        allow_inf_nan=False,
        accepts="a number of hours > 0",
        description="communities and betweenness are recomputed at least this often",
    )
    graph_min_merge_share: float = _setting(
        0.02,
        ge=0,
        le=1,
        allow_inf_nan=False,
        accepts="a share, a number 0-1",
        description="below this share of body-name mentions merged into a person, the WARN check "
        "name_merge_share_in_band turns yellow (resolution suddenly merging nothing)",
    )
    graph_max_merge_share: float = _setting(
        0.9,
        ge=0,
        le=1,
        allow_inf_nan=False,
        accepts="a share, a number 0-1 (above ATOM_GRAPH_MIN_MERGE_SHARE)",
        description="above this share the same check turns yellow (resolution suddenly merging everything)",
    )

    # -- Microsoft Graph -----------------------------------------------------------------------------------
    graph_tenant_id_var: str | None = _secret("ATOM_GRAPH_TENANT_ID", "Entra ID tenant of the Graph app")
    graph_client_id_var: str | None = _secret("ATOM_GRAPH_CLIENT_ID", "the Graph app's (client) id")
    graph_client_secret_var: str | None = _secret("ATOM_GRAPH_CLIENT_SECRET", "the Graph app's client secret")
    graph_authority_host: HttpUrl = _setting(
        "https://login.microsoftonline.com",
        accepts="an http(s) URL",
        description="the identity platform (a sovereign cloud, or a test server)",
    )
    graph_api_url: HttpUrl = _setting(
        "https://graph.microsoft.com/v1.0",
        accepts="an http(s) URL",
        description="any Graph-compatible server; TLS is always verified (system store, or REQUESTS_CA_BUNDLE)",
    )
    graph_mailboxes: CommaList = _setting(
        (),
        accepts="a comma-separated list of mailboxes",
        description="mailboxes to sync from Graph (registered by register_mailboxes; case does not matter)",
    )
    graph_page_size: WholeNumber = _setting(
        250, ge=1, le=1000, accepts="an integer 1-1000 (Graph's $top limit)", description="$top per Graph page"
    )
    graph_delta_folders: CommaList = _setting(
        ("inbox", "sentitems"),
        min_length=1,
        accepts="a comma-separated list of at least one mail folder",
        description="folders whose delta the graph_delta_sync sensor follows",
    )

    # -- LLM extraction ------------------------------------------------------------------------------------
    openai_api_key_var: str | None = _secret(DEFAULT_KEY_ENV, "the default LLM key, read at call time")
    openai_base_url: HttpUrl | None = _setting(
        alias="OPENAI_BASE_URL",
        accepts="an http(s) URL",
        description="any OpenAI-compatible server (Azure OpenAI, vLLM, Ollama); unset: OpenAI",
    )
    llm_reasoning_models: CommaList = _setting(
        (),
        accepts="a comma-separated list of model names",
        description="more models never used for extraction, beside the o-series and the GPT-5 family "
        "(gpt-5-chat excepted), matched in any case and with any provider prefix",
    )
    llm_chain: str = _setting(
        derived=True,
        accepts="a comma-separated list of providers, each 'openai:<model>' or 'heuristic', at least one of them "
        "not a reasoning model",
        description="extraction providers, tried in order per message until one succeeds; default "
        f"{DEFAULT_CHAIN_WITH_KEY} when OPENAI_API_KEY is set, else {DEFAULT_CHAIN_WITHOUT_KEY}",
    )
    llm_keys: KeyMap = _setting(
        {},
        accepts="a comma-separated list of mailbox-or-domain=ENV_VAR",
        description="bring your own key: which variable holds the key for whose mail (mailbox, then domain, "
        "then OPENAI_API_KEY)",
    )
    llm_concurrency: WholeNumber = _setting(
        4, ge=1, accepts="an integer >= 1", description="messages extracted at once within a run"
    )
    llm_rpm: float | None = _setting(
        gt=0,
        allow_inf_nan=False,
        accepts="a number > 0",
        description="client-side requests-per-minute pacing per key (the provider's x-ratelimit-* headers are "
        "honoured too); unset: no pacing",
    )
    llm_budget_tokens_per_partition: WholeNumber | None = _setting(
        ge=1,
        accepts="a number of tokens, an integer >= 1",
        description="stop before a mailbox-day spends more tokens, and fail the run saying what was spent",
    )
    llm_budget_tokens_per_run: WholeNumber | None = _setting(
        ge=1,
        accepts="a number of tokens, an integer >= 1",
        description="stop before a run spends more tokens, and fail the run saying what was spent",
    )

    # -- analyst alerts ------------------------------------------------------------------------------------
    alert_teams_webhook_url_var: str | None = _secret("ATOM_ALERT_TEAMS_WEBHOOK_URL", "Teams incoming webhook")
    alert_slack_webhook_url_var: str | None = _secret("ATOM_ALERT_SLACK_WEBHOOK_URL", "Slack incoming webhook")
    alert_smtp_password_var: str | None = _secret("ATOM_ALERT_SMTP_PASSWORD", "password of ATOM_ALERT_SMTP_USERNAME")
    alert_smtp_host: str | None = _setting(accepts="a host name", description="SMTP server for e-mail alerts")
    alert_smtp_starttls: Boolean = _setting(
        False, accepts="a boolean: true/false, 1/0, yes/no, on/off", description="STARTTLS before sending"
    )
    alert_smtp_port: WholeNumber = _setting(
        derived=True,
        ge=1,
        le=65535,
        accepts="a port number, an integer 1-65535",
        description="SMTP port; default 587 with ATOM_ALERT_SMTP_STARTTLS, else 25",
    )
    alert_smtp_from: str | None = _setting(
        derived=True,
        accepts="an e-mail address (required with ATOM_ALERT_SMTP_HOST)",
        description="sender of e-mail alerts",
    )
    alert_smtp_to: CommaList = _setting(
        (),
        derived=True,
        accepts="a comma-separated list of e-mail addresses (required with ATOM_ALERT_SMTP_HOST)",
        description="recipients of e-mail alerts",
    )
    alert_smtp_username: str | None = _setting(
        accepts="a user name (requires ATOM_ALERT_SMTP_PASSWORD)", description="SMTP AUTH user; unset: no login"
    )
    alert_silenced: CommaList = _setting(
        (),
        accepts="a comma-separated list of check names and/or mailboxes",
        description="never alerted (counted in the sensor's log); case does not matter",
    )
    ui_base_url: HttpUrl = _setting(
        "http://localhost:3000", accepts="an http(s) URL", description="where alert links to runs point"
    )

    # -- validators --------------------------------------------------------------------------------------------

    @field_validator(
        "graph_tenant_id_var",
        "graph_client_id_var",
        "graph_client_secret_var",
        "openai_api_key_var",
        "alert_teams_webhook_url_var",
        "alert_slack_webhook_url_var",
        "alert_smtp_password_var",
        mode="before",
    )
    @classmethod
    def _where_the_secret_is(cls, value: Any, info: ValidationInfo) -> str | None:
        # The value (the secret) is dropped here; what resources need is the variable's name as it is set,
        # since EnvVar looks it up case-sensitively and this model matches names in any case.
        return variable_as_set(_secret_name(cls.model_fields[info.field_name or ""]))

    @field_validator("database_url", mode="wrap")
    @classmethod
    def _database_url(cls, value: Any, handler: Any, info: ValidationInfo) -> str:
        if value is None:
            home = info.data.get("dagster_home", REPO_ROOT / ".dagster_home")
            return f"sqlite:///{home / 'atom_pipelines.sqlite'}"
        url = handler(value).strip()
        try:
            make_url(url)
        except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
            raise PydanticCustomError("database_url", "not a SQLAlchemy URL") from exc
        return url

    @field_validator("graph_export_dir", mode="wrap")
    @classmethod
    def _graph_export_dir(cls, value: Any, handler: Any, info: ValidationInfo) -> Path:
        if value is None:
            return info.data.get("dagster_home", REPO_ROOT / ".dagster_home") / "exports"
        return handler(value)

    @field_validator("graph_aliases")
    @classmethod
    def _aliases_are_addresses(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        pairs = tuple((alias.lower(), canonical.lower()) for alias, canonical in value)
        for alias, canonical in pairs:
            for address in (alias, canonical):
                if not _ADDRESS.match(address):
                    raise ValueError(f"{address!r} is not an e-mail address")
            if alias == canonical:
                raise ValueError(f"{alias!r} is an alias of itself")
        aliases = [alias for alias, _ in pairs]
        if len(set(aliases)) != len(aliases):
            raise ValueError("an alias is given twice")
        return pairs

    @field_validator("graph_never_merge")
    @classmethod
    def _never_merge_addresses(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        for _name, address in value:
            if not _ADDRESS.match(address.lower()):
                raise ValueError(f"{address!r} is not an e-mail address")
        return tuple((name, address.lower()) for name, address in value)

    @field_validator("graph_refresh_minutes")
    @classmethod
    def _refresh_divides_an_hour(cls, value: int) -> int:
        if value not in GRAPH_REFRESH_MINUTES:
            raise ValueError(f"{value} does not divide an hour")
        return value

    @field_validator("graph_max_merge_share")
    @classmethod
    def _band(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("graph_min_merge_share")
        if low is not None and value < low:
            raise ValueError(f"ATOM_GRAPH_MIN_MERGE_SHARE is {low}")
        return value

    @field_validator("end_date")
    @classmethod
    def _end_after_start(cls, value: dt.date | None, info: ValidationInfo) -> dt.date | None:
        start = info.data.get("start_date")
        if value is not None and start is not None and value <= start:
            raise ValueError(f"ATOM_START_DATE is {start.isoformat()}")
        return value

    @field_validator("llm_chain", mode="wrap")
    @classmethod
    def _chain(cls, value: Any, handler: Any, info: ValidationInfo) -> str:
        if value is None:
            return DEFAULT_CHAIN_WITH_KEY if info.data.get("openai_api_key_var") else DEFAULT_CHAIN_WITHOUT_KEY
        chain = handler(value).strip()
        specs = parse_chain(chain)  # ChainConfigError (a ValueError) names the entry that is no provider
        extra = ",".join(info.data.get("llm_reasoning_models", ()))
        if all(spec.kind == "openai" and is_reasoning_model(spec.model, extra) for spec in specs):
            raise ValueError("every provider is a reasoning model, which extraction never asks")
        return chain

    @field_validator("alert_smtp_port", mode="wrap")
    @classmethod
    def _smtp_port(cls, value: Any, handler: Any, info: ValidationInfo) -> int:
        if value is None:
            return 587 if info.data.get("alert_smtp_starttls") else 25
        return handler(value)

    @field_validator("alert_smtp_from", "alert_smtp_to", mode="wrap")
    @classmethod
    def _required_with_smtp_host(cls, value: Any, handler: Any, info: ValidationInfo) -> Any:
        # Checked at load: an SMTP host without a sender or recipients would drop every e-mail alert.
        result = handler(value)
        if info.data.get("alert_smtp_host") and not result:
            raise ValueError("ATOM_ALERT_SMTP_HOST is set, so e-mail alerts need it")
        return result

    @field_validator("alert_smtp_username")
    @classmethod
    def _login_needs_password(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and not info.data.get("alert_smtp_password_var"):
            raise ValueError("ATOM_ALERT_SMTP_PASSWORD is not set")
        return value

    # -- what the resources ask ----------------------------------------------------------------------------

    @property
    def graph_configured(self) -> bool:
        """Graph is the mail source when its three credentials are set (docs/architecture.md, "Contracts")."""
        return bool(self.graph_tenant_id_var and self.graph_client_id_var and self.graph_client_secret_var)

    @property
    def database_url_var(self) -> str | None:
        """The variable holding the database URL as set (it may hold a password), None for the default."""
        return self._database_url_var

    @model_validator(mode="after")
    def _note_where_the_database_url_is(self) -> Settings:
        # Noted when the settings are read, as the secrets' variables are: resources pass it as EnvVar.
        if "database_url" in self.model_fields_set:
            self._database_url_var = variable_as_set(self.variable("database_url"))
        return self

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of a field, upper-case as documented."""
        info = cls.model_fields[field]
        alias = info.validation_alias
        return alias.upper() if isinstance(alias, str) else f"{ENV_PREFIX}{field}".upper()

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Every variable the package reads, upper-case, to its field name, in the model's order."""
        return {cls.variable(field): field for field in cls.model_fields}

    @classmethod
    def secret_variables(cls) -> set[str]:
        return {_secret_name(info) for info in cls.model_fields.values() if _secret_name(info)}

    @classmethod
    def accepts(cls, field: str) -> str:
        return str(_extra(cls.model_fields[field])["accepts"])


def _extra(info: FieldInfo) -> dict[str, Any]:
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}


def _secret_name(info: FieldInfo) -> str:
    return str(_extra(info).get("secret") or "")


def variable_as_set(name: str) -> str | None:
    """The name under which the environment holds ``name`` (exactly, else in another case, as the settings
    match names), None when it is unset or empty."""
    if os.environ.get(name):
        return name
    return next((key for key, value in os.environ.items() if key.upper() == name and value), None)


class SettingsError(ValueError):
    """Settings that do not validate: one line per bad variable (its value, unless it may hold a secret,
    and what it accepts). Raised by :func:`load_settings`, so the code location does not load."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = f"{len(problems)} variable{'s' if len(problems) != 1 else ''}"
        super().__init__(f"invalid settings ({count}; see the README's Configuration):\n" + "\n".join(problems))

    @classmethod
    def from_validation_error(cls, error: ValidationError) -> SettingsError:
        by_alias = {name.lower(): field for name, field in Settings.variables().items()}
        problems: dict[str, str] = {}
        for item in error.errors():
            key = str(item["loc"][0]).lower() if item["loc"] else ""
            field = key if key in Settings.model_fields else by_alias.get(key)
            if field is None:  # not a field's error (none is raised today): pydantic's own words
                problems.setdefault(key, item["msg"])
                continue
            name = Settings.variable(field)
            info = Settings.model_fields[field]
            # What the user typed (pydantic's input may already be converted, e.g. '5000' to 5000).
            where = variable_as_set(name)
            if where is None:  # a default that does not fit the settings above it
                given = f"{name} (unset)"
            elif _extra(info).get("sensitive"):
                given = f"{name} (value not shown: it may hold a password)"
            else:
                given = f"{name}={os.environ[where]!r}"
            line = f"{given} must be {Settings.accepts(field)}"
            if item["type"] == "value_error" and not _extra(info).get("sensitive"):  # e.g. which chain entry
                line += f": {item['ctx']['error']}"
            problems.setdefault(field, line)  # one line per variable, the first reason
        return cls(list(problems.values()))


#: Variables an earlier release read, with what replaced them. Set, they fail the load: ignoring a tuning
#: variable a deployment still sets would change its runs without a word.
RETIRED_VARIABLES = {
    "ATOM_MAX_PARTITIONS_PER_RUN": "runs are per mailbox since the mailbox partition scheme: set "
    "ATOM_MAILBOXES_PER_RUN (backfills, history syncs) or ATOM_DAILY_MAILBOXES_PER_RUN (the daily sync)",
}


def _environment_key() -> tuple[tuple[str, str], ...]:
    """What the settings depend on: the variables the model reads (secrets only as set or not) and any
    retired one."""
    names, secrets = Settings.variables(), Settings.secret_variables()
    key = []
    for name, value in os.environ.items():
        upper = name.upper()
        if upper in RETIRED_VARIABLES and value:
            key.append((upper, value))
        elif upper in names:
            key.append((name, ("set" if value else "") if upper in secrets else value))
    return tuple(sorted(key))


def load_settings() -> Settings:
    """The settings of this process, validated; raises :class:`SettingsError` naming every bad variable.

    Validated once per distinct environment: a deployment's environment does not change, so the code
    location validates when it loads and every later call is a cache hit, while a test that monkeypatches
    a variable gets settings for it on its next call (no cache to clear).
    """
    return _load(_environment_key())


@functools.lru_cache(maxsize=32)
def _load(environment: tuple[tuple[str, str], ...]) -> Settings:
    retired = [f"{name} is retired: {RETIRED_VARIABLES[name]}" for name, _ in environment if name in RETIRED_VARIABLES]
    if retired:
        raise SettingsError(retired)
    try:
        return Settings()
    except ValidationError as exc:
        # Not chained: pydantic's message would repeat every problem, without our wording.
        raise SettingsError.from_validation_error(exc) from None


def database_url() -> str:
    """The store's URL (``ATOM_DATABASE_URL``, else the SQLite file in ``DAGSTER_HOME``), for tools outside
    the code location that open the store themselves (the store's CLI, Alembic's env.py)."""
    return load_settings().database_url
