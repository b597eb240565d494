"""A failed sensor tick reaches the alert channels once per failure episode (issue 10, item 8): the
registration and delta sensors' failed ticks are read from the instance by ``analyst_alerts``, which alerts
the first failed tick of an episode, not the ones after it, and alerts again once the sensor has recovered
and fails anew; ``analyst_alerts`` reports its own failure from inside the failing tick, once per episode.

The ticks are real: Dagster's sensor daemon code (``execute_sensor_iteration``, the function the daemon
loops over) evaluates the real ``register_mailboxes`` on a real instance, with a mail export directory the
test removes and restores; the clock is frozen and moved on so that each iteration is a new tick. The
receivers are real HTTP servers reached through the real webhook clients.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, SensorResult, build_sensor_context, instance_for_test
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.scheduler.instigation import InstigatorType, TickData, TickStatus
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.sensor import execute_sensor_iteration
from dagster._utils.error import SerializableErrorInfo

from atom_pipelines.alerts import AlertChannels, AlertsNotDelivered, analyst_alerts
from atom_pipelines.alerts.cursor import AlertCursor, TickWatch
from atom_pipelines_tests.conftest import REPO_ROOT, corpus_records, write_export
from atom_pipelines_tests.servers.receivers import WebhookReceiver
from atom_pipelines_tests.tick_definitions import EXPORT_DIR_ENV

log = logging.getLogger(__name__)
UI = "http://dagster.atom.test:3000"
LOCATION = "atom_ticks"
MAILBOX = "kevin.hyatt@enron.com"


class SensorDaemon:
    """One code location's sensors, evaluated as the daemon evaluates them, one iteration per ``tick()``."""

    def __init__(self, instance: DagsterInstance, workspace, export_dir: Path) -> None:  # noqa: ANN001 - Dagster's
        self.instance = instance
        self._workspace = workspace
        self._export_dir = export_dir
        # A frozen clock an hour back, moved on two minutes a tick (past register_mailboxes' 60 s interval).
        self._clock = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            self._clock += dt.timedelta(minutes=2)
            with freeze_time(self._clock):
                list(execute_sensor_iteration(self._workspace, log, None, None))

    def break_source(self) -> None:
        shutil.rmtree(self._export_dir, ignore_errors=True)

    def mend_source(self) -> None:
        write_export(self._export_dir, corpus_records({MAILBOX})[:5])

    def register_ticks(self) -> list:
        (state,) = [
            s
            for s in self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            if s.instigator_name == "register_mailboxes"
        ]
        return sorted(self.instance.get_ticks(state.instigator_origin_id, state.selector_id), key=lambda t: t.tick_id)


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SensorDaemon]:
    export_dir = tmp_path / "export"
    monkeypatch.setenv(EXPORT_DIR_ENV, str(export_dir))
    # Registration only: no history runs for the daemon to launch.
    monkeypatch.setenv("ATOM_HISTORY_SYNC_ON_REGISTER", "false")
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            module_name="atom_pipelines_tests.tick_definitions", attribute="defs", working_directory=str(REPO_ROOT)
        ),
        location_name=LOCATION,
    )
    with (
        instance_for_test() as instance,
        create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as workspace,
    ):
        yield SensorDaemon(instance, workspace, export_dir)


class Alerts:
    """``analyst_alerts`` evaluated tick after tick, its cursor carried over as the daemon would."""

    def __init__(self, instance: DagsterInstance, channels: AlertChannels) -> None:
        self.instance = instance
        self.channels = channels
        self.cursor: str | None = None

    def evaluate(self) -> SensorResult:
        context = build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"alert_channels": self.channels}
        )
        result = analyst_alerts(context)
        assert isinstance(result, SensorResult)
        self.cursor = result.cursor
        return result


def _tick_texts(receiver: WebhookReceiver) -> list[str]:
    return [post.json["text"] for post in receiver.accepted() if "sensor register_mailboxes" in post.json["text"]]


def test_a_failing_sensor_is_alerted_once_per_episode_and_again_after_it_recovers(daemon: SensorDaemon) -> None:
    with WebhookReceiver() as slack:
        alerts = Alerts(daemon.instance, AlertChannels(slack_webhook_url=slack.url("/services/T/B/x"), ui_base_url=UI))

        daemon.tick()  # no export directory: the tick fails
        alerts.evaluate()
        (first,) = _tick_texts(slack)
        assert first.startswith("[ERROR] sensor register_mailboxes failed")
        assert "MailSourceError: mail export directory" in first and "does not exist" in first
        assert f"Sensor: {UI}/locations/__repository__@{LOCATION}/sensors/register_mailboxes" in first

        daemon.tick(3)  # it keeps failing, minute after minute
        alerts.evaluate()
        alerts.evaluate()
        assert len(_tick_texts(slack)) == 1

        daemon.mend_source()
        daemon.tick()  # recovers: the mailbox is registered
        daemon.tick()  # and then has nothing to do (skipped)
        alerts.evaluate()
        assert len(_tick_texts(slack)) == 1

        daemon.break_source()
        daemon.tick(2)  # fails anew: a new episode, one more alert
        alerts.evaluate()
        assert len(_tick_texts(slack)) == 2

    statuses = [tick.status for tick in daemon.register_ticks()]
    # The recovering tick registered the mailbox and requested no run: the daemon records it as skipped.
    assert statuses == [TickStatus.FAILURE] * 4 + [TickStatus.SKIPPED] * 2 + [TickStatus.FAILURE] * 2
    assert MAILBOX in daemon.instance.get_dynamic_partitions("mailbox")


