"""Analyst alerts: one sensor, ``analyst_alerts``, that tells analysts once about every failed asset check
(severity ERROR and WARN) and every failed run, on Microsoft Teams, Slack and e-mail as configured.

What an alert says. A check alert names the check, its asset, its severity, how many partitions failed,
one line per failing mailbox-day (the first ``PARTITION_LINES``; the full count is always given) and a
link to the run in the UI (``{ATOM_UI_BASE_URL}/runs/{run_id}``). Our checks put the failing partitions in
their metadata (``failures``: ``"<YYYY-MM-DD>|<mailbox>" -> what failed``, ``failed_partitions``: the
count; see ``_check`` in assets.py), so one evaluation in a 31-day range run is one alert with many lines,
not 31 alerts. A run alert names the mailbox and days of the run, its failed steps and the error.

Decisions (where the issue left a choice):

- **The unit is a finished run.** Each tick reads the runs that finished (success, failure, cancel) after
  the cursor, from Dagster's run status events (``instance.fetch_run_status_changes``, cursor = event
  storage id, ascending), then each run's check evaluations from that run's event log. Not
  ``get_asset_check_execution_history`` per check key: its record id is given when a check is *planned*
  (the evaluation updates the row), so a watermark on it skips a check planned early and evaluated late in
  a long run; and until a run has finished nobody knows whether it will be retried. Reading per run needs
  no list of check keys, so a check added to any asset is alerted without touching this module.
- **A run failed by a blocking check is reported once: as the check alert**, which carries the run link.
  It gets no second "run failed" alert. A failed run with any step failure that is *not* a blocking-check
  failure (an exception, an error before any step, a worker that died) gets its own run alert as well, so
  a run that failed for another reason is never hidden behind a check alert.
- **Once per failure, not once per retry.** A failed run tagged ``dagster/will_retry=true`` is not
  alerted: it waits in the cursor. Its retry, when it finishes, is alerted with the check failures of the
  whole retry chain (the latest evaluation of each check wins), so a WARN failure in a step the retry did
  not re-execute is not lost. If Dagster decides after all not to retry (the tag turns ``false``), the
  waiting run is alerted then; once the retry is launched (``dagster/auto_retry_run_id``) it stops
  waiting. A failed run without the tag while the instance has run retries enabled also waits a moment:
  Dagster stores the failure event just before it tags the run.
- **Delivery failures fail the tick** (connection refused, HTTP 4xx/5xx, an SMTP error): every channel
  is tried, then the tick raises one error naming each failing channel and its reason (the HTTP status and
  body, the SMTP code; never a webhook URL or a password). A failed tick does not store its cursor, so
  the same alerts are found again on the next tick. So that channels which already got them do not get
  them twice, each channel keeps a ledger of the alert ids it has received on top of the stored cursor,
  written after each delivery to Dagster's own key-value cursor table in the instance storage (the one
  its daemons use; durable, on PostgreSQL too). Ledger entries are stamped with the tick they belong to
  and dropped once a later cursor covers them. There is no in-tick retry: a webhook POST is not
  idempotent, and the next tick (a minute later) is the retry.
- **Silencing** (``ATOM_ALERT_SILENCED``: check names and/or mailboxes): a silenced check is never
  alerted; the lines of silenced mailboxes are left out of an alert (and counted in it), and an alert
  left with no line is not sent. A run alert is silenced when every mailbox of the run is. Each tick logs
  how many alerts it silenced.
- **No channel configured**: the sensor still evaluates, logs every alert it would have sent, advances
  its cursor (the log is the channel) and says so in its skip reason.
- **First tick** (no cursor): looks back ``FIRST_TICK_LOOKBACK``, not over the whole history, so turning
  the sensor on does not replay months of failures.

Runs of every code location on the instance are alerted; check evaluations reported outside a run are not
(this code location evaluates all of its checks inside its assets' steps).
"""

# No `from __future__ import annotations` here: Dagster reads the sensor's annotations at definition time.

import datetime as dt
import json
import os
import smtplib
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlparse

