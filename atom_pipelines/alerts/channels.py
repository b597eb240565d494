"""Where alerts go: the ``alert_channels`` resource and its Teams, Slack and SMTP delivery."""

import logging
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from http.client import HTTPException
from typing import Any
from urllib.parse import urlparse

import requests
from dagster import (
    ConfigurableResource,
)
from dagster_msteams.adaptive_card import AdaptiveCard
from dagster_msteams.card import Card
from dagster_msteams.client import TeamsClient
from dagster_msteams.utils import MSTeamsHyperlink, build_message_with_link
from pydantic import Field
from slack_sdk.errors import SlackRequestError
from slack_sdk.webhook import WebhookClient

from atom_pipelines.alerts.model import Alert, quote

DEFAULT_UI_BASE_URL = "http://localhost:3000"

ENV_TEAMS_WEBHOOK_URL = "ATOM_ALERT_TEAMS_WEBHOOK_URL"
ENV_SLACK_WEBHOOK_URL = "ATOM_ALERT_SLACK_WEBHOOK_URL"


class AlertConfigError(ValueError):
    """The alert settings contradict each other (e.g. an SMTP host without recipients)."""


class AlertDeliveryError(Exception):
    """One channel did not take one alert. The message names the channel and the reason, never a secret."""

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(f"{channel}: {reason}")
        self.channel = channel
        self.reason = reason


#: slack_sdk logs the webhook URL (whose path is the secret) at DEBUG, when its logger's own level is DEBUG or
#: unset; an explicit INFO level keeps that line from being written whatever the root logger's level is.
_SLACK_SDK_LOG = logging.getLogger(f"{__name__}.slack_sdk")
_SLACK_SDK_LOG.setLevel(logging.INFO)