def test_two_episodes_between_two_scans_are_two_alerts(daemon: SensorDaemon) -> None:
    with WebhookReceiver() as slack:
        alerts = Alerts(daemon.instance, AlertChannels(slack_webhook_url=slack.url("/services/T/B/x"), ui_base_url=UI))
        alerts.evaluate()  # nothing yet
        daemon.tick(2)
        daemon.mend_source()
        daemon.tick()
        daemon.break_source()
        daemon.tick(2)

        result = alerts.evaluate()

        texts = _tick_texts(slack)
        ids = [tick.tick_id for tick in daemon.register_ticks()]
        assert len(texts) == 2
        assert f"tick {ids[0]} at" in texts[0] and f"tick {ids[3]} at" in texts[1]  # each episode's first tick
        assert "sent 2 alert(s)" in (result.skip_reason.skip_message if result.skip_reason else "")
        alerts.evaluate()
        assert len(_tick_texts(slack)) == 2


def test_a_tick_still_running_is_waited_for_then_alerted_when_it_fails(daemon: SensorDaemon) -> None:
    daemon.mend_source()
    daemon.tick()
    (done,) = daemon.register_ticks()
    # What the daemon writes while it evaluates a sensor: a STARTED tick, later updated to its outcome.
    running = daemon.instance.create_tick(
        TickData(
            instigator_origin_id=done.instigator_origin_id,
            instigator_name="register_mailboxes",
            instigator_type=InstigatorType.SENSOR,
            status=TickStatus.STARTED,
            timestamp=dt.datetime.now(dt.timezone.utc).timestamp(),
            selector_id=done.selector_id,
        )
    )
    with WebhookReceiver() as slack:
        alerts = Alerts(daemon.instance, AlertChannels(slack_webhook_url=slack.url("/services/T/B/x"), ui_base_url=UI))
        alerts.evaluate()
        assert _tick_texts(slack) == []
        # The watch of register_mailboxes stays at the finished tick before the running one.
        watch = AlertCursor.parse(alerts.cursor).sensor_ticks[done.selector_id]
        assert (watch.after_tick_id, watch.episode) == (done.tick_id, None)

        error = SerializableErrorInfo("MailSourceError: the export went away\n", [], "MailSourceError")
        daemon.instance.update_tick(running.with_status(TickStatus.FAILURE, error=error))
        alerts.evaluate()
        (text,) = _tick_texts(slack)
        assert f"tick {running.tick_id} at" in text and "MailSourceError: the export went away" in text


def test_the_alert_sensor_reports_its_own_failure_once_per_episode(daemon: SensorDaemon) -> None:
    with WebhookReceiver(status=202, body="") as teams, WebhookReceiver(status=500, body="boom") as slack:
        channels = AlertChannels(
            teams_webhook_url=teams.url("/workflows/teams"),
            slack_webhook_url=slack.url("/services/T/B/x"),
            ui_base_url=UI,
        )
        alerts = Alerts(daemon.instance, channels)
        daemon.tick()  # something to alert: register_mailboxes fails

        def own_failures() -> list[str]:
            return [post.body.decode() for post in teams.accepted() if b"sensor analyst_alerts failed" in post.body]

        for _ in range(3):  # Slack answers 500 tick after tick
            with pytest.raises(AlertsNotDelivered, match="slack: HTTP 500"):
                alerts.evaluate()
        (own,) = own_failures()
        assert "AlertsNotDelivered" in own and "slack: HTTP 500 boom" in own
        assert sum(b"sensor register_mailboxes failed" in p.body for p in teams.accepted()) == 1
        assert slack.accepted() == []  # Slack refused all of them

        slack.answer(200, "ok")
        alerts.evaluate()  # recovers: Slack gets the tick alert it is owed, once
        assert len(_tick_texts(slack)) == 1
        assert len(own_failures()) == 1

        slack.answer(500, "boom again")
        daemon.mend_source()
        daemon.tick()
        daemon.break_source()
        daemon.tick()  # a new failure episode of register_mailboxes to deliver
        with pytest.raises(AlertsNotDelivered):
            alerts.evaluate()
        assert len(own_failures()) == 2  # a new episode of its own failure: told again


def test_a_cursor_written_before_tick_alerts_still_reads() -> None:
    old = AlertCursor.parse('{"after": 41, "waiting": ["r1"], "tick": 7}')
    assert (old.after_storage_id, old.waiting_run_ids, old.tick, dict(old.sensor_ticks)) == (41, ("r1",), 7, {})
    watched = AlertCursor(after_storage_id=41, tick=8, sensor_ticks={"abc": TickWatch(1.5, 3, "tick/x/3")})
    assert AlertCursor.parse(watched.serialize()) == watched