import requests
from dagster import (
    AssetCheckEvaluation,
    ConfigurableResource,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    EnvVar,
    EventLogRecord,
    RunRecord,
    RunsFilter,
    RunStatusChangeRecordsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from dagster_msteams.adaptive_card import AdaptiveCard
from dagster_msteams.card import Card
from dagster_msteams.client import TeamsClient
from dagster_msteams.utils import MSTeamsHyperlink, build_message_with_link
from pydantic import Field

#: The channels, in the order they are tried.
CHANNELS = ("teams", "slack", "email")
DEFAULT_UI_BASE_URL = "http://localhost:3000"
#: Mailbox-day lines listed in one alert; the full count is always given.
PARTITION_LINES = 10
#: Finished runs read per event type per tick; the rest wait for the next tick.
RUNS_PER_TICK = 100
#: How far back the very first tick looks.
FIRST_TICK_LOOKBACK = dt.timedelta(hours=24)
#: A failed run not yet tagged by Dagster's retry logic is taken as final after this long.
RETRY_DECISION_GRACE = dt.timedelta(minutes=5)
#: Characters of an error message or a receiver's answer quoted in an alert or an exception.
QUOTE_CHARS = 300

# Dagster's run tags (public names, documented with run retries and partitioned runs).
WILL_RETRY_TAG = "dagster/will_retry"
AUTO_RETRY_RUN_ID_TAG = "dagster/auto_retry_run_id"
PARENT_RUN_ID_TAG = "dagster/parent_run_id"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
#: Our history sync tags its range runs with the mailbox (see dagster.yaml).
ATOM_MAILBOX_TAG = "atom/mailbox"

#: What a step failure looks like when a blocking check failed (and nothing else did).
BLOCKING_CHECK_FAILURE = "DagsterAssetCheckFailedError"
#: Dagster's wrappers around the error the user code raised.
_WRAPPER_ERRORS = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"}

_LEDGER_KEY = "atom_pipelines/analyst_alerts/delivered/{channel}"

ENV_TEAMS_WEBHOOK_URL = "ATOM_ALERT_TEAMS_WEBHOOK_URL"
ENV_SLACK_WEBHOOK_URL = "ATOM_ALERT_SLACK_WEBHOOK_URL"
ENV_SMTP_PASSWORD = "ATOM_ALERT_SMTP_PASSWORD"


class AlertConfigError(ValueError):
    """The alert settings contradict each other (e.g. an SMTP host without recipients)."""


class AlertDeliveryError(Exception):
    """One channel did not take one alert. The message names the channel and the reason, never a secret."""

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(f"{channel}: {reason}")
        self.channel = channel
        self.reason = reason


class AlertsNotDelivered(Exception):
    """Raised at the end of a tick in which a channel failed: the tick fails and keeps its old cursor."""


# -- what an alert is ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailingPartition:
    """One line of a check alert: a mailbox-day (or whatever key the check used) and what failed there."""

    key: str
    mailbox: str | None
    day: str | None
    detail: str

    def render(self) -> str:
        where = f"{self.mailbox} {self.day}" if self.mailbox and self.day else self.key
        return f"{where}: {self.detail}"


@dataclass(frozen=True)
class Alert:
    """One failure, as the analyst reads it. ``alert_id`` is stable across ticks (it keys the ledgers)."""

    alert_id: str
    kind: str  # "check" or "run"
    severity: str  # "ERROR" or "WARN"
    headline: str
    summary: tuple[str, ...]
    run_id: str
    run_url: str
    check_name: str | None = None
    partitions: tuple[FailingPartition, ...] = ()
    #: The check's own count of failing partitions (complete, while ``partitions`` may be capped).
    partition_count: int = 0
    #: Mailboxes of the run and its mailbox-days in words, for alerts without partition lines.
    mailboxes: frozenset[str] = frozenset()
    run_scope: str = ""
    #: Lines left out because their mailbox is silenced.
    silenced_lines: int = 0

    @property
    def subject(self) -> str:
        """One line: severity, what failed, how many partitions, which mailbox and days."""
        scope = _partition_scope(self.partitions) or self.run_scope
        count = f" in {self.partition_count} partition(s)" if self.partition_count else ""
        return f"{self.headline}{count}" + (f": {scope}" if scope else "")

    def lines(self) -> list[str]:
        """The body: summary, one line per mailbox-day (capped, with the full count), the run link last."""
        lines = list(self.summary)
        shown = self.partitions[:PARTITION_LINES]
        lines += [f"- {p.render()}" for p in shown]
        listed = len(shown) + self.silenced_lines
        if self.partition_count > listed:
            lines.append(f"- ... and {self.partition_count - listed} more ({self.partition_count} in all)")
        if self.silenced_lines:
            lines.append(f"({self.silenced_lines} line(s) of silenced mailboxes left out)")
        lines.append(f"Run: {self.run_url}")
        return lines

    @property
    def text(self) -> str:
        return "\n".join([self.subject, *self.lines()])


# -- where alerts go -----------------------------------------------------------------------------------


def _quote(text: str, *secrets: str | None) -> str:
    """A receiver's answer or an error message, shortened, with any secret replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<secret>")
    text = " ".join(text.split())
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "..."


def _transport_reason(exc: requests.RequestException) -> str:
    """Why a request got no answer, without the URL: requests and urllib3 put the URL (whose path is the
    webhook's secret) into their messages, so only the exception type and the socket's own reason are kept."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        cause = pending.pop(0)
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return f"{type(exc).__name__}: {cause.strerror}"
        # requests wraps urllib3's MaxRetryError (in args), which holds the socket error in .reason or as
        # the cause of its own reason.
        linked = [getattr(cause, "reason", None), cause.__cause__, cause.__context__, *cause.args]
        pending += [item for item in linked if isinstance(item, BaseException)]
    if isinstance(exc, requests.Timeout):
        return f"{type(exc).__name__}: no answer in time"
    return type(exc).__name__


class AlertChannels(ConfigurableResource):
    """Where analyst alerts go: a Microsoft Teams incoming webhook, a Slack incoming webhook and/or e-mail
    over SMTP, each used when configured; plus the UI address for run links and what is silenced.

    Built from the environment by :func:`alert_channels_from_env`; the webhook URLs and the SMTP password
    arrive as ``EnvVar`` so the UI and run config show only the variables' names.
    """

    teams_webhook_url: str | None = Field(default=None, description="Teams incoming webhook (Workflows or legacy).")
    # Slack incoming webhook: a POST of {"text": ...}. dagster-slack only speaks the Web API with a bot
    # token (chat.postMessage), which an incoming webhook does not have, so it does not fit here.
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

    def is_silenced(self, name: str | None) -> bool:
        """Whether a check name or a mailbox is in ``ATOM_ALERT_SILENCED`` (case-insensitive)."""
        return bool(name) and name.strip().lower() in {s.strip().lower() for s in self.silenced}

    def send(self, channel: str, alert: Alert) -> None:
        """Deliver one alert to one channel; raises :class:`AlertDeliveryError` (channel and reason) if the
        receiver refused it or could not be reached."""
        if channel == "teams":
            self._send_teams(alert)
        elif channel == "slack":
            self._post_json("slack", self.slack_webhook_url or "", {"text": alert.text})
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
        link = MSTeamsHyperlink(text="Open the run", url=alert.run_url)
        card: Card | AdaptiveCard
        if legacy:
            card = Card()
            card.add_attachment(build_message_with_link(True, "<br>".join([alert.subject, *alert.lines()[:-1]]), link))
        else:
            card = AdaptiveCard()
            for line in [alert.subject, *alert.lines()[:-1]]:
                card.add_attachment(line)
            card.add_attachment(build_message_with_link(False, "Run:", link))
        # A legacy connector answers 200 with the body "1"; anything else means the card was not posted.
        self._post_json("teams", url, card.payload, expect_body="1" if legacy else None)

    def _post_json(self, channel: str, url: str, payload: Mapping[str, Any], expect_body: str | None = None) -> None:
        try:
            response = requests.post(url, json=payload, timeout=self.timeout_seconds)
        except requests.RequestException as exc:
            reason = _transport_reason(exc)
        else:
            if response.ok and (expect_body is None or response.text.strip() == expect_body):
                return
            reason = f"HTTP {response.status_code} {_quote(response.text, url)}".strip()
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
                f"SMTP {self.smtp_host}:{self.smtp_port}: {type(exc).__name__}: {_quote(str(exc), self.smtp_password)}"
            )
        else:
            if not refused:
                return
            # Some recipients took it, some did not: still a failure, or the others would never know.
            reason = f"SMTP {self.smtp_host}:{self.smtp_port} refused recipient(s) {', '.join(sorted(refused))}"
        raise AlertDeliveryError("email", reason)


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in (os.environ.get(name) or "").split(",") if item.strip()]


