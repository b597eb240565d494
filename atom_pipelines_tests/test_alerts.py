"""Analyst alerts: the ``analyst_alerts`` sensor tells analysts once about each failed check and each
failed run, on Teams, Slack and e-mail, and never fails silently.

The failures are real: partitions materialized with a bad export record (the blocking
``no_quarantined_records`` check fails, and with it the run), a missing export directory (the run fails for
another reason), and a model that answers "nothing here" for every message through the OpenAI test server
(the WARN check ``none_found_share_sane``). The receivers are real servers on 127.0.0.1 (an HTTP server for
the webhooks, aiosmtpd for e-mail, with STARTTLS and AUTH where a test needs them), reached through the real
clients. Edges as production bugs #4 and #5 taught: zero runs, one failure, many in one tick, a run that
will be retried, the next tick with the returned cursor, a receiver that answers 500 and then recovers, a
receiver that is down, an SMTP server that refuses the login. Instance storage is SQLite, except the
500-then-recovers test, which runs on a PostgreSQL instance (the delivery ledger lives in its key-value table).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import trustme
from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    EnvVar,
    SensorResult,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from atom_pipelines.alerts import (
    Alert,
    AlertChannels,
    AlertConfigError,
    AlertDeliveryError,
    AlertsNotDelivered,
    FailingPartition,
    analyst_alerts,
)
from atom_pipelines.alerts.model import describe_failure, failing_partition
from atom_pipelines.config import load_settings
from atom_pipelines.extraction.extractor import EntityExtractor
from atom_pipelines.resources import build_alert_channels
from atom_pipelines.tags import FIRST_DAY_TAG, LAST_DAY_TAG
from atom_pipelines_tests.conftest import corpus_records, write_export
from atom_pipelines_tests.helpers import PARTITIONED_CHAIN, check_results, materialize_days, resources
from atom_pipelines_tests.servers.openai_server import Behaviour, OpenAICompatibleServer
from atom_pipelines_tests.servers.receivers import SmtpReceiver, WebhookReceiver

MAILBOX = "kevin.hyatt@enron.com"
OTHER = "steven.harris@enron.com"
QUIET, QUIET_DAY = "sally.beck@enron.com", "2001-05-08"
THIRD = "daren.farmer@enron.com"
DAY = "2001-10-17"
UI = "http://dagster.atom.test:3000"
ALERT_ENV = [
    "ATOM_ALERT_TEAMS_WEBHOOK_URL",
    "ATOM_ALERT_SLACK_WEBHOOK_URL",
    "ATOM_ALERT_SMTP_HOST",
    "ATOM_ALERT_SMTP_PORT",
    "ATOM_ALERT_SMTP_FROM",
    "ATOM_ALERT_SMTP_TO",
    "ATOM_ALERT_SMTP_USERNAME",
    "ATOM_ALERT_SMTP_PASSWORD",
    "ATOM_ALERT_SMTP_STARTTLS",
    "ATOM_ALERT_SILENCED",
    "ATOM_UI_BASE_URL",
]


@pytest.fixture(autouse=True)
def clean_alert_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets configures the channels."""
    for name in ALERT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ATOM_UI_BASE_URL", UI)


@pytest.fixture(scope="module")
def hyatt_records() -> list[dict]:
    return corpus_records({MAILBOX})


@pytest.fixture
def bad_export(tmp_path: Path, hyatt_records: list[dict]) -> Path:
    """Kevin Hyatt's mail plus one record without a time zone: its day is unknown, so every day of the
    mailbox is quarantined and no_quarantined_records fails wherever the mailbox is materialized."""
    naive = {**hyatt_records[0], "id": "naive-date", "receivedDateTime": "2001-10-17T10:00:00"}
    return write_export(tmp_path / "bad", [*hyatt_records, naive])


@pytest.fixture
def good_export(tmp_path: Path, hyatt_records: list[dict]) -> Path:
    return write_export(tmp_path / "good", hyatt_records)


