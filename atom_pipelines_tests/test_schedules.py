"""The daily sync schedule, the freshness signal and the daily key status, at their edges: zero mailboxes, one, many; a tick
before the configured hour; a mailbox fresh, stale, never synced; days synced by a range run.

Production bug #4 was housekeeping code that broke on zero items, and the sync this project replaces
stopped for weeks without anyone noticing: the schedule must ask for exactly one run per mailbox for the
day that just ended, and the check must go red, naming the mailbox, when a mailbox falls behind. Ticks are
evaluated by Dagster (``evaluate_tick``) and the check runs through the registered ``mailbox_freshness``
job, against real materializations in a real instance.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, Definitions, ScheduleDefinition, build_schedule_context

from atom_pipelines import config
from atom_pipelines.assets import outlook_messages
from atom_pipelines.definitions import defs
from atom_pipelines.jobs import mail_to_links_job
from atom_pipelines.schedules import build_daily_sync_schedule, build_key_status_schedule
from atom_pipelines_tests.conftest import corpus_records, write_export
from atom_pipelines_tests.helpers import PARTITIONED_CHAIN, materialize_days, resources

# Dagster's own partitioned schedule calls a method it deprecated itself and writes its own multi-partition
# tags, which its tag validation calls non-compliant; nothing of ours to change.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:Function `JobDefinition.run_request_for_partition` is deprecated:DeprecationWarning"
    ),
    pytest.mark.filterwarnings(r"ignore:Non-compliant tag keys like \['dagster/partition/:DeprecationWarning"),
]

HYATT, HARRIS, FARMER = "kevin.hyatt@enron.com", "steven.harris@enron.com", "daren.farmer@enron.com"
UTC = dt.timezone.utc
#: A tick on 2002-01-03 at the default hour: the day that just ended, and the freshness reference day.
TICK = dt.datetime(2002, 1, 3, 6, 0, tzinfo=UTC)
REFERENCE_DAY = dt.date(2002, 1, 2)
CHECK_OP = "outlook_messages_mailboxes_fresh"


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return corpus_records({HYATT, HARRIS, FARMER})


@pytest.fixture
def run_resources(tmp_path: Path, records: list[dict], sqlite_database_url: str) -> dict[str, Any]:
    return resources(write_export(tmp_path / "export", records), sqlite_database_url)


def _tick(instance: DagsterInstance, at: dt.datetime, schedule: ScheduleDefinition | None = None):
    schedule = schedule or defs.resolve_schedule_def("mail_to_links_daily")
    return schedule.evaluate_tick(build_schedule_context(instance=instance, scheduled_execution_time=at))


def _resolved(schedule: Any, run_resources: dict[str, Any]) -> ScheduleDefinition:
    """A schedule built here for other settings, resolved against the real job as Definitions do."""
    built = Definitions(
        assets=PARTITIONED_CHAIN, jobs=[mail_to_links_job], schedules=[schedule], resources=run_resources
    )
    return built.resolve_schedule_def("mail_to_links_daily")


# --- the daily schedule ------------------------------------------------------------------------------


def test_registered_with_the_configured_time_in_utc_and_running() -> None:
    daily = defs.resolve_schedule_def("mail_to_links_daily")
    settings = config.load_settings()
    assert daily.cron_schedule == f"{settings.daily_sync_minute} {settings.daily_sync_hour} * * *" == "0 6 * * *"
    assert daily.execution_timezone == "UTC"
    assert daily.job_name == "mail_to_links"
    assert daily.default_status.value == "RUNNING"
    hourly = defs.resolve_schedule_def("mailbox_freshness_hourly")
    assert (hourly.cron_schedule, hourly.execution_timezone, hourly.job_name) == (
        "30 * * * *",
        "UTC",
        "mailbox_freshness",
    )
    assert hourly.default_status.value == "RUNNING"


@pytest.mark.parametrize(
    ("hour", "minute", "cron"), [(6, 0, "0 5 * * *"), (0, 15, "15 23 * * *"), (23, 59, "59 22 * * *")]
)
def test_the_key_status_runs_daily_an_hour_before_the_sync(hour: int, minute: int, cron: str) -> None:
    schedule = build_key_status_schedule(hour, minute)
    assert (schedule.cron_schedule, schedule.execution_timezone, schedule.default_status.value) == (
        cron,
        "UTC",
        "RUNNING",
    )


def test_the_registered_key_status_schedule_runs_llm_key_status_and_its_check(instance: DagsterInstance) -> None:
    schedule = defs.resolve_schedule_def("llm_key_status_daily")
    settings = config.load_settings()
    assert schedule.cron_schedule == f"{settings.daily_sync_minute} {(settings.daily_sync_hour - 1) % 24} * * *"
    assert schedule.default_status.value == "RUNNING"
    job = defs.resolve_job_def(schedule.job_name)
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} == {"llm_key_status"}
    assert {key.name for key in job.asset_layer.asset_graph.asset_check_keys} == {"llm_keys_accepted"}
    # One run a tick, whatever the mailboxes (the asset reads them all), even with none registered yet.
    (request,) = _tick(instance, TICK, schedule).run_requests
    assert request.partition_key is None


def test_zero_mailboxes_request_no_run(instance: DagsterInstance) -> None:
    result = _tick(instance, TICK)

    assert result.run_requests == []
    # Dagster records the tick as skipped, with its own words.
    assert result.skip_message == "Schedule function returned an empty result"


@pytest.mark.parametrize("mailboxes", [[HYATT], [HYATT, HARRIS, FARMER]], ids=["one", "three"])
def test_one_run_per_mailbox_for_the_previous_utc_day(instance: DagsterInstance, mailboxes: list[str]) -> None:
    instance.add_dynamic_partitions("mailbox", mailboxes)

    requests = _tick(instance, TICK).run_requests

    assert sorted(r.partition_key for r in requests) == sorted(f"2002-01-02|{m}" for m in mailboxes)
    for request in requests:
        mailbox = request.partition_key.split("|", 1)[1]
        assert request.run_key == request.partition_key  # a tick launches each mailbox-day at most once
        assert request.job_name == "mail_to_links"
        assert request.tags["dagster/partition"] == request.partition_key
        assert request.tags["dagster/partition/date"] == "2002-01-02"
        # dagster.yaml limits concurrent runs per mailbox on this tag.
        assert request.tags["dagster/partition/mailbox"] == mailbox
        assert request.tags["dagster/schedule_name"] == "mail_to_links_daily"


@pytest.mark.parametrize(
    "at",
    [dt.datetime(2002, 1, 3, 0, 30, tzinfo=UTC), TICK, dt.datetime(2002, 1, 3, 23, 59, tzinfo=UTC)],
    ids=["00:30", "06:00", "23:59"],
)
def test_the_day_requested_is_the_last_complete_day_whatever_the_hour(
    instance: DagsterInstance, at: dt.datetime
) -> None:
    instance.add_dynamic_partitions("mailbox", [HYATT])

    (request,) = _tick(instance, at).run_requests

    assert request.partition_key == f"2002-01-02|{HYATT}"


def test_a_schedule_at_00_30_utc_requests_the_day_that_just_ended(
    instance: DagsterInstance, run_resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATOM_DAILY_SYNC_HOUR", "0")
    monkeypatch.setenv("ATOM_DAILY_SYNC_MINUTE", "30")
    settings = config.load_settings()
    early = _resolved(build_daily_sync_schedule(settings.daily_sync_hour, settings.daily_sync_minute), run_resources)
    instance.add_dynamic_partitions("mailbox", [HYATT, HARRIS])

    requests = _tick(instance, dt.datetime(2002, 1, 3, 0, 30, tzinfo=UTC), early).run_requests

    assert early.cron_schedule == "30 0 * * *"
    assert sorted(r.partition_key for r in requests) == [f"2002-01-02|{HYATT}", f"2002-01-02|{HARRIS}"]


def test_a_scheduled_request_materializes_that_day(instance: DagsterInstance, run_resources: dict[str, Any]) -> None:
    """The request runs as it is: the real job, the tick's partition and tags, the day's mail stored."""
    instance.add_dynamic_partitions("mailbox", [HYATT])
    (request,) = _tick(instance, dt.datetime(2001, 10, 18, 6, 0, tzinfo=UTC)).run_requests
    job = Definitions(assets=PARTITIONED_CHAIN, jobs=[mail_to_links_job], resources=run_resources).resolve_job_def(
        "mail_to_links"
    )

    result = job.execute_in_process(instance=instance, partition_key=request.partition_key, tags=request.tags)

    assert result.success
    (materialization,) = result.asset_materializations_for_node("outlook_messages")
    assert materialization.partition == f"2001-10-17|{HYATT}"
    assert materialization.metadata["dagster/row_count"].value > 0  # kevin.hyatt's first day of mail
    assert "mailboxes_fresh" not in {e.check_name for e in result.get_asset_check_evaluations()}


def _setting(name: str) -> Any:
    """The value of one variable as the code location's settings read it (config.Settings)."""
    return getattr(config.load_settings(), config.Settings.variables()[name])