def _env_bool(name: str) -> bool:
    value = (os.environ.get(name) or "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name}={value!r} must be true or false")


def alert_channels_from_env() -> AlertChannels:
    """The ``alert_channels`` resource from the ``ATOM_ALERT_*`` variables and ``ATOM_UI_BASE_URL``.

    Secrets (both webhook URLs, the SMTP password) are passed as ``EnvVar`` when set, so they are read by
    the process that sends and never stored in config; a channel whose variables are unset is off. A
    malformed port or STARTTLS flag raises here, at load, naming the variable (as config.py does).
    """

    def secret(name: str) -> Any:
        return EnvVar(name) if os.environ.get(name) else None

    starttls = _env_bool("ATOM_ALERT_SMTP_STARTTLS")
    port = os.environ.get("ATOM_ALERT_SMTP_PORT") or ("587" if starttls else "25")
    if not port.isdigit():
        raise ValueError(f"ATOM_ALERT_SMTP_PORT={port!r} must be a port number")
    return AlertChannels(
        teams_webhook_url=secret(ENV_TEAMS_WEBHOOK_URL),
        slack_webhook_url=secret(ENV_SLACK_WEBHOOK_URL),
        smtp_host=os.environ.get("ATOM_ALERT_SMTP_HOST") or None,
        smtp_port=int(port),
        smtp_from=os.environ.get("ATOM_ALERT_SMTP_FROM") or None,
        smtp_to=_env_list("ATOM_ALERT_SMTP_TO"),
        smtp_username=os.environ.get("ATOM_ALERT_SMTP_USERNAME") or None,
        smtp_password=secret(ENV_SMTP_PASSWORD),
        smtp_starttls=starttls,
        ui_base_url=os.environ.get("ATOM_UI_BASE_URL") or DEFAULT_UI_BASE_URL,
        silenced=_env_list("ATOM_ALERT_SILENCED"),
    )