@dataclass
class Receivers:
    teams: WebhookReceiver
    slack: WebhookReceiver
    smtp: SmtpReceiver

    def counts(self) -> tuple[int, int, int]:
        """Accepted deliveries per channel: (teams, slack, e-mail)."""
        return len(self.teams.accepted()), len(self.slack.accepted()), len(self.smtp.messages)

    def texts(self) -> tuple[list[str], list[str], list[str]]:
        teams = [json.dumps(post.json) for post in self.teams.accepted()]
        slack = [post.json["text"] for post in self.slack.accepted()]
        mail = [f"{m.subject}\n{m.body}" for m in self.smtp.messages]
        return teams, slack, mail


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receivers]:
    """All three channels configured through the environment, as a deployment configures them."""
    # Teams Workflows webhooks answer 202 with an empty body; Slack answers 200 "ok".
    with WebhookReceiver(status=202, body="") as teams, WebhookReceiver() as slack, SmtpReceiver() as smtp:
        monkeypatch.setenv("ATOM_ALERT_TEAMS_WEBHOOK_URL", teams.url("/workflows/teams-s3cret"))
        monkeypatch.setenv("ATOM_ALERT_SLACK_WEBHOOK_URL", slack.url("/services/T0/B0/slack-s3cret"))
        monkeypatch.setenv("ATOM_ALERT_SMTP_HOST", smtp.host)
        monkeypatch.setenv("ATOM_ALERT_SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("ATOM_ALERT_SMTP_FROM", "dagster@atom.test")
        monkeypatch.setenv("ATOM_ALERT_SMTP_TO", "analysts@atom.test, oncall@atom.test")
        yield Receivers(teams, slack, smtp)


def evaluate(
    instance: DagsterInstance, cursor: str | None = None, channels: AlertChannels | None = None
) -> SensorResult:
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"alert_channels": channels or build_alert_channels(load_settings())},
    )
    result = analyst_alerts(context)
    assert isinstance(result, SensorResult)
    return result


def fail_with_quarantine(
    instance: DagsterInstance, export: Path, database_url: str, first: str, last: str | None = None
) -> str:
    result = materialize_days(instance, resources(export, database_url), MAILBOX, first, last, raise_on_error=False)
    assert not result.success and check_results(result)["no_quarantined_records"] is False
    return result.run_id


def fail_without_export(instance: DagsterInstance, tmp_path: Path, database_url: str, mailbox: str) -> str:
    result = materialize_days(
        instance, resources(tmp_path / "nowhere", database_url), mailbox, DAY, raise_on_error=False
    )
    assert not result.success and not result.get_asset_check_evaluations()
    return result.run_id


def test_zero_runs_and_zero_failures_send_nothing(
    instance: DagsterInstance, receivers: Receivers, good_export: Path, sqlite_database_url: str
) -> None:
    empty = evaluate(instance)
    assert empty.skip_reason.skip_message == "no new failures in 0 finished run(s) and 0 sensor tick(s)"

    assert materialize_days(instance, resources(good_export, sqlite_database_url), MAILBOX, DAY).success
    passed = evaluate(instance, empty.cursor)

    assert passed.skip_reason.skip_message == "no new failures in 1 finished run(s) and 0 sensor tick(s)"
    assert receivers.counts() == (0, 0, 0)
    assert (
        evaluate(instance, passed.cursor).skip_reason.skip_message
        == "no new failures in 0 finished run(s) and 0 sensor tick(s)"
    )


