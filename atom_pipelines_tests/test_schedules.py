"""The daily sync schedule, the freshness signal and the daily key status, at their edges: zero mailboxes, one,
many; a tick before the configured hour or before ATOM_START_DATE; a mailbox fresh, stale, never synced.

Production bug #4 was housekeeping code that broke on zero items, and the sync this project replaces
stopped for weeks without anyone noticing. The schedule asks for catch-up runs of ``mail_to_links`` (no day
tags: every day not yet done up to the latest complete one), one per ATOM_DAILY_MAILBOXES_PER_RUN mailboxes
that are consecutive in registration order (one partition or one partition range each); such a run, executed
as requested, stores and records every missing day in the store's ``mailbox_days``, and a second one finds
nothing left. The freshness check goes red, naming the mailbox, when a mailbox's latest day done in
``mailbox_days`` falls behind. Ticks are evaluated by Dagster (``evaluate_tick``) and the check runs through
the ``mailbox_freshness`` job built on the store the test's materializations wrote, in a real instance.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, Definitions, RunRequest, ScheduleDefinition, build_schedule_context

from atom_pipelines import config
from atom_pipelines.assets import outlook_messages
from atom_pipelines.checks.freshness import mailboxes_fresh
from atom_pipelines.definitions import defs
from atom_pipelines.jobs import mail_to_links_job, mailbox_freshness_job
from atom_pipelines.partitions import CHAIN, MailboxWindow, days_between, mailbox_day_key
from atom_pipelines.schedules import DAILY_SYNC_TAG, build_daily_sync_schedule, build_key_status_schedule
from atom_pipelines.store import schema
from atom_pipelines.store.resource import MailStore, dispose_engine
from atom_pipelines.tags import FIRST_DAY_TAG, LAST_DAY_TAG, MAILBOX_TAG, PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG
from atom_pipelines_tests.conftest import corpus_records, write_export
from atom_pipelines_tests.helpers import PARTITIONED_CHAIN, materialize_days, resources

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
    assert result.skip_message == "no mailbox is registered yet"


def test_no_complete_day_since_the_start_date_requests_no_run(instance: DagsterInstance) -> None:
    """A tick on ATOM_START_DATE itself (2000-12-01 by default): the day before it is not synced."""
    instance.add_dynamic_partitions("mailbox", [HYATT])

    result = _tick(instance, dt.datetime(2000, 12, 1, 6, 0, tzinfo=UTC))

    assert result.run_requests == []
    assert result.skip_message == "no complete day exists yet since ATOM_START_DATE"


def _covered(request: RunRequest) -> list[str]:
    """The mailboxes a request's run covers: its one partition, or the ends of its partition range."""
    if PARTITION_TAG in request.tags:
        return [request.tags[PARTITION_TAG]]
    return [request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]]


def _assert_catch_up(request: RunRequest, day: str = "2002-01-02") -> None:
    """A daily request: the real job, a catch-up (no day tags: every day not done yet), tagged with its day."""
    assert request.job_name == "mail_to_links"
    assert request.partition_key is None  # the partition or range is in the tags
    assert FIRST_DAY_TAG not in request.tags and LAST_DAY_TAG not in request.tags
    assert request.tags[DAILY_SYNC_TAG] == day
    assert request.tags["dagster/schedule_name"] == "mail_to_links_daily"


def test_one_mailbox_is_one_run_of_its_partition(instance: DagsterInstance) -> None:
    instance.add_dynamic_partitions("mailbox", [HYATT])

    (request,) = _tick(instance, TICK).run_requests

    _assert_catch_up(request)
    assert request.run_key == f"daily:2002-01-02:{HYATT}..{HYATT}:1"  # a tick launches it at most once
    assert request.tags[PARTITION_TAG] == HYATT
    # dagster.yaml limits concurrent runs per mailbox on this tag.
    assert request.tags[MAILBOX_TAG] == HYATT
    assert RANGE_START_TAG not in request.tags