# -- the cursor and the delivery ledgers ---------------------------------------------------------------


@dataclass(frozen=True)
class AlertCursor:
    """What the sensor has dealt with: the last run status event read (event storage id), failed runs
    waiting for Dagster's retry decision, and the count of successful ticks (it stamps the ledgers)."""

    after_storage_id: int | None = None
    waiting_run_ids: tuple[str, ...] = ()
    tick: int = 0

    @classmethod
    def parse(cls, raw: str | None) -> "AlertCursor":
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            after = data["after"]
            return cls(
                after_storage_id=None if after is None else int(after),
                waiting_run_ids=tuple(str(run_id) for run_id in data["waiting"]),
                tick=int(data["tick"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"the analyst_alerts cursor {raw[:80]!r} is not one this sensor wrote ({exc!r}); clear the "
                f"sensor's cursor in the UI to start again from the last {FIRST_TICK_LOOKBACK}"
            ) from exc

    def serialize(self) -> str:
        return json.dumps({"after": self.after_storage_id, "waiting": list(self.waiting_run_ids), "tick": self.tick})


class _DeliveryLedger:
    """Per channel, the ids of the alerts delivered on top of the stored sensor cursor, so that a tick that
    failed on one channel does not send again to the others when its alerts are found again.

    Kept in the instance's key-value cursor table, written after every delivery. An entry is stamped with
    the tick whose cursor will cover it (stored tick + 1); entries at or below the stored tick are covered
    by the cursor and dropped.
    """

    def __init__(self, instance: DagsterInstance, channels: Sequence[str], stored_tick: int) -> None:
        self._storage = instance.daemon_cursor_storage
        self._stamp = stored_tick + 1
        self._keys = {channel: _LEDGER_KEY.format(channel=channel) for channel in channels}
        stored = self._storage.get_cursor_values(set(self._keys.values()))
        self._delivered: dict[str, dict[str, int]] = {}
        for channel, key in self._keys.items():
            entries = json.loads(stored.get(key) or "{}")
            self._delivered[channel] = {alert_id: stamp for alert_id, stamp in entries.items() if stamp > stored_tick}

    def has(self, channel: str, alert_id: str) -> bool:
        return alert_id in self._delivered[channel]

    def record(self, channel: str, alert_id: str) -> None:
        self._delivered[channel][alert_id] = self._stamp
        self._storage.set_cursor_values({self._keys[channel]: json.dumps(self._delivered[channel], sort_keys=True)})


# -- finding failures ----------------------------------------------------------------------------------


def _finished_run_events(instance: DagsterInstance, after: int | None, since: float | None) -> list[EventLogRecord]:
    """Run success, failure and cancel events after the cursor, oldest first, at most RUNS_PER_TICK of each."""
    streams = [
        instance.fetch_run_status_changes(
            RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after, after_timestamp=since),
            limit=RUNS_PER_TICK,
            ascending=True,
        )
        for event_type in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED)
    ]
    # A stream cut at the limit bounds what is read this tick; otherwise the cursor would move past the
    # cut stream's unread events on the strength of another stream's later ones.
    horizon = min((s.records[-1].storage_id for s in streams if s.has_more and s.records), default=None)
    records = [r for s in streams for r in s.records if horizon is None or r.storage_id <= horizon]
    return sorted(records, key=lambda record: record.storage_id)


