"""Every resource the code location uses, built from the settings (config.py): the one place where a setting
becomes a resource field.

``definitions.py`` builds its resources here, and so do the cost estimate (``python -m atom_pipelines.estimate``)
and tests that want the deployment's resources, so a resource is configured one way everywhere. Secrets
are passed as ``dagster.EnvVar`` naming the variable the settings found them under: Dagster reads them in
the process that uses them, and the UI and run config show only the names.
"""

from __future__ import annotations

from typing import Any

from dagster import EnvVar

from atom_pipelines.alerts.channels import AlertChannels
from atom_pipelines.config import Settings
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.mail.msgraph import GraphMailSource
from atom_pipelines.mail.source import ExportMailSource, MailSource
from atom_pipelines.store.resource import MailStore


def _secret(variable: str | None) -> Any:
    """An ``EnvVar`` for a secret the settings found set, else None (the feature it belongs to is off)."""
    return EnvVar(variable) if variable else None


def _database_url(settings: Settings) -> Any:
    # A URL set in the environment can hold a password: through EnvVar the UI shows only the variable's
    # name. The default SQLite file holds none and is passed as it is.
    return _secret(settings.database_url_var) or settings.database_url


def build_store(settings: Settings) -> MailStore:
    return MailStore(database_url=_database_url(settings))


def build_mail_source(settings: Settings) -> MailSource:
    """Graph when its three credentials are set, else the export directory (docs/architecture.md, "Contracts")."""
    if not settings.graph_configured:
        return ExportMailSource(export_dir=str(settings.mail_export_dir))
    return GraphMailSource(
        tenant_id=_secret(settings.graph_tenant_id_var),
        client_id=_secret(settings.graph_client_id_var),
        client_secret=_secret(settings.graph_client_secret_var),
        authority_host=settings.graph_authority_host,
        api_url=settings.graph_api_url,
        mailboxes=",".join(settings.graph_mailboxes),
        page_size=settings.graph_page_size,
        delta_folders=",".join(settings.graph_delta_folders),
        gate_database_url=_database_url(settings),
    )


def build_extractor(settings: Settings) -> EntityExtractor:
    return EntityExtractor(
        chain=settings.llm_chain,
        openai_base_url=settings.openai_base_url,
        # The name of the key's variable, as set (the key itself is read when a request is made).
        key_env=settings.openai_api_key_var or EntityExtractor.model_fields["key_env"].default,
        tenant_keys=",".join(f"{who}={variable}" for who, variable in settings.llm_keys.items()),
        reasoning_models=",".join(settings.llm_reasoning_models),
        max_concurrency=settings.llm_concurrency,
        requests_per_minute=settings.llm_rpm,
        budget_tokens_per_partition=settings.llm_budget_tokens_per_partition,
        budget_tokens_per_run=settings.llm_budget_tokens_per_run,
    )


def build_alert_channels(settings: Settings) -> AlertChannels:
    """A channel whose variables are unset is off; the webhook URLs and the SMTP password are secrets."""
    return AlertChannels(
        teams_webhook_url=_secret(settings.alert_teams_webhook_url_var),
        slack_webhook_url=_secret(settings.alert_slack_webhook_url_var),
        smtp_host=settings.alert_smtp_host,
        smtp_port=settings.alert_smtp_port,
        smtp_from=settings.alert_smtp_from,
        smtp_to=list(settings.alert_smtp_to),
        smtp_username=settings.alert_smtp_username,
        smtp_password=_secret(settings.alert_smtp_password_var),
        smtp_starttls=settings.alert_smtp_starttls,
        ui_base_url=settings.ui_base_url,
        silenced=list(settings.alert_silenced),
    )


def build_resources(settings: Settings) -> dict[str, Any]:
    """The code location's resources by key (the keys are contracts: docs/architecture.md)."""
    return {
        "mail_source": build_mail_source(settings),
        "store": build_store(settings),
        "extractor": build_extractor(settings),
        "alert_channels": build_alert_channels(settings),
    }