@pytest.mark.parametrize(
    ("name", "default"),
    [("ATOM_DAILY_SYNC_HOUR", 6), ("ATOM_DAILY_SYNC_MINUTE", 0), ("ATOM_FRESHNESS_MAX_DAYS_BEHIND", 2)],
)
def test_settings_default_when_unset_or_empty(name: str, default: int, monkeypatch) -> None:
    monkeypatch.delenv(name, raising=False)
    assert _setting(name) == default
    monkeypatch.setenv(name, "")
    assert _setting(name) == default


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ATOM_DAILY_SYNC_HOUR", "0", 0),
        ("ATOM_DAILY_SYNC_HOUR", "23", 23),
        ("ATOM_DAILY_SYNC_HOUR", " 7 ", 7),
        ("ATOM_DAILY_SYNC_MINUTE", "59", 59),
        ("ATOM_FRESHNESS_MAX_DAYS_BEHIND", "0", 0),
        ("ATOM_FRESHNESS_MAX_DAYS_BEHIND", "30", 30),
    ],
)
def test_settings_accept_their_range(name: str, value: str, expected: int, monkeypatch) -> None:
    monkeypatch.setenv(name, value)
    assert _setting(name) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ATOM_DAILY_SYNC_HOUR", "24"),
        ("ATOM_DAILY_SYNC_HOUR", "-1"),
        ("ATOM_DAILY_SYNC_HOUR", "six"),
        ("ATOM_DAILY_SYNC_HOUR", "6.5"),
        ("ATOM_DAILY_SYNC_MINUTE", "60"),
        ("ATOM_FRESHNESS_MAX_DAYS_BEHIND", "-1"),
        ("ATOM_FRESHNESS_MAX_DAYS_BEHIND", "2d"),
    ],
)
def test_bad_settings_fail_naming_the_variable(name: str, value: str, monkeypatch) -> None:
    monkeypatch.setenv(name, value)
    # One line per bad variable in the SettingsError (a ValueError) that stops the code location's load.
    with pytest.raises(config.SettingsError, match=rf"(?m)^{re.escape(f'{name}={value!r}')} must be an? \w"):
        config.load_settings()