def _attempt_state(record: RunRecord, retries_enabled: bool, now: float) -> str:
    """``final`` (alert it now), ``waiting`` (a retry may follow: ask again next tick) or ``retried``
    (the retry is launched and will report, with this attempt's check failures)."""
    run = record.dagster_run
    if not run.is_finished:
        return "waiting"  # the status event is stored a moment before the run's status changes
    if run.status != DagsterRunStatus.FAILURE:
        return "final"
    if run.tags.get(AUTO_RETRY_RUN_ID_TAG):
        return "retried"
    will_retry = (run.tags.get(WILL_RETRY_TAG) or "").lower()
    if will_retry == "true":
        return "waiting"
    if not will_retry and retries_enabled:
        ended = record.end_time or record.update_timestamp.timestamp()
        if now - ended < RETRY_DECISION_GRACE.total_seconds():
            return "waiting"
    return "final"


def _parent_run_id(run: DagsterRun) -> str | None:
    return run.parent_run_id or run.tags.get(PARENT_RUN_ID_TAG)


def _retry_chain(instance: DagsterInstance, run: DagsterRun) -> list[DagsterRun]:
    """The run and the earlier attempts it retries (each tagged will_retry=true), oldest first. A manual
    re-execution of a run that was final is not part of the chain: that run was alerted on its own."""
    chain = [run]
    parent_id = _parent_run_id(run)
    while parent_id and len(chain) <= 50:
        parent = instance.get_run_by_id(parent_id)
        if parent is None or (parent.tags.get(WILL_RETRY_TAG) or "").lower() != "true":
            break
        chain.append(parent)
        parent_id = _parent_run_id(parent)
    return chain[::-1]


def _split_partition_key(key: str | None) -> tuple[str | None, str | None]:
    """``"2001-10-17|kevin.hyatt@enron.com"`` -> (mailbox, day); (None, None) for any other key."""
    day, sep, mailbox = (key or "").partition("|")
    if not sep or not mailbox:
        return None, None
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        return None, None
    return mailbox, day


def _run_scope(run: DagsterRun) -> tuple[frozenset[str], str]:
    """The mailboxes of a run and its mailbox-days in words, from Dagster's partition tags."""
    tags = run.tags
    mailboxes: set[str] = set()
    scope = ""
    if tags.get(PARTITION_TAG):
        mailbox, day = _split_partition_key(tags[PARTITION_TAG])
        mailboxes.update([mailbox] if mailbox else [])
        scope = f"{mailbox} {day}" if mailbox else tags[PARTITION_TAG]
    elif tags.get(RANGE_START_TAG) and tags.get(RANGE_END_TAG):
        (first_box, first_day), (last_box, last_day) = (
            _split_partition_key(tags[RANGE_START_TAG]),
            _split_partition_key(tags[RANGE_END_TAG]),
        )
        mailboxes.update(box for box in (first_box, last_box) if box)
        if first_box and first_box == last_box:
            scope = f"{first_box} {first_day}..{last_day}"
        else:
            scope = f"{tags[RANGE_START_TAG]}..{tags[RANGE_END_TAG]}"
    if tags.get(ATOM_MAILBOX_TAG):
        mailboxes.add(tags[ATOM_MAILBOX_TAG])
        scope = scope or tags[ATOM_MAILBOX_TAG]
    return frozenset(m.lower() for m in mailboxes), scope