def test_one_blocking_check_failure_is_one_alert_per_channel_with_mailbox_day_count_and_link(
    instance: DagsterInstance, receivers: Receivers, bad_export: Path, sqlite_database_url: str
) -> None:
    run_id = fail_with_quarantine(instance, bad_export, sqlite_database_url, DAY)

    first = evaluate(instance)

    assert first.skip_reason.skip_message == "sent 1 alert(s) to teams, slack, email"
    assert receivers.counts() == (1, 1, 1)
    expected = [
        "[ERROR] check no_quarantined_records on outlook_messages failed in 1 partition(s)",
        f"{MAILBOX} {DAY}: 1 item(s): export.jsonl:59:",
        f"{UI}/runs/{run_id}",
    ]
    for texts in receivers.texts():
        (text,) = texts
        assert all(part in text for part in expected), text
        # The run failed only because of the blocking check: no second "run failed" alert.
        assert "run failed" not in text
    (post,) = receivers.teams.accepted()
    assert post.path == "/workflows/teams-s3cret"
    assert post.json["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    (mail,) = receivers.smtp.messages
    assert (
        mail.subject
        == f"[ERROR] check no_quarantined_records on outlook_messages failed in 1 partition(s): {MAILBOX} {DAY}"
    )
    assert (mail.mail_from, mail.rcpt_tos) == ("dagster@atom.test", ["analysts@atom.test", "oncall@atom.test"])

    second = evaluate(instance, first.cursor)
    assert second.skip_reason.skip_message == "no new failures in 0 finished run(s) and 0 sensor tick(s)"
    assert receivers.counts() == (1, 1, 1)


def test_many_failures_in_one_tick_each_alerted_once(
    instance: DagsterInstance,
    receivers: Receivers,
    bad_export: Path,
    good_export: Path,
    sqlite_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one_day = fail_with_quarantine(instance, bad_export, sqlite_database_url, DAY)
    # A 30-day range run: one check evaluation names 30 failing partitions.
    month = fail_with_quarantine(instance, bad_export, sqlite_database_url, "2001-11-01", "2001-11-30")
    no_export = fail_without_export(instance, tmp_path, sqlite_database_url, OTHER)
    # A model gone quiet: every message answered "nothing here". The run succeeds; the WARN check fails. A
    # day of sally.beck's: five messages of enough text to judge (extraction/quality.py).
    quiet_export = write_export(
        tmp_path / "quiet", [r for r in corpus_records({QUIET}) if r["receivedDateTime"].startswith(QUIET_DAY)]
    )
    monkeypatch.setenv("ATOM_ALERT_TEST_OPENAI_KEY", "sk-alert-test")
    with OpenAICompatibleServer(accepted_keys={"sk-alert-test"}) as server:
        server.set_default(Behaviour("valid", answer={"entities": [], "relations": []}))
        quiet = EntityExtractor(
            chain="openai:gpt-4o-mini",
            openai_base_url=server.base_url,
            key_env="ATOM_ALERT_TEST_OPENAI_KEY",
            max_retries=0,
        )
        warned = materialize_days(
            instance, resources(quiet_export, sqlite_database_url, extractor=quiet), QUIET, QUIET_DAY
        )
    assert warned.success and check_results(warned)["none_found_share_sane"] is False

    first = evaluate(instance)

    assert first.skip_reason.skip_message == "sent 4 alert(s) to teams, slack, email"
    assert receivers.counts() == (4, 4, 4)
    subjects = [mail.subject for mail in receivers.smtp.messages]
    assert subjects == [
        f"[ERROR] check no_quarantined_records on outlook_messages failed in 1 partition(s): {MAILBOX} {DAY}",
        f"[ERROR] check no_quarantined_records on outlook_messages failed in 30 partition(s): {MAILBOX} 2001-11-01..2001-11-30",
        f"[ERROR] run failed: {OTHER} {DAY}",
        f"[WARN] check none_found_share_sane on email_entities failed in 1 partition(s): {QUIET} {QUIET_DAY}",
    ]
    teams, slack, mail = receivers.texts()
    for texts in (teams, slack, mail):
        for text, run_id in zip(texts, [one_day, month, no_export, warned.run_id], strict=True):
            assert f"{UI}/runs/{run_id}" in text
    # The range alert lists the first 10 mailbox-days and gives the full count.
    month_lines = slack[1].splitlines()
    assert [line for line in month_lines if line.startswith(f"- {MAILBOX} ")] == [
        f"- {MAILBOX} 2001-11-{day:02d}: " + month_lines[2].split(": ", 1)[1] for day in range(1, 11)
    ]
    assert "- ... and 20 more (30 in all)" in month_lines
    # The run that failed for another reason names its step and the error.
    assert "failed step(s) (1): outlook_messages" in slack[2] and "MailSourceError" in slack[2]
    assert "5 of 5 messages with text were answered with no entity from the text" in slack[3]

    assert (
        evaluate(instance, first.cursor).skip_reason.skip_message
        == "no new failures in 0 finished run(s) and 0 sensor tick(s)"
    )
    assert receivers.counts() == (4, 4, 4)


def test_a_run_that_will_be_retried_is_alerted_on_its_final_attempt_only(
    receivers: Receivers, bad_export: Path, sqlite_database_url: str
) -> None:
    retries = {"run_retries": {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": True}}
    with instance_for_test(overrides=retries) as instance:
        first_attempt = fail_with_quarantine(instance, bad_export, sqlite_database_url, DAY)
        # Dagster itself decided: the run has a retry left.
        assert instance.get_run_by_id(first_attempt).tags["dagster/will_retry"] == "true"

        waiting = evaluate(instance)
        assert (
            waiting.skip_reason.skip_message
            == "no new failures in 1 finished run(s) and 0 sensor tick(s) (1 failed run(s) waiting for their retry)"
        )
        assert receivers.counts() == (0, 0, 0)

        # The retry, as the retry daemon launches it (re-execution of the first attempt), with no retry left.
        retry = materialize(
            PARTITIONED_CHAIN,
            instance=instance,
            resources=resources(bad_export, sqlite_database_url),
            partition_key=MAILBOX,
            tags={
                FIRST_DAY_TAG: DAY,
                LAST_DAY_TAG: DAY,
                "dagster/parent_run_id": first_attempt,
                "dagster/root_run_id": first_attempt,
                "dagster/max_retries": "0",
            },
            raise_on_error=False,
        )
        assert instance.get_run_by_id(retry.run_id).tags["dagster/will_retry"] == "false"

        final = evaluate(instance, waiting.cursor)

        assert final.skip_reason.skip_message == "sent 1 alert(s) to teams, slack, email"
        assert receivers.counts() == (1, 1, 1)
        (text,) = receivers.texts()[1]
        assert f"{UI}/runs/{retry.run_id}" in text and first_attempt not in text
        assert json.loads(final.cursor)["waiting"] == []
        assert (
            evaluate(instance, final.cursor).skip_reason.skip_message
            == "no new failures in 0 finished run(s) and 0 sensor tick(s)"
        )


@pytest.fixture
def postgres_instance(postgres_database_url: str) -> Iterator[DagsterInstance]:
    url = sa.engine.make_url(postgres_database_url)
    storage = {
        "postgres_db": {
            "username": url.username or "postgres",
            "password": url.password or "",
            "hostname": url.host or "127.0.0.1",
            "port": url.port or 5432,
            "db_name": url.database,
            "scheme": "postgresql+psycopg2",  # SQLAlchemy 2.1 reads postgresql:// as psycopg 3
        }
    }
    with instance_for_test(overrides={"storage": {"postgres": storage}}) as dagster_instance:
        yield dagster_instance


@pytest.mark.postgres
def test_a_receiver_that_answers_500_fails_the_tick_and_gets_the_alert_once_it_recovers(
    postgres_instance: DagsterInstance, receivers: Receivers, bad_export: Path, sqlite_database_url: str
) -> None:
    fail_with_quarantine(postgres_instance, bad_export, sqlite_database_url, DAY)
    receivers.slack.answer(500, "Internal Server Error")

    for attempt in (1, 2):
        # A failed tick keeps its old cursor: the daemon evaluates again from the same one (here: none).
        with pytest.raises(AlertsNotDelivered) as failed:
            evaluate(postgres_instance)
        message = str(failed.value)
        assert "slack: HTTP 500 Internal Server Error (1 of 1 alert(s) not delivered)" in message
        assert "s3cret" not in message and "teams" not in message and "email" not in message
        # The channels that took the alert are not sent it again; they are told, once, that the sensor fails.
        assert receivers.counts() == (2, 0, 2)
        assert len(receivers.slack.posts) == attempt
    own = receivers.smtp.messages[1]
    assert own.subject == "[ERROR] sensor analyst_alerts failed"
    assert "slack: HTTP 500 Internal Server Error" in own.body and "s3cret" not in own.body

    receivers.slack.answer(200, "ok")
    recovered = evaluate(postgres_instance)

    assert recovered.skip_reason.skip_message == "sent 1 alert(s) to teams, slack, email"
    assert receivers.counts() == (2, 1, 2)
    assert "no_quarantined_records" in receivers.slack.accepted()[0].json["text"]
    assert (
        evaluate(postgres_instance, recovered.cursor).skip_reason.skip_message
        == "no new failures in 0 finished run(s) and 0 sensor tick(s)"
    )
    assert receivers.counts() == (2, 1, 2)


@pytest.fixture
def certificate_authority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """A local CA the SMTP client trusts (through SSL_CERT_FILE, which ssl.create_default_context reads)."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    return ca


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_webhook_and_a_refused_smtp_login_fail_loudly_without_secrets(
    instance: DagsterInstance,
    certificate_authority: trustme.CA,
    tmp_path: Path,
    sqlite_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = fail_without_export(instance, tmp_path, sqlite_database_url, OTHER)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(tls)
    with SmtpReceiver(tls_context=tls, login=("dagster", "right-pw-4711")) as smtp:
        monkeypatch.setenv("ATOM_ALERT_TEAMS_WEBHOOK_URL", f"http://127.0.0.1:{_closed_port()}/workflows/teams-s3cret")
        monkeypatch.setenv("ATOM_ALERT_SMTP_HOST", smtp.host)
        monkeypatch.setenv("ATOM_ALERT_SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("ATOM_ALERT_SMTP_FROM", "dagster@atom.test")
        monkeypatch.setenv("ATOM_ALERT_SMTP_TO", "analysts@atom.test")
        monkeypatch.setenv("ATOM_ALERT_SMTP_STARTTLS", "true")
        monkeypatch.setenv("ATOM_ALERT_SMTP_USERNAME", "dagster")
        monkeypatch.setenv("ATOM_ALERT_SMTP_PASSWORD", "wrong-pw-0815")

        with pytest.raises(AlertsNotDelivered) as failed:
            evaluate(instance)

        message = str(failed.value)
        assert "teams: ConnectionError: Connection refused (1 of 1 alert(s) not delivered)" in message
        assert f"email: SMTP {smtp.host}:{smtp.port}: SMTPAuthenticationError: (535" in message
        assert "s3cret" not in message and "wrong-pw-0815" not in message and failed.value.__context__ is None
        assert smtp.messages == []

        # With the right password the mail goes out over STARTTLS; Teams is still down, so the tick fails again.
        monkeypatch.setenv("ATOM_ALERT_SMTP_PASSWORD", "right-pw-4711")
        with pytest.raises(AlertsNotDelivered, match="teams: ConnectionError") as still:
            evaluate(instance)
        assert "email" not in str(still.value)
        # The run alert, then the sensor's own failure (Teams refusing), told to the channel that works.
        mail, own = smtp.messages
        assert mail.subject == f"[ERROR] run failed: {OTHER} {DAY}" and f"{UI}/runs/{run_id}" in mail.body
        assert own.subject == "[ERROR] sensor analyst_alerts failed" and "teams: ConnectionError" in own.body
        assert "s3cret" not in own.body and "right-pw-4711" not in own.body


def test_without_a_channel_the_sensor_logs_what_it_would_send(
    instance: DagsterInstance, tmp_path: Path, sqlite_database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    run_id = fail_without_export(instance, tmp_path, sqlite_database_url, OTHER)
    capfd.readouterr()

    result = evaluate(instance)
    logged = capfd.readouterr().err

    no_channel = (
        "no alert channel configured (set ATOM_ALERT_TEAMS_WEBHOOK_URL, ATOM_ALERT_SLACK_WEBHOOK_URL or "
        "ATOM_ALERT_SMTP_HOST): {} alert(s) logged, not sent"
    )
    assert result.skip_reason.skip_message == no_channel.format(1)
    assert "would send" in logged and f"[ERROR] run failed: {OTHER} {DAY}" in logged
    assert f"{UI}/runs/{run_id}" in logged
    # The log was the channel: the next tick does not log the same alert again.
    assert evaluate(instance, result.cursor).skip_reason.skip_message == no_channel.format(0)


def test_silenced_checks_and_mailboxes_are_not_alerted(
    instance: DagsterInstance,
    receivers: Receivers,
    bad_export: Path,
    tmp_path: Path,
    sqlite_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ATOM_ALERT_SILENCED", "no_quarantined_records, Steven.Harris@enron.com")
    fail_with_quarantine(instance, bad_export, sqlite_database_url, DAY)  # silenced check
    fail_without_export(instance, tmp_path, sqlite_database_url, OTHER)  # silenced mailbox
    alerted = fail_without_export(instance, tmp_path, sqlite_database_url, THIRD)

    result = evaluate(instance)

    assert result.skip_reason.skip_message == "sent 1 alert(s) to teams, slack, email (2 silenced)"
    assert receivers.counts() == (1, 1, 1)
    (text,) = receivers.texts()[1]
    assert f"[ERROR] run failed: {THIRD} {DAY}" in text and alerted in text


def test_the_sensor_and_its_resource_are_registered_and_secrets_stay_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    from atom_pipelines.definitions import defs

    sensor = defs.resolve_sensor_def("analyst_alerts")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 60
    assert isinstance(defs.resources["alert_channels"], AlertChannels)

    monkeypatch.setenv("ATOM_ALERT_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/s3cret")
    monkeypatch.setenv("ATOM_ALERT_SMTP_PASSWORD", "pw")
    channels = build_alert_channels(load_settings())
    for value, name in (
        (channels.slack_webhook_url, "ATOM_ALERT_SLACK_WEBHOOK_URL"),
        (channels.smtp_password, "ATOM_ALERT_SMTP_PASSWORD"),
    ):
        assert isinstance(value, EnvVar) and value.env_var_name == name
    assert channels.teams_webhook_url is None


def test_a_half_configured_email_channel_fails_the_tick_instead_of_dropping_mail(instance: DagsterInstance) -> None:
    # From the environment this does not load at all (test_settings.py); a resource built by hand still
    # fails the tick rather than logging alerts nobody receives.
    channels = AlertChannels(smtp_host="127.0.0.1", smtp_from="dagster@atom.test")

    with pytest.raises(AlertConfigError, match="ATOM_ALERT_SMTP_HOST is set but ATOM_ALERT_SMTP_TO not"):
        evaluate(instance, channels=channels)


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        # The three shapes our checks write: a list (quarantine), a map of problems (extraction), a sentence.
        (
            f"{DAY}|{MAILBOX}",
            ["a.jsonl:2: invalid JSON", "a.jsonl:3: no id"],
            f"{MAILBOX} {DAY}: 2 item(s): a.jsonl:2: invalid JSON; a.jsonl:3: no id",
        ),
        (
            f"{DAY}|{MAILBOX}",
            {"failed_messages": {"m1": ["x"], "m2": ["y"]}, "no_entities": "3 messages, 0 entities"},
            f"{MAILBOX} {DAY}: failed_messages: 2; no_entities: 3 messages, 0 entities",
        ),
        (
            f"{DAY}|{MAILBOX}",
            "5 of 5 messages with text answered none_found",
            f"{MAILBOX} {DAY}: 5 of 5 messages with text answered none_found",
        ),
        (MAILBOX, "key rejected (401)", f"{MAILBOX}: key rejected (401)"),
    ],
)
def test_a_failing_partition_reads_as_one_line(key: str, value: object, line: str) -> None:
    partition = failing_partition(key, value)
    assert isinstance(partition, FailingPartition)
    assert partition.render() == line
    assert partition.mailbox == MAILBOX
    assert describe_failure(["x"] * 5) == "5 item(s): x; x; x (+2 more)"


def test_a_quote_is_one_line_within_the_limit_and_never_loses_a_long_word() -> None:
    from atom_pipelines.alerts.model import QUOTE_CHARS, quote

    assert quote("HTTP 500\n  upstream   down", "s3cret") == "HTTP 500 upstream down"
    words = quote("word " * 200)
    assert len(words) <= QUOTE_CHARS and words.endswith("...") and words.startswith("word word")
    blob = quote('{"error":"' + "x" * 1000 + '"}')
    assert len(blob) == QUOTE_CHARS and blob.startswith('{"error":"xxx')
    assert quote("token=s3cret refused", "s3cret") == "token=<secret> refused"


SLACK_PATH = "/services/T0/B0/slack-s3cret"
ALERT = Alert(
    alert_id="run:r1",
    kind="run",
    severity="ERROR",
    headline="[ERROR] run failed",
    summary=("failed step(s) (1): outlook_messages",),
    run_id="r1",
    run_url=f"{UI}/runs/r1",
)


def test_slack_gets_its_webhook_json_and_a_refusal_says_the_status_and_body_never_the_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG), WebhookReceiver() as slack:
        channels = AlertChannels(slack_webhook_url=slack.url(SLACK_PATH))
        channels.send("slack", ALERT)
        (post,) = slack.posts
        # Slack's incoming-webhook request: a JSON POST of {"text": ...} to the webhook's own path.
        assert post.path == SLACK_PATH and post.headers["Content-Type"].startswith("application/json")
        assert post.json == {"text": ALERT.text}

        slack.answer(403, "invalid_token")  # what Slack answers for a revoked webhook
        with pytest.raises(AlertDeliveryError) as refused:
            channels.send("slack", ALERT)
    assert (refused.value.channel, refused.value.reason) == ("slack", "HTTP 403 invalid_token")
    assert len(slack.posts) == 2  # one POST each: slack_sdk's own retries are off, the next tick retries
    assert "s3cret" not in caplog.text  # slack_sdk logs the URL at DEBUG unless its logger is kept at INFO


def test_an_unreachable_or_silent_slack_fails_with_urllibs_reason_and_without_the_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # slack_sdk sends with urllib: a refused connection is a URLError around the socket's error.
    refusing = AlertChannels(slack_webhook_url=f"http://127.0.0.1:{_closed_port()}{SLACK_PATH}")
    with caplog.at_level(logging.DEBUG), pytest.raises(AlertDeliveryError) as unreachable:
        refusing.send("slack", ALERT)
    assert str(unreachable.value) == "slack: URLError: Connection refused"
    assert unreachable.value.__context__ is None and "s3cret" not in caplog.text

    # A server that takes the connection and never answers: urllib's read times out.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        waiting = AlertChannels(
            slack_webhook_url=f"http://127.0.0.1:{silent.getsockname()[1]}{SLACK_PATH}", timeout_seconds=0.5
        )
        with pytest.raises(AlertDeliveryError) as timed_out:
            waiting.send("slack", ALERT)
    assert str(timed_out.value) == "slack: TimeoutError: no answer in time"

    with pytest.raises(AlertDeliveryError) as not_http:
        AlertChannels(slack_webhook_url=f"file:///etc{SLACK_PATH}").send("slack", ALERT)
    assert str(not_http.value) == "slack: the webhook URL is not an http(s) URL"