# --- the freshness check -----------------------------------------------------------------------------


def _freshness(instance: DagsterInstance, as_of: dt.datetime | None = TICK) -> tuple[bool, dict[str, Any], str]:
    """Runs the registered mailbox_freshness job: (passed, metadata values, description)."""
    run_config = {"ops": {CHECK_OP: {"config": {"as_of": as_of.isoformat()}}}} if as_of else None
    result = defs.resolve_job_def("mailbox_freshness").execute_in_process(instance=instance, run_config=run_config)
    assert result.success  # a failed check is a red check, not a failed run
    (evaluation,) = result.get_asset_check_evaluations()
    assert (evaluation.check_name, evaluation.asset_key.to_user_string()) == ("mailboxes_fresh", "outlook_messages")
    assert evaluation.severity.value == "ERROR"
    return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}, evaluation.description or ""


def test_the_check_is_not_part_of_the_sync_job() -> None:
    synced = defs.resolve_job_def("mail_to_links").asset_layer.asset_graph.asset_check_keys
    assert "mailboxes_fresh" not in {key.name for key in synced}
    assert {"no_duplicate_message_ids", "extraction_succeeded", "links_point_at_entities"} <= {k.name for k in synced}
    checked = defs.resolve_job_def("mailbox_freshness").asset_layer.asset_graph.asset_check_keys
    assert {key.name for key in checked} == {"mailboxes_fresh"}


def test_zero_mailboxes_pass_and_say_so(instance: DagsterInstance) -> None:
    passed, metadata, description = _freshness(instance)

    assert passed
    assert (metadata["mailboxes"], metadata["stale_mailboxes"], metadata["stale"]) == (0, 0, {})
    assert metadata["reference_day"] == "2002-01-02"
    assert "no mailbox is registered" in description


def test_a_mailbox_synced_by_a_range_run_is_fresh(instance: DagsterInstance, run_resources: dict[str, Any]) -> None:
    materialize_days(instance, run_resources, HYATT, "2001-12-20", REFERENCE_DAY, assets=[outlook_messages])

    passed, metadata, description = _freshness(instance)

    assert passed
    assert (metadata["mailboxes"], metadata["stale_mailboxes"], metadata["never_synced"]) == (1, 0, 0)
    assert metadata["max_days_behind"] == 2
    assert description == "all 1 mailbox(es) synced within 2 day(s) of 2002-01-02"