def _describe(value: Any) -> str:
    """What failed in one partition, in one line: counts first, then the first few items."""
    if isinstance(value, Mapping):
        parts = []
        for name, item in value.items():
            size = len(item) if isinstance(item, Mapping | list | tuple) else None
            parts.append(f"{name}: {size}" if size is not None else f"{name}: {item}")
        return _quote("; ".join(parts))
    if isinstance(value, list | tuple):
        head = "; ".join(str(item) for item in value[:3])
        more = f" (+{len(value) - 3} more)" if len(value) > 3 else ""
        return _quote(f"{len(value)} item(s): {head}{more}")
    return _quote(str(value))


def _failing_partition(key: str, value: Any) -> FailingPartition:
    mailbox, day = _split_partition_key(key)
    if mailbox is None and "@" in key:
        mailbox = key  # checks keyed by mailbox alone (llm_keys_accepted)
    return FailingPartition(key=key, mailbox=mailbox.lower() if mailbox else None, day=day, detail=_describe(value))


def _partition_scope(partitions: Sequence[FailingPartition]) -> str:
    """The named mailbox-days in words: one mailbox and its first..last day when they share a mailbox."""
    boxes = {p.mailbox for p in partitions}
    days = sorted(p.day for p in partitions if p.day)
    if len(boxes) != 1 or None in boxes or len(days) != len(partitions):
        return ""
    (mailbox,) = boxes
    return f"{mailbox} {days[0]}" if len(days) == 1 else f"{mailbox} {days[0]}..{days[-1]}"


def _check_alert(resource: AlertChannels, run: DagsterRun, evaluation: AssetCheckEvaluation) -> Alert:
    metadata = {name: value.value for name, value in evaluation.metadata.items()}
    failures = metadata.get("failures")
    if not isinstance(failures, Mapping):
        # A check that names what failed under another key (e.g. llm_keys_accepted's "unusable").
        failures = next((value for value in metadata.values() if isinstance(value, Mapping)), {})
    partitions = tuple(_failing_partition(str(key), value) for key, value in failures.items())
    count = metadata.get("failed_partitions")
    count = count if isinstance(count, int) and not isinstance(count, bool) else len(partitions)
    asset = evaluation.asset_key.to_user_string()
    mailboxes, run_scope = _run_scope(run)
    return Alert(
        alert_id=f"check/{run.run_id}/{asset}/{evaluation.check_name}",
        kind="check",
        severity=evaluation.severity.value,
        headline=f"[{evaluation.severity.value}] check {evaluation.check_name} on {asset} failed",
        summary=(evaluation.description,) if evaluation.description else (),
        run_id=run.run_id,
        run_url=resource.run_url(run.run_id),
        check_name=evaluation.check_name,
        partitions=partitions,
        partition_count=count,
        mailboxes=mailboxes,
        run_scope=run_scope,
    )


def _error_text(error: Any) -> str:
    """The error the user code raised (under Dagster's wrappers), first line only."""
    while error is not None and error.cls_name in _WRAPPER_ERRORS and error.cause is not None:
        error = error.cause
    if error is None:
        return "no error recorded"
    first = next((line for line in error.message.strip().splitlines() if line.strip()), "")
    if not first.startswith(error.cls_name) and not first.split(":")[0].endswith(error.cls_name):
        first = f"{error.cls_name}: {first}"
    return _quote(first)