def _transport_reason(exc: BaseException) -> str:
    """Why a request got no answer, without the URL: requests, urllib3 and urllib (under slack_sdk) put the URL
    (whose path is the webhook's secret) into their messages, so only the exception type and the socket's own
    reason are kept."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    timed_out = False
    while pending:
        cause = pending.pop(0)
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return f"{type(exc).__name__}: {cause.strerror}"
        timed_out = timed_out or isinstance(cause, requests.Timeout | TimeoutError)
        # requests wraps urllib3's MaxRetryError (in args), which holds the socket error in .reason or as
        # the cause of its own reason; urllib's URLError holds it in .reason.
        linked = [getattr(cause, "reason", None), cause.__cause__, cause.__context__, *cause.args]
        pending += [item for item in linked if isinstance(item, BaseException)]
    if timed_out:
        return f"{type(exc).__name__}: no answer in time"
    return type(exc).__name__


class AlertChannels(ConfigurableResource):
    """Where analyst alerts go: a Microsoft Teams incoming webhook, a Slack incoming webhook and/or e-mail
    over SMTP, each used when configured; plus the UI address for run links and what is silenced.

    Built from the settings by ``resources.build_alert_channels``; the webhook URLs and the SMTP password
    arrive as ``EnvVar`` so the UI and run config show only the variables' names.
    """

    teams_webhook_url: str | None = Field(default=None, description="Teams incoming webhook (Workflows or legacy).")
    # Slack incoming webhook: a POST of {"text": ...}, through slack_sdk's WebhookClient. dagster-slack only
    # speaks the Web API with a bot token (chat.postMessage), which an incoming webhook does not have.
    slack_webhook_url: str | None = Field(default=None, description="Slack incoming webhook.")
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str | None = None
    smtp_to: list[str] = Field(default_factory=list)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    timeout_seconds: float = Field(default=10.0, description="Per request; a sensor tick has about a minute.")
    ui_base_url: str = DEFAULT_UI_BASE_URL
    silenced: list[str] = Field(default_factory=list, description="Check names and/or mailboxes never alerted.")

    def configured_channels(self) -> list[str]:
        """The channels alerts go to, in order; raises :class:`AlertConfigError` on a half-configured one."""
        channels = []
        if self.teams_webhook_url:
            channels.append("teams")
        if self.slack_webhook_url:
            channels.append("slack")
        if self.smtp_host:
            missing = [
                name
                for name, value in (("ATOM_ALERT_SMTP_FROM", self.smtp_from), ("ATOM_ALERT_SMTP_TO", self.smtp_to))
                if not value
            ]
            if missing:
                raise AlertConfigError(
                    f"ATOM_ALERT_SMTP_HOST is set but {' and '.join(missing)} not: e-mail alerts cannot be sent"
                )
            if self.smtp_username and not self.smtp_password:
                raise AlertConfigError("ATOM_ALERT_SMTP_USERNAME is set but ATOM_ALERT_SMTP_PASSWORD is not")
            channels.append("email")
        return channels

    def run_url(self, run_id: str) -> str:
        """The run's page in the Dagster UI."""
        return f"{self.ui_base_url.rstrip('/')}/runs/{run_id}"

    def sensor_url(self, repository: str, location: str, sensor: str) -> str:
        """The sensor's page in the Dagster UI (its ticks, with their errors)."""
        return f"{self.ui_base_url.rstrip('/')}/locations/{repository}@{location}/sensors/{sensor}"

    def is_silenced(self, name: str | None) -> bool:
        """Whether a check name or a mailbox is in ``ATOM_ALERT_SILENCED`` (case-insensitive)."""
        return bool(name) and name.strip().lower() in {s.strip().lower() for s in self.silenced}

    def send(self, channel: str, alert: Alert) -> None:
        """Deliver one alert to one channel; raises :class:`AlertDeliveryError` (channel and reason) if the
        receiver refused it or could not be reached."""
        if channel == "teams":
            self._send_teams(alert)
        elif channel == "slack":
            self._send_slack(alert)
        elif channel == "email":
            self._send_email(alert)
        else:
            raise AlertConfigError(f"unknown alert channel {channel!r}")

    def _send_teams(self, alert: Alert) -> None:
        url = self.teams_webhook_url or ""
        if not urlparse(url).hostname:
            # TeamsClient.is_legacy_webhook() would put the URL into its error.
            raise AlertDeliveryError("teams", "the webhook URL has no host name")
        # dagster-msteams decides which card a webhook takes (legacy Office 365 connector: hero card;
        # Workflows: adaptive card) and builds it. Its TeamsClient.post_message is not used to send: it
        # raises RequestException(response body) without the HTTP status, and a connection error from it
        # carries the URL.
        legacy = TeamsClient(hook_url=url, timeout=self.timeout_seconds).is_legacy_webhook()
        link = MSTeamsHyperlink(text=f"Open the {alert.link_label.lower()}", url=alert.run_url)
        card: Card | AdaptiveCard
        if legacy:
            card = Card()
            card.add_attachment(build_message_with_link(True, "<br>".join([alert.subject, *alert.lines()[:-1]]), link))
        else:
            card = AdaptiveCard()
            for line in [alert.subject, *alert.lines()[:-1]]:
                card.add_attachment(line)
            card.add_attachment(build_message_with_link(False, f"{alert.link_label}:", link))
        # A legacy connector answers 200 with the body "1"; anything else means the card was not posted.
        self._post_json("teams", url, card.payload, expect_body="1" if legacy else None)

    def _send_slack(self, alert: Alert) -> None:
        url = self.slack_webhook_url or ""
        # No retries of its own (slack_sdk retries a reset connection once by default, after which Slack may
        # have posted the message already): the sensor's next tick retries, and its ledger posts no alert twice.
        client = WebhookClient(url, timeout=self.timeout_seconds, retry_handlers=[], logger=_SLACK_SDK_LOG)
        try:
            response = client.send(text=alert.text)
        except SlackRequestError:
            # Its message holds the URL.
            reason = "the webhook URL is not an http(s) URL"
        except (OSError, HTTPException) as exc:
            # urllib's URLError (an OSError: refused, DNS, TLS), a timeout, or a connection dropped mid-answer.
            reason = _transport_reason(exc)
        else:
            if 200 <= response.status_code < 300:
                return
            reason = f"HTTP {response.status_code} {quote(response.body or '', url)}".strip()
        # Raised outside the except block: the urllib exception, whose chain may hold the URL, is not chained.
        raise AlertDeliveryError("slack", reason)

    def _post_json(self, channel: str, url: str, payload: Mapping[str, Any], expect_body: str | None = None) -> None:
        try:
            response = requests.post(url, json=payload, timeout=self.timeout_seconds)
        except requests.RequestException as exc:
            reason = _transport_reason(exc)
        else:
            if response.ok and (expect_body is None or response.text.strip() == expect_body):
                return
            reason = f"HTTP {response.status_code} {quote(response.text, url)}".strip()
        # Raised outside the except block: the requests exception, whose message holds the URL, is not chained.
        raise AlertDeliveryError(channel, reason)

    def _send_email(self, alert: Alert) -> None:
        message = EmailMessage()
        message["Subject"] = alert.subject
        message["From"] = self.smtp_from or ""
        message["To"] = ", ".join(self.smtp_to)
        message.set_content(alert.text)
        try:
            with smtplib.SMTP(self.smtp_host or "", self.smtp_port, timeout=self.timeout_seconds) as smtp:
                if self.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.smtp_username:
                    smtp.login(self.smtp_username, self.smtp_password or "")
                refused = smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            reason = (
                f"SMTP {self.smtp_host}:{self.smtp_port}: {type(exc).__name__}: {quote(str(exc), self.smtp_password)}"
            )
        else:
            if not refused:
                return
            # Some recipients took it, some did not: still a failure, or the others would never know.
            reason = f"SMTP {self.smtp_host}:{self.smtp_port} refused recipient(s) {', '.join(sorted(refused))}"
        raise AlertDeliveryError("email", reason)