def test_many_mailboxes_are_one_range_run_in_registration_order(instance: DagsterInstance) -> None:
    """Up to ATOM_DAILY_MAILBOXES_PER_RUN (500) mailboxes in one run: a partition range from the first
    registered to the last, not in alphabetical order."""
    instance.add_dynamic_partitions("mailbox", [HYATT, HARRIS, FARMER])

    (request,) = _tick(instance, TICK).run_requests

    _assert_catch_up(request)
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (HYATT, FARMER)
    assert request.run_key == f"daily:2002-01-02:{HYATT}..{FARMER}:3"
    assert PARTITION_TAG not in request.tags and MAILBOX_TAG not in request.tags


def test_mailboxes_are_chunked_by_the_configured_runs_size(
    instance: DagsterInstance, run_resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ATOM_DAILY_MAILBOXES_PER_RUN=2 with three mailboxes: a range of the first two, the third alone."""
    monkeypatch.setenv("ATOM_DAILY_MAILBOXES_PER_RUN", "2")
    settings = config.load_settings()
    assert settings.daily_mailboxes_per_run == 2
    chunked = _resolved(
        build_daily_sync_schedule(
            settings.daily_sync_hour, settings.daily_sync_minute, settings.daily_mailboxes_per_run
        ),
        run_resources,
    )
    instance.add_dynamic_partitions("mailbox", [HYATT, HARRIS, FARMER])

    ranged, single = _tick(instance, TICK, chunked).run_requests

    for request in (ranged, single):
        _assert_catch_up(request)
    assert _covered(ranged) == [HYATT, HARRIS] and PARTITION_TAG not in ranged.tags
    assert _covered(single) == [FARMER] and single.tags[MAILBOX_TAG] == FARMER
    assert RANGE_START_TAG not in single.tags
    assert [ranged.run_key, single.run_key] == [
        f"daily:2002-01-02:{HYATT}..{HARRIS}:2",
        f"daily:2002-01-02:{FARMER}..{FARMER}:1",
    ]
    assert "in runs of 2 mailboxes" in (chunked.description or "")
    # The same tick evaluated again asks for the same runs: Dagster launches each run key once.
    assert [r.run_key for r in _tick(instance, TICK, chunked).run_requests] == [ranged.run_key, single.run_key]


def test_a_mailbox_registered_later_is_in_the_next_tick(instance: DagsterInstance) -> None:
    instance.add_dynamic_partitions("mailbox", [HYATT])
    (first,) = _tick(instance, TICK).run_requests
    instance.add_dynamic_partitions("mailbox", [HARRIS])

    (second,) = _tick(instance, TICK + dt.timedelta(days=1)).run_requests

    assert _covered(first) == [HYATT]
    assert _covered(second) == [HYATT, HARRIS]
    assert second.run_key == f"daily:2002-01-03:{HYATT}..{HARRIS}:2" != first.run_key


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

    assert request.tags[DAILY_SYNC_TAG] == "2002-01-02"
    assert request.run_key.startswith("daily:2002-01-02:")


def test_the_day_requested_stops_before_the_end_date(
    instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished export (ATOM_END_DATE, exclusive): a tick long after it still names the export's last day."""
    monkeypatch.setenv("ATOM_END_DATE", "2002-01-01")
    instance.add_dynamic_partitions("mailbox", [HYATT])

    (request,) = _tick(instance, TICK + dt.timedelta(days=30)).run_requests

    assert request.tags[DAILY_SYNC_TAG] == "2001-12-31"


def test_a_schedule_at_00_30_utc_requests_the_day_that_just_ended(
    instance: DagsterInstance, run_resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATOM_DAILY_SYNC_HOUR", "0")
    monkeypatch.setenv("ATOM_DAILY_SYNC_MINUTE", "30")
    settings = config.load_settings()
    early = _resolved(
        build_daily_sync_schedule(
            settings.daily_sync_hour, settings.daily_sync_minute, settings.daily_mailboxes_per_run
        ),
        run_resources,
    )
    instance.add_dynamic_partitions("mailbox", [HYATT, HARRIS])

    (request,) = _tick(instance, dt.datetime(2002, 1, 3, 0, 30, tzinfo=UTC), early).run_requests

    assert early.cron_schedule == "30 0 * * *"
    assert request.tags[DAILY_SYNC_TAG] == "2002-01-02"
    assert _covered(request) == [HYATT, HARRIS]


#: The days a catch-up test syncs: ATOM_START_DATE..ATOM_END_DATE (exclusive), kevin.hyatt's first mail on the last.
CATCH_UP_START, CATCH_UP_END = dt.date(2001, 10, 10), dt.date(2001, 10, 18)


def _mailbox_days(database_url: str, mailbox: str) -> dict[str, dict[dt.date, tuple[str, str]]]:
    """asset -> day -> (status, run id) of a mailbox's recorded progress."""
    table = schema.mailbox_days
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(table.c.asset, table.c.day, table.c.status, table.c.run_id).where(table.c.mailbox == mailbox)
            ).all()
    finally:
        engine.dispose()
    recorded: dict[str, dict[dt.date, tuple[str, str]]] = {}
    for asset, day, status, run_id in rows:
        recorded.setdefault(asset, {})[day] = (status, run_id)
    return recorded


def _log_messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [event.user_message for event in instance.all_logs(run_id) if event.user_message]


def test_a_scheduled_catch_up_stores_every_day_not_done_and_a_second_run_does_nothing_new(
    instance: DagsterInstance, run_resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request runs as it is (the real job, the tick's tags): every day from ATOM_START_DATE to the
    latest complete one is stored and recorded done; a second tick's run of the mailbox finds nothing left."""
    monkeypatch.setenv("ATOM_START_DATE", CATCH_UP_START.isoformat())
    monkeypatch.setenv("ATOM_END_DATE", CATCH_UP_END.isoformat())
    days = days_between(CATCH_UP_START, CATCH_UP_END - dt.timedelta(days=1))
    instance.add_dynamic_partitions("mailbox", [HYATT])
    job = Definitions(assets=PARTITIONED_CHAIN, jobs=[mail_to_links_job], resources=run_resources).resolve_job_def(
        "mail_to_links"
    )
    database_url = run_resources["store"].database_url

    (request,) = _tick(instance, dt.datetime(2001, 10, 18, 6, 0, tzinfo=UTC)).run_requests
    result = job.execute_in_process(instance=instance, tags=request.tags)

    assert result.success
    (materialization,) = result.asset_materializations_for_node("outlook_messages")
    assert materialization.partition == HYATT
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["dagster/row_count"] > 0  # kevin.hyatt's first day of mail, 2001-10-17
    assert metadata["mailbox_days_covered"] == len(days) == 8
    assert (metadata["mailbox_days_done"], metadata["mailbox_days_failed"], metadata["mailbox_days_missing"]) == (
        8,
        0,
        0,
    )
    assert f"| {HYATT} | 8 | 0 | 0 | - | - |" in metadata["mailbox_days"]
    recorded = _mailbox_days(database_url, HYATT)
    for asset in CHAIN:  # each step caught up every day the one upstream of it did
        assert recorded[asset] == {day: ("done", result.run_id) for day in days}, asset
    assert MailStore(database_url=database_url).latest_done_days("outlook_messages") == {HYATT: days[-1]}
    assert "mailboxes_fresh" not in {e.check_name for e in result.get_asset_check_evaluations()}
    assert f"catch-up of 1 mailbox(es), {days[0]}..{days[-1]}: 8 mailbox-day(s) not done yet" in _log_messages(
        instance, result.run_id
    )

    (later,) = _tick(instance, dt.datetime(2001, 10, 19, 6, 0, tzinfo=UTC)).run_requests
    # A finished export: every later tick names its last day, so Dagster launches that run key once; launched
    # anyway (a live mailbox's next tick has a new key), the run finds nothing left to do.
    assert later.run_key == request.run_key
    again = job.execute_in_process(instance=instance, tags=later.tags)

    assert again.success
    (repeat,) = again.asset_materializations_for_node("outlook_messages")
    assert (repeat.metadata["mailbox_days_covered"].value, repeat.metadata["dagster/row_count"].value) == (0, 0)
    assert repeat.metadata["mailbox_days_done"].value == 8
    messages = _log_messages(instance, again.run_id)
    for asset in CHAIN:
        assert recorded[asset] == _mailbox_days(database_url, HYATT)[asset]  # still the first run's days
    assert messages.count(f"catch-up of 1 mailbox(es), {days[0]}..{days[-1]}: 0 mailbox-day(s) not done yet") == 3


def test_a_scheduled_range_run_catches_up_exactly_its_mailboxes(
    instance: DagsterInstance, run_resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registered Hyatt, Farmer, Harris, two a run: the range hyatt..farmer is resolved by Dagster in
    registration order, so its run syncs those two, and Harris (alphabetically between them) is left to its
    own run."""
    monkeypatch.setenv("ATOM_START_DATE", CATCH_UP_START.isoformat())
    monkeypatch.setenv("ATOM_END_DATE", CATCH_UP_END.isoformat())
    instance.add_dynamic_partitions("mailbox", [HYATT, FARMER, HARRIS])
    settings = config.load_settings()
    chunked = _resolved(
        build_daily_sync_schedule(settings.daily_sync_hour, settings.daily_sync_minute, 2), run_resources
    )
    job = Definitions(assets=PARTITIONED_CHAIN, jobs=[mail_to_links_job], resources=run_resources).resolve_job_def(
        "mail_to_links"
    )
    ranged, single = _tick(instance, dt.datetime(2001, 10, 18, 6, 0, tzinfo=UTC), chunked).run_requests
    assert (_covered(ranged), _covered(single)) == ([HYATT, FARMER], [HARRIS])

    result = job.execute_in_process(instance=instance, tags=ranged.tags)

    assert result.success
    assert {m.partition for m in result.asset_materializations_for_node("outlook_messages")} == {HYATT, FARMER}
    store: MailStore = run_resources["store"]
    days = days_between(CATCH_UP_START, CATCH_UP_END - dt.timedelta(days=1))
    for asset in CHAIN:
        done = store.done_days(asset, [HYATT, FARMER, HARRIS], days[0], days[-1])
        assert done == {(mailbox, day) for mailbox in (HYATT, FARMER) for day in days}, asset


def test_a_catch_up_redoes_a_failed_day_only(
    instance: DagsterInstance, run_resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day recorded failed is not done: the next scheduled run syncs it, and only it."""
    monkeypatch.setenv("ATOM_START_DATE", CATCH_UP_START.isoformat())
    monkeypatch.setenv("ATOM_END_DATE", CATCH_UP_END.isoformat())
    store: MailStore = run_resources["store"]
    instance.add_dynamic_partitions("mailbox", [HYATT])
    job = Definitions(assets=PARTITIONED_CHAIN, jobs=[mail_to_links_job], resources=run_resources).resolve_job_def(
        "mail_to_links"
    )
    (request,) = _tick(instance, dt.datetime(2001, 10, 18, 6, 0, tzinfo=UTC)).run_requests
    assert job.execute_in_process(instance=instance, tags=request.tags).success
    failed_day = dt.date(2001, 10, 17)
    store.record_days(
        "outlook_messages",
        [MailboxWindow(HYATT, (failed_day,))],
        rows={},
        failed={mailbox_day_key(HYATT, failed_day): "a test failed it"},
        run_id="test",
        root_run_id="test",
        invalidates=CHAIN[1:],
    )

    again = job.execute_in_process(instance=instance, tags=request.tags)

    assert again.success
    (materialization,) = again.asset_materializations_for_node("outlook_messages")
    assert materialization.metadata["mailbox_days_covered"].value == 1
    recorded = _mailbox_days(store.database_url, HYATT)
    for asset in CHAIN:
        assert recorded[asset][failed_day] == ("done", again.run_id), asset
        assert {day for day, (_, run) in recorded[asset].items() if run == again.run_id} == {failed_day}


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


def _freshness(
    instance: DagsterInstance, run_resources: dict[str, Any], as_of: dt.datetime | None = TICK
) -> tuple[bool, dict[str, Any], str]:
    """Runs the mailbox_freshness job as the code location defines it, against the store the test's
    materializations wrote (the check reads the store's mailbox_days): (passed, metadata values, description)."""
    run_config = {"ops": {CHECK_OP: {"config": {"as_of": as_of.isoformat()}}}} if as_of else None
    job = Definitions(
        assets=PARTITIONED_CHAIN, asset_checks=[mailboxes_fresh], jobs=[mailbox_freshness_job], resources=run_resources
    ).resolve_job_def("mailbox_freshness")
    result = job.execute_in_process(instance=instance, run_config=run_config)
    assert result.success  # a failed check is a red check, not a failed run
    (evaluation,) = result.get_asset_check_evaluations()
    assert (evaluation.check_name, evaluation.asset_key.to_user_string()) == ("mailboxes_fresh", "outlook_messages")
    assert evaluation.severity.value == "ERROR"
    return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}, evaluation.description or ""


def test_the_registered_freshness_job_needs_the_store() -> None:
    """The code location's job reads the store resource it is given (the one the sync writes)."""
    job = defs.resolve_job_def("mailbox_freshness")
    assert "store" in job.resource_defs
    assert {key.name for key in job.asset_layer.asset_graph.asset_check_keys} == {"mailboxes_fresh"}


def test_the_check_is_not_part_of_the_sync_job() -> None:
    synced = defs.resolve_job_def("mail_to_links").asset_layer.asset_graph.asset_check_keys
    assert "mailboxes_fresh" not in {key.name for key in synced}
    assert {"no_duplicate_message_ids", "extraction_succeeded", "links_point_at_entities"} <= {k.name for k in synced}
    checked = defs.resolve_job_def("mailbox_freshness").asset_layer.asset_graph.asset_check_keys
    assert {key.name for key in checked} == {"mailboxes_fresh"}


def test_zero_mailboxes_pass_and_say_so(instance: DagsterInstance, run_resources: dict[str, Any]) -> None:
    passed, metadata, description = _freshness(instance, run_resources)

    assert passed
    assert (metadata["mailboxes"], metadata["stale_mailboxes"], metadata["stale"]) == (0, 0, {})
    assert metadata["reference_day"] == "2002-01-02"
    assert "no mailbox is registered" in description


def test_a_mailbox_synced_by_a_range_run_is_fresh(instance: DagsterInstance, run_resources: dict[str, Any]) -> None:
    materialize_days(instance, run_resources, HYATT, "2001-12-20", REFERENCE_DAY, assets=[outlook_messages])

    passed, metadata, description = _freshness(instance, run_resources)

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

    passed, metadata, description = _freshness(instance, run_resources)

    assert passed is fresh
    if not fresh:
        assert metadata["stale"] == {HYATT: {"latest_day": latest.isoformat(), "days_behind": days_behind}}
        assert f"{HYATT} (latest {latest}, {days_behind} days behind)" in description


def test_the_allowed_lag_comes_from_the_environment(
    instance: DagsterInstance, run_resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    materialize_days(instance, run_resources, HYATT, REFERENCE_DAY - dt.timedelta(days=1), assets=[outlook_messages])
    monkeypatch.setenv("ATOM_FRESHNESS_MAX_DAYS_BEHIND", "0")

    passed, metadata, _ = _freshness(instance, run_resources)

    assert not passed
    assert metadata["max_days_behind"] == 0
    assert metadata["stale"] == {HYATT: {"latest_day": "2002-01-01", "days_behind": 1}}


def test_a_stale_mailbox_fails_naming_its_latest_day_and_lag(
    instance: DagsterInstance, run_resources: dict[str, Any]
) -> None:
    materialize_days(instance, run_resources, HYATT, "2001-12-24", "2001-12-28", assets=[outlook_messages])

    passed, metadata, description = _freshness(instance, run_resources)

    assert not passed
    assert metadata["stale"] == {HYATT: {"latest_day": "2001-12-28", "days_behind": 5}}
    assert (metadata["stale_mailboxes"], metadata["never_synced"]) == (1, 0)
    assert description == (
        f"1 of 1 mailbox(es) more than 2 day(s) behind 2002-01-02 or never synced: "
        f"{HYATT} (latest 2001-12-28, 5 days behind)"
    )


def test_a_mailbox_never_synced_is_stale(instance: DagsterInstance, run_resources: dict[str, Any]) -> None:
    instance.add_dynamic_partitions("mailbox", [HARRIS])

    passed, metadata, description = _freshness(instance, run_resources)

    assert not passed
    assert metadata["stale"] == {HARRIS: {"latest_day": None, "days_behind": None}}
    assert (metadata["stale_mailboxes"], metadata["never_synced"]) == (1, 1)
    assert f"{HARRIS} (never synced)" in description


def test_many_mailboxes_name_exactly_the_stale_ones(instance: DagsterInstance, run_resources: dict[str, Any]) -> None:
    materialize_days(instance, run_resources, HYATT, "2001-12-28", REFERENCE_DAY, assets=[outlook_messages])
    materialize_days(instance, run_resources, HARRIS, "2001-12-01", "2001-12-10", assets=[outlook_messages])
    instance.add_dynamic_partitions("mailbox", [FARMER])

    passed, metadata, description = _freshness(instance, run_resources)

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

    passed, metadata, _ = _freshness(instance, run_resources)

    assert not passed
    assert metadata["stale"] == {HYATT: {"latest_day": "2001-12-28", "days_behind": 5}}


def test_freshness_is_read_from_the_store_the_sync_wrote(
    instance: DagsterInstance, run_resources: dict[str, Any], tmp_path: Path
) -> None:
    """The instance knows only mailbox partitions: the days come from the store's mailbox_days. The same
    instance against another (empty) store finds the mailbox never synced."""
    materialize_days(instance, run_resources, HYATT, REFERENCE_DAY, assets=[outlook_messages])
    other_url = f"sqlite:///{tmp_path / 'other.sqlite'}"
    other = {**run_resources, "store": MailStore(database_url=other_url)}
    try:
        passed_other, metadata_other, _ = _freshness(instance, other)
    finally:
        dispose_engine(other_url)

    passed, metadata, _ = _freshness(instance, run_resources)

    assert passed and metadata["stale"] == {}
    assert not passed_other
    assert metadata_other["stale"] == {HYATT: {"latest_day": None, "days_behind": None}}


def test_progress_recorded_without_a_materialization_counts_and_a_failed_day_does_not(
    instance: DagsterInstance, run_resources: dict[str, Any]
) -> None:
    """Freshness is what mailbox_days says: a day recorded done makes a mailbox fresh; a newer day recorded
    failed (a blocking check or an error) is not synced, so the latest done day is what counts."""
    store: MailStore = run_resources["store"]
    instance.add_dynamic_partitions("mailbox", [HYATT, HARRIS])
    done_day, failed_day = REFERENCE_DAY - dt.timedelta(days=5), REFERENCE_DAY
    store.record_days(
        "outlook_messages",
        [MailboxWindow(HYATT, (REFERENCE_DAY,)), MailboxWindow(HARRIS, (done_day, failed_day))],
        rows={},
        failed={mailbox_day_key(HARRIS, failed_day): "listing_complete failed"},
        run_id="r1",
        root_run_id="r1",
    )

    passed, metadata, _ = _freshness(instance, run_resources)

    assert not passed
    assert metadata["stale"] == {HARRIS: {"latest_day": done_day.isoformat(), "days_behind": 5}}


def test_without_as_of_the_check_measures_against_now(instance: DagsterInstance, run_resources: dict[str, Any]) -> None:
    """What the hourly schedule runs: no config, the reference day is yesterday in UTC (the sample
    export has no mail that day, which syncs as an empty day)."""
    yesterday = dt.datetime.now(UTC).date() - dt.timedelta(days=1)
    materialize_days(instance, run_resources, HYATT, yesterday, assets=[outlook_messages])

    passed, metadata, _ = _freshness(instance, run_resources, as_of=None)

    assert passed
    # One day later only if the test ran across midnight UTC.
    assert metadata["reference_day"] in (yesterday.isoformat(), (yesterday + dt.timedelta(days=1)).isoformat())