def _run_alert(
    resource: AlertChannels, run: DagsterRun, step_failures: Sequence[Any], run_failure: EventLogRecord | None
) -> Alert | None:
    """The alert for a failed run, or None when blocking checks alone failed it (their alerts say so)."""
    other = [
        event
        for event in step_failures
        if event.step_failure_data.error is None or event.step_failure_data.error.cls_name != BLOCKING_CHECK_FAILURE
    ]
    if step_failures and not other:
        return None
    summary = [f"job {run.job_name}, failure reason {run.tags.get('dagster/failure_reason', 'unknown')}"]
    if other:
        steps = sorted({event.step_key for event in other})
        summary.append(f"failed step(s) ({len(steps)}): {', '.join(steps)}")
        errors = list(dict.fromkeys(_error_text(event.step_failure_data.error) for event in other))
        summary += [f"error: {text}" for text in errors[:3]]
    else:
        data = run_failure.event_log_entry.dagster_event.event_specific_data if run_failure else None
        error = getattr(data, "error", None)
        message = run_failure.event_log_entry.message if run_failure else ""
        summary.append("no step failed: the run itself failed")
        summary.append(f"error: {_error_text(error) if error else _quote(message or 'no error recorded')}")
    blocked = len(step_failures) - len(other)
    if blocked:
        summary.append(f"{blocked} step(s) also stopped by a blocking check (see the check alert)")
    mailboxes, run_scope = _run_scope(run)
    return Alert(
        alert_id=f"run/{run.run_id}",
        kind="run",
        severity="ERROR",
        headline="[ERROR] run failed",
        summary=tuple(summary),
        run_id=run.run_id,
        run_url=resource.run_url(run.run_id),
        mailboxes=mailboxes,
        run_scope=run_scope,
    )