@pytest.mark.parametrize(("days_behind", "fresh"), [(0, True), (2, True), (3, False)])
def test_stale_only_beyond_the_configured_days(
    instance: DagsterInstance, run_resources: dict[str, Any], days_behind: int, fresh: bool
) -> None:
    latest = REFERENCE_DAY - dt.timedelta(days=days_behind)
    materialize_days(instance, run_resources, HYATT, latest, assets=[outlook_messages])

    passed, metadata, description = _freshness(instance)

    assert passed is fresh
    if not fresh:
        assert metadata["stale"] == {HYATT: {"latest_day": latest.isoformat(), "days_behind": days_behind}}
        assert f"{HYATT} (latest {latest}, {days_behind} days behind)" in description


def test_the_allowed_lag_comes_from_the_environment(
    instance: DagsterInstance, run_resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    materialize_days(instance, run_resources, HYATT, REFERENCE_DAY - dt.timedelta(days=1), assets=[outlook_messages])
    monkeypatch.setenv("ATOM_FRESHNESS_MAX_DAYS_BEHIND", "0")

    passed, metadata, _ = _freshness(instance)

    assert not passed
    assert metadata["max_days_behind"] == 0
    assert metadata["stale"] == {HYATT: {"latest_day": "2002-01-01", "days_behind": 1}}


def test_a_stale_mailbox_fails_naming_its_latest_day_and_lag(
    instance: DagsterInstance, run_resources: dict[str, Any]
) -> None:
    materialize_days(instance, run_resources, HYATT, "2001-12-24", "2001-12-28", assets=[outlook_messages])

    passed, metadata, description = _freshness(instance)

    assert not passed
    assert metadata["stale"] == {HYATT: {"latest_day": "2001-12-28", "days_behind": 5}}
    assert (metadata["stale_mailboxes"], metadata["never_synced"]) == (1, 0)
    assert description == (
        f"1 of 1 mailbox(es) more than 2 day(s) behind 2002-01-02 or never synced: "
        f"{HYATT} (latest 2001-12-28, 5 days behind)"
    )


def test_a_mailbox_never_synced_is_stale(instance: DagsterInstance) -> None:
    instance.add_dynamic_partitions("mailbox", [HARRIS])

    passed, metadata, description = _freshness(instance)

    assert not passed
    assert metadata["stale"] == {HARRIS: {"latest_day": None, "days_behind": None}}
    assert (metadata["stale_mailboxes"], metadata["never_synced"]) == (1, 1)
    assert f"{HARRIS} (never synced)" in description


def test_many_mailboxes_name_exactly_the_stale_ones(instance: DagsterInstance, run_resources: dict[str, Any]) -> None:
    materialize_days(instance, run_resources, HYATT, "2001-12-28", REFERENCE_DAY, assets=[outlook_messages])
    materialize_days(instance, run_resources, HARRIS, "2001-12-01", "2001-12-10", assets=[outlook_messages])
    instance.add_dynamic_partitions("mailbox", [FARMER])

    passed, metadata, description = _freshness(instance)

    assert not passed
    assert metadata["stale"] == {
        HARRIS: {"latest_day": "2001-12-10", "days_behind": 23},
        FARMER: {"latest_day": None, "days_behind": None},
    }
    assert (metadata["mailboxes"], metadata["stale_mailboxes"], metadata["never_synced"]) == (3, 2, 1)
    assert description.startswith("2 of 3 mailbox(es)")
    assert HYATT not in description


def test_re_syncing_an_old_day_does_not_make_a_mailbox_fresh(
    instance: DagsterInstance, run_resources: dict[str, Any]
) -> None:
    """The latest day is the newest *day* materialized, not the newest materialization."""
    materialize_days(instance, run_resources, HYATT, "2001-12-24", "2001-12-28", assets=[outlook_messages])
    materialize_days(instance, run_resources, HYATT, "2001-10-17", assets=[outlook_messages])

    passed, metadata, _ = _freshness(instance)

    assert not passed
    assert metadata["stale"] == {HYATT: {"latest_day": "2001-12-28", "days_behind": 5}}


def test_without_as_of_the_check_measures_against_now(instance: DagsterInstance, run_resources: dict[str, Any]) -> None:
    """What the hourly schedule runs: no config, the reference day is yesterday in UTC (the sample
    export has no mail that day, which syncs as an empty day)."""
    yesterday = dt.datetime.now(UTC).date() - dt.timedelta(days=1)
    materialize_days(instance, run_resources, HYATT, yesterday, assets=[outlook_messages])

    passed, metadata, _ = _freshness(instance, as_of=None)

    assert passed
    # One day later only if the test ran across midnight UTC.
    assert metadata["reference_day"] in (yesterday.isoformat(), (yesterday + dt.timedelta(days=1)).isoformat())