def _alerts_for_chain(instance: DagsterInstance, chain: Sequence[DagsterRun], resource: AlertChannels) -> list[Alert]:
    """The alerts of a final attempt: the failed checks of the chain (latest evaluation of each check
    wins) and, if the final attempt failed for another reason than a blocking check, the run alert."""
    final = chain[-1]
    latest: dict[tuple[str, str], tuple[DagsterRun, AssetCheckEvaluation]] = {}
    step_failures: list[Any] = []
    run_failure: EventLogRecord | None = None
    for attempt in chain:
        records = instance.get_records_for_run(
            attempt.run_id,
            of_type={
                DagsterEventType.ASSET_CHECK_EVALUATION,
                DagsterEventType.STEP_FAILURE,
                DagsterEventType.RUN_FAILURE,
            },
        ).records
        for record in records:
            event = record.event_log_entry.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.event_specific_data
                latest[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = (attempt, evaluation)
            elif attempt is final and event.event_type == DagsterEventType.STEP_FAILURE:
                step_failures.append(event)
            elif attempt is final and event.event_type == DagsterEventType.RUN_FAILURE:
                run_failure = record
    alerts = [_check_alert(resource, run, evaluation) for run, evaluation in latest.values() if not evaluation.passed]
    if final.status == DagsterRunStatus.FAILURE:
        run_alert = _run_alert(resource, final, step_failures, run_failure)
        if run_alert:
            alerts.append(run_alert)
    return alerts


@dataclass(frozen=True)
class Scan:
    """What one tick found: the alerts, in the order the runs finished, and the cursor after them."""

    alerts: list[Alert]
    cursor: AlertCursor
    waiting: int = 0
    runs_read: int = 0


def scan_for_alerts(
    instance: DagsterInstance, cursor: AlertCursor, resource: AlertChannels, now: float | None = None
) -> Scan:
    """The alerts of every run that finished after ``cursor`` (and of runs that stopped waiting for a retry)."""
    now = dt.datetime.now(dt.timezone.utc).timestamp() if now is None else now
    since = None if cursor.after_storage_id is not None else now - FIRST_TICK_LOOKBACK.total_seconds()
    events = _finished_run_events(instance, cursor.after_storage_id, since)
    run_ids = list(dict.fromkeys([*cursor.waiting_run_ids, *(event.run_id for event in events)]))
    records = (
        {record.dagster_run.run_id: record for record in instance.get_run_records(RunsFilter(run_ids=run_ids))}
        if run_ids
        else {}
    )
    alerts: list[Alert] = []
    waiting: list[str] = []
    covered: set[str] = set()
    for run_id in run_ids:
        record = records.get(run_id)
        if record is None:
            continue  # deleted since it finished
        state = _attempt_state(record, instance.run_retries_enabled, now)
        if state == "waiting":
            waiting.append(run_id)
        elif state == "final":
            chain = _retry_chain(instance, record.dagster_run)
            covered.update(run.run_id for run in chain[:-1])
            alerts += _alerts_for_chain(instance, chain, resource)
    still_waiting = tuple(run_id for run_id in waiting if run_id not in covered)
    after = events[-1].storage_id if events else cursor.after_storage_id
    return Scan(
        alerts=alerts,
        cursor=AlertCursor(after_storage_id=after, waiting_run_ids=still_waiting, tick=cursor.tick),
        waiting=len(still_waiting),
        runs_read=len(events),
    )


def apply_silence(resource: AlertChannels, alerts: Iterable[Alert]) -> tuple[list[Alert], list[Alert]]:
    """(to send, silenced): silenced checks, lines of silenced mailboxes, runs of silenced mailboxes."""
    to_send: list[Alert] = []
    silenced: list[Alert] = []
    for alert in alerts:
        if resource.is_silenced(alert.check_name):
            silenced.append(alert)
        elif alert.partitions:
            kept = tuple(p for p in alert.partitions if not resource.is_silenced(p.mailbox))
            if kept:
                to_send.append(replace(alert, partitions=kept, silenced_lines=len(alert.partitions) - len(kept)))
            else:
                silenced.append(alert)
        elif alert.mailboxes and all(resource.is_silenced(mailbox) for mailbox in alert.mailboxes):
            silenced.append(alert)
        else:
            to_send.append(alert)
    return to_send, silenced


def _deliver(
    context: SensorEvaluationContext,
    resource: AlertChannels,
    channels: Sequence[str],
    alerts: Sequence[Alert],
    tick: int,
) -> dict[str, str]:
    """Send each alert to each channel that has not had it; returns channel -> why it failed. A failing
    channel is not tried again this tick (it is down or refusing); the other channels still get theirs."""
    ledger = _DeliveryLedger(context.instance, channels, tick)
    failed: dict[str, str] = {}
    for channel in channels:
        owed = [alert for alert in alerts if not ledger.has(channel, alert.alert_id)]
        for position, alert in enumerate(owed):
            try:
                resource.send(channel, alert)
            except AlertDeliveryError as exc:
                failed[channel] = f"{exc.reason} ({len(owed) - position} of {len(alerts)} alert(s) not delivered)"
                break
            ledger.record(channel, alert.alert_id)
            context.log.info(f"alert sent to {channel}: {alert.subject}")
    return failed


@sensor(
    name="analyst_alerts",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Tells analysts once about each failed asset check (ERROR and WARN) and each failed run, "
    "on Teams, Slack and e-mail as configured (ATOM_ALERT_*).",
)
def analyst_alerts(context: SensorEvaluationContext, alert_channels: AlertChannels) -> SensorResult:
    """See the module docstring for what is alerted, once, and how delivery failures are handled."""
    cursor = AlertCursor.parse(context.cursor)
    channels = alert_channels.configured_channels()
    scan = scan_for_alerts(context.instance, cursor, alert_channels)
    alerts, silenced = apply_silence(alert_channels, scan.alerts)
    notes = []
    if silenced:
        context.log.info(
            f"{len(silenced)} alert(s) silenced by ATOM_ALERT_SILENCED: " + "; ".join(a.subject for a in silenced)
        )
        notes.append(f"{len(silenced)} silenced")
    if scan.waiting:
        notes.append(f"{scan.waiting} failed run(s) waiting for their retry")
    suffix = f" ({', '.join(notes)})" if notes else ""
    next_cursor = replace(scan.cursor, tick=cursor.tick + 1).serialize()
    if not channels:
        for alert in alerts:
            context.log.warning(f"no alert channel configured; would send:\n{alert.text}")
        return SensorResult(
            cursor=next_cursor,
            skip_reason=f"no alert channel configured (set {ENV_TEAMS_WEBHOOK_URL}, {ENV_SLACK_WEBHOOK_URL} or "
            f"ATOM_ALERT_SMTP_HOST): {len(alerts)} alert(s) logged, not sent{suffix}",
        )
    failed = _deliver(context, alert_channels, channels, alerts, cursor.tick)
    if failed:
        raise AlertsNotDelivered(
            "alert delivery failed, the cursor stays where it was and the next tick sends again to the "
            "failed channel(s) only: " + "; ".join(f"{channel}: {reason}" for channel, reason in failed.items())
        )
    if not alerts:
        return SensorResult(
            cursor=next_cursor, skip_reason=f"no new failures in {scan.runs_read} finished run(s){suffix}"
        )
    return SensorResult(cursor=next_cursor, skip_reason=f"sent {len(alerts)} alert(s) to {', '.join(channels)}{suffix}")
