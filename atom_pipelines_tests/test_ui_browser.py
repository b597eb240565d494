"""The Dagster UI, driven in a real browser the way an analyst uses it, on a production-like deployment.

Protects what no GraphQL or in-process test can see: that the partitions dialog of the UI, fed by our
mailbox partitions (one dynamic partition per mailbox; the days are the run's ``atom/first_day`` and
``atom/last_day`` tags), launches the backfill an analyst means (two mailboxes, a date range, the three
partitioned assets), that the daemon carries it out into the store, and that a failed extraction is shown
red on the asset's Checks tab (production's bug was a silent empty; a check nobody sees is little better).

One deployment for both scenarios: ``dagster dev`` (webserver, daemon, code server, run workers) with the
repo's ``dagster.yaml`` on a fresh PostgreSQL database (instance storage and pipeline store), extraction
through the chain ``openai:gpt-4o-mini`` alone (no heuristic fallback) pointed at the OpenAI-compatible test
server of ``servers/openai_server.py`` running in this process. The server environment is fixed at start,
so the test switches the *server's* behaviour between the scenarios: schema-valid answers first, empty
contents (what reasoning models sent in production) second.

1. Scenario 1, a backfill from the partitions dialog: Lineage page, the three partitioned assets typed in
   the asset selection box, "Materialize all…", the two mailboxes picked in the dialog's partition list,
   the date range as the two day tags in its "Tags" section ("Add tags", applied to every backfill run),
   "Launch backfill"; the backfill id read from the UI's toast; the backfill polled through GraphQL until
   the daemon (30 s ticks) has completed it; the backfill page shown "Succeeded"; its runs carry the day
   tags; the store then holds exactly the export's messages of those days, extracted by the model, and its
   ``mailbox_days`` exactly those days done for each mailbox and asset (no other day was synced).
2. Scenario 2, a failing extraction shown red: the same dialog with one mailbox and one day (both day tags
   the same), "Launch 1 run" (a single run, not a backfill), the run read from the toast's link and awaited
   through GraphQL (FAILURE, the blocking check ``extraction_succeeded`` named), then the asset's page,
   "Checks" tab: ``extraction_succeeded`` reads "Failed" with the UI's red icon and a red evaluation tag;
   the asset's "Partitions" tab lists the mailboxes as its partitions, and the failing mailbox's latest
   materialization counts its mailbox-days (3 done, 1 failed: a blocking check fails after its asset
   materialized, so the partition itself reads materialized); the store records the day failed for
   ``email_entities``, naming the check.

Screenshots (asset graph, dialog filled in, completed backfill, the red check, the mailbox partitions, and
the page at a failure)
go to the test's tmp dir and to ``$ATOM_UI_SCREENSHOT_DIR`` when set. Chromium is Debian's
``/usr/bin/chromium`` (``scripts/_chromium.sh`` installs it from apt); under CI=true its absence fails the
test, elsewhere it skips saying so.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from atom_pipelines.partitions import CHAIN, days_between
from atom_pipelines.tags import FIRST_DAY_TAG, LAST_DAY_TAG
from atom_pipelines_tests.conftest import IN_CI, corpus_records
from atom_pipelines_tests.dagster_dev import (
    Server,
    dagster_dev,
    deployment_env,
    run_errors,
    runs_tagged,
    wait_for_backfill,
    wait_for_location,
    wait_for_mailboxes,
    wait_for_status,
)
from atom_pipelines_tests.servers.openai_server import Behaviour, OpenAICompatibleServer

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = [pytest.mark.server, pytest.mark.postgres, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
MAILBOX = "kevin.hyatt@enron.com"
#: The backfill's two mailboxes (the export holds only these): sorted, as the UI lists and ranges them.
MAILBOXES = (MAILBOX, "steven.harris@enron.com")
BACKFILL_DAYS = (dt.date(2001, 11, 26), dt.date(2001, 11, 28))  # inclusive; 1 + 5 + 1 and 0 + 2 + 2 messages
FAILING_DAY = dt.date(2001, 11, 20)  # 1 message of MAILBOX, none of the backfill's (so no cached good answer)
MODEL = "gpt-4o-mini"
API_KEY = "sk-ui-browser-test"
PARTITIONED_ASSETS = ("outlook_messages", "email_entities", "entity_links")
# The asset selection an analyst types in the Lineage page's filter box (Dagster's selection syntax).
ASSET_SELECTION = " or ".join(f"key:{asset}" for asset in PARTITIONED_ASSETS)
UI_TIMEOUT_MS = 30_000  # a React app on 2 shared cores, with the daemon and run workers busy beside it


def _require_browser() -> None:
    """Chromium and Playwright's Python package, or a loud skip (a failure under CI=true)."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} missing: run ./scripts/test (scripts/_chromium.sh installs Debian's chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401 - only whether it imports
        except ImportError as exc:
            problem = f"Playwright's Python package missing ({exc}): pip install -e '.[dev]'"
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"BROWSER TEST CANNOT RUN: {problem} (CI=true: it may not be skipped)", pytrace=False)
    warnings.warn(f"BROWSER TEST SKIPPED: {problem}", pytest.PytestWarning, stacklevel=2)
    pytest.skip(f"BROWSER TEST SKIPPED: {problem}")


class Screenshots:
    """Saves each screenshot to the test's tmp dir and to $ATOM_UI_SCREENSHOT_DIR when set."""

    def __init__(self, tmp_path: Path) -> None:
        self.directories = [tmp_path / "screenshots"]
        if os.environ.get("ATOM_UI_SCREENSHOT_DIR"):
            self.directories.append(Path(os.environ["ATOM_UI_SCREENSHOT_DIR"]))
        for directory in self.directories:
            directory.mkdir(parents=True, exist_ok=True)
        self.saved: list[Path] = []

    def take(self, page: Page, name: str) -> None:
        first = self.directories[0] / f"{name}.png"
        page.screenshot(path=str(first), full_page=True)
        for directory in self.directories[1:]:
            shutil.copyfile(first, directory / first.name)
        self.saved.append(first)
        print(f"screenshot {first}")


@contextmanager
def browser_page(screenshots: Screenshots) -> Iterator[Page]:
    """A page of headless Debian Chromium; the page as it stood is saved when the block fails, and the
    browser is closed whatever happens."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(UI_TIMEOUT_MS)
            # A fresh instance greets its first visitor with a newsletter dialog over whatever page is open.
            page.add_locator_handler(
                page.get_by_text("Join the Dagster community"),
                lambda: page.get_by_role("button", name="Skip").click(),
            )
            try:
                yield page
            except BaseException:
                try:
                    screenshots.take(page, "failure")
                except Exception as exc:  # noqa: BLE001 - the test's own failure is the one to report
                    print(f"could not save the failure screenshot: {type(exc).__name__}: {exc}")
                raise
        finally:
            browser.close()


def _expected_messages(
    first: dt.date, last: dt.date, mailboxes: tuple[str, ...] = MAILBOXES
) -> set[tuple[str, str, dt.date]]:
    """(mailbox, message id, UTC day) of every export record of ``mailboxes`` received from ``first`` to ``last``."""
    expected = set()
    for record in corpus_records(set(mailboxes)):
        day = dt.datetime.fromisoformat(record["receivedDateTime"]).astimezone(dt.timezone.utc).date()
        if first <= day <= last:
            expected.add((record["mailbox"], record["id"], day))
    return expected


def _open_partitioned_assets(page: Page, server: Server) -> None:
    """Lineage page, the three partitioned assets typed into its asset selection box."""
    from playwright.sync_api import expect

    page.goto(f"http://127.0.0.1:{server.port}/asset-groups")
    page.wait_for_load_state("networkidle")
    box = page.get_by_role("textbox", name="Search and filter assets")
    for _ in range(3):
        # Typed key by key as a person does. The box is a CodeMirror editor whose <textarea> (the accessible
        # textbox) lies under the rendered lines, so it is focused rather than clicked. On a fresh instance the
        # newsletter dialog can open mid-typing and swallow keys: then the URL's selection is not ours; again.
        box.focus()
        page.keyboard.press("Control+A")
        page.keyboard.press("Backspace")
        box.press_sequentially(ASSET_SELECTION)
        box.press("Enter")
        try:
            expect(page).to_have_url(re.compile(re.escape(quote(ASSET_SELECTION))), timeout=5_000)
            break
        except AssertionError:
            continue
    expect(page).to_have_url(re.compile(re.escape(quote(ASSET_SELECTION))))
    for asset in PARTITIONED_ASSETS:
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    expect(page.get_by_text("entity_graph", exact=True)).to_have_count(0)


def _fill_partitions_dialog(page: Page, mailboxes: tuple[str, ...], first: dt.date, last: dt.date) -> Locator:
    """The "Materialize all…" button, then in the partitions dialog the mailboxes (the partitions) and the days
    (the two day tags, in its "Tags" section); returns the dialog."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="Materialize all").click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    expect(dialog.get_by_text(f"Launch runs to materialize {len(PARTITIONED_ASSETS)} assets")).to_be_visible()
    # The partitions are mailboxes: no date range to type (the mailbox x day scheme had one).
    expect(dialog.get_by_placeholder(re.compile(r"^ex: \d{4}-\d{2}-\d{2}"))).to_have_count(0)
    dialog.get_by_text("Select a partition or create one").click()
    for mailbox in mailboxes:
        page.get_by_placeholder("Filter partitions").fill(mailbox)
        # The checkbox is drawn over a hidden <input>: click the mailbox's row; the input must then read checked.
        page.get_by_text(mailbox, exact=True).locator("visible=true").first.click()
        expect(page.get_by_role("checkbox", name=mailbox)).to_be_checked()
    dialog.get_by_text(f"Launch runs to materialize {len(PARTITIONED_ASSETS)} assets").click()  # closes the list
    expect(page.get_by_placeholder("Filter partitions")).to_have_count(0)
    count = len(mailboxes)
    expect(dialog.get_by_text(f"{count} partition{'s' if count != 1 else ''}", exact=True)).to_be_visible()

    # The days: the "Tags" section (collapsed), "Add tags", one row per tag, "Apply".
    dialog.get_by_text("Tags", exact=True).click()
    dialog.get_by_role("button", name="Add tags").click()
    editor = page.get_by_role("dialog").filter(has_text="Add tags to run")
    for row, (key, value) in enumerate(((FIRST_DAY_TAG, first.isoformat()), (LAST_DAY_TAG, last.isoformat()))):
        if row:
            editor.get_by_role("button", name="Add custom tag").click()
        editor.get_by_placeholder("Tag Key").nth(row).fill(key)
        editor.get_by_placeholder("Tag Value").nth(row).fill(value)
    editor.get_by_role("button", name="Apply").click()
    expect(editor).to_have_count(0)
    expect(dialog.get_by_text("2 tags", exact=True)).to_be_visible()
    for text in (FIRST_DAY_TAG, LAST_DAY_TAG, first.isoformat(), last.isoformat()):
        expect(dialog).to_contain_text(text)
    return dialog


def _store(database_url: str) -> dict[str, set]:
    """What the store holds: messages (mailbox, id, day), entity (mailbox, day)s, the providers:models behind
    the entities, and the progress (asset, mailbox, day, status)."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {
                "messages": {tuple(r) for r in conn.execute(sa.text("select mailbox, message_id, day from messages"))},
                "entity_days": {tuple(r) for r in conn.execute(sa.text("select distinct mailbox, day from entities"))},
                "providers": set(
                    conn.execute(sa.text("select distinct provider || ':' || model from entities")).scalars()
                ),
                "progress": {
                    tuple(r) for r in conn.execute(sa.text("select asset, mailbox, day, status from mailbox_days"))
                },
            }
    finally:
        engine.dispose()


def _assert_red(locator: Locator, what: str) -> None:
    """The element's computed colour (an icon's mask colour, else its text colour) is a red."""
    rgb = locator.evaluate(
        """element => {
            const style = getComputedStyle(element);
            return element.getAttribute('role') === 'img' ? style.backgroundColor : style.color;
        }"""
    )
    red, green, blue = (int(part) for part in re.findall(r"\d+", rgb)[:3])
    assert red > 100 and red > 2 * green and red > 2 * blue, f"{what} is {rgb}, not red"


def test_analyst_backfills_a_mailbox_and_sees_a_failed_extraction_red(
    tmp_path: Path, postgres_database_url: str
) -> None:
    _require_browser()
    from playwright.sync_api import expect

    expect.set_options(timeout=UI_TIMEOUT_MS)
    started = time.monotonic()

    def phase(what: str) -> None:  # where the time goes, shown with -s or on failure
        print(f"{time.monotonic() - started:6.1f}s {what}")

    screenshots = Screenshots(tmp_path)
    first_day, last_day = BACKFILL_DAYS
    expected = _expected_messages(first_day, last_day)
    assert {mailbox for mailbox, _, _ in expected} == set(MAILBOXES), f"{first_day}..{last_day}: {expected}"
    failing_messages = _expected_messages(FAILING_DAY, FAILING_DAY, (MAILBOX,))
    assert failing_messages, f"the corpus has no message of {MAILBOX} on {FAILING_DAY}"
    assert not _expected_messages(FAILING_DAY, FAILING_DAY) - failing_messages
    backfill_days = days_between(first_day, last_day)

    with OpenAICompatibleServer(accepted_keys={API_KEY}) as llm:
        env = deployment_env(
            tmp_path,
            postgres_database_url,
            corpus_records(set(MAILBOXES)),
            ATOM_LLM_CHAIN=f"openai:{MODEL}",  # no heuristic fallback: an empty answer must fail the check
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY=API_KEY,
        )
        with dagster_dev(env, tmp_path) as server, browser_page(screenshots) as page:
            wait_for_location(server)
            wait_for_mailboxes(server, set(MAILBOXES))
            phase("code location loaded, mailboxes registered by the sensor")

            # -- Scenario 1: a backfill of two mailboxes over a date range, from the partitions dialog --------
            _open_partitioned_assets(page, server)
            screenshots.take(page, "1-asset-graph")
            dialog = _fill_partitions_dialog(page, MAILBOXES, first_day, last_day)
            screenshots.take(page, "2-backfill-dialog")
            dialog.get_by_role("button", name="Launch backfill").click()
            toast = page.get_by_text(re.compile(r"^Created backfill \w+$"))
            backfill_id = toast.inner_text().split()[-1]
            page.get_by_role("link", name="View", exact=True).click()
            expect(page).to_have_url(re.compile(rf"/runs/b/{backfill_id}"))
            phase(f"backfill {backfill_id} launched from the dialog")

            finished = wait_for_backfill(server, backfill_id)
            phase(f"backfill {backfill_id} {finished['status']}")
            assert finished["isAssetBackfill"]
            assert sorted(finished["partitionNames"]) == sorted(MAILBOXES)  # the partitions are mailboxes
            assert sorted(key["path"][-1] for key in finished["assetSelection"]) == sorted(PARTITIONED_ASSETS)
            # The dialog's tags reached every run of the backfill: a date-range re-sync, not a catch-up.
            backfill_runs = runs_tagged(server, {"dagster/backfill": backfill_id})
            assert backfill_runs, f"backfill {backfill_id} launched no run"
            for run in backfill_runs:
                assert run["tags"].get(FIRST_DAY_TAG) == first_day.isoformat(), run
                assert run["tags"].get(LAST_DAY_TAG) == last_day.isoformat(), run
            page.reload()
            # The backfill's status tag (the runs table's "Succeeded" column header is a link).
            expect(page.get_by_text("Succeeded", exact=True).and_(page.locator(":not(a)"))).to_be_visible()
            expect(page.get_by_text("100% completed")).to_have_count(len(PARTITIONED_ASSETS))
            screenshots.take(page, "3-backfill-completed")

            store = _store(env["ATOM_DATABASE_URL"])
            stored = store["messages"]
            assert stored == expected, f"missing {expected - stored}, unexpected {stored - expected}"
            assert store["entity_days"] == {(m, day) for m, _, day in expected}, "a day's messages gave no entities"
            assert store["providers"] == {f"openai:{MODEL}"}, f"entities came from {store['providers']}, not the model"
            # Exactly the dialog's days, done for each mailbox and asset (days without mail included).
            assert store["progress"] == {
                (asset, mailbox, day, "done") for asset in CHAIN for mailbox in MAILBOXES for day in backfill_days
            }, sorted(store["progress"])
            assert llm.requests_for(MODEL) >= len({message for mailbox, message, _ in expected if mailbox == MAILBOX})

            # -- Scenario 2: the model answers empty contents; the check turns red in the UI -------------------
            llm.set_default(Behaviour("empty"))
            _open_partitioned_assets(page, server)
            dialog = _fill_partitions_dialog(page, (MAILBOX,), FAILING_DAY, FAILING_DAY)
            dialog.get_by_role("button", name="Launch 1 run").click()
            expect(page.get_by_text(re.compile(r"^Launched run \w+$"))).to_be_visible()
            page.get_by_role("link", name="View", exact=True).click()
            expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
            run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
            phase(f"run {run_id} of {FAILING_DAY} launched from the dialog")
            wait_for_status(server, run_id, "FAILURE")
            errors = run_errors(server, run_id)
            assert "extraction_succeeded" in errors, errors
            phase(f"run {run_id} failed on the blocking check")

            page.goto(f"http://127.0.0.1:{server.port}/assets/email_entities")
            page.get_by_role("tab", name="Checks").click()
            # The checks list: the row of extraction_succeeded (the nearest box around its name that holds a
            # status icon) reads "Failed" beside the UI's red "cancel" icon.
            name = page.get_by_title("extraction_succeeded", exact=True)
            row = name.locator("xpath=ancestor::div[.//*[@role='img']][1]")
            expect(row).to_contain_text("Failed")
            icon = row.get_by_role("img", name="cancel")
            expect(icon).to_be_visible()
            _assert_red(icon, "the status icon of extraction_succeeded")
            # Its latest execution, once the check is selected: the evaluation result tag reads "Failed", red
            # (the last "Failed" on the page: the list's comes first).
            name.click()
            expect(page.get_by_text("Latest execution")).to_be_visible()
            expect(page.get_by_text("Evaluation result")).to_be_visible()
            evaluation = page.get_by_text("Failed", exact=True).locator("visible=true")
            expect(evaluation).to_have_count(2)
            _assert_red(evaluation.last, "the evaluation result of extraction_succeeded")
            page.wait_for_load_state("networkidle")  # icons are CSS masks of SVGs fetched after the render
            screenshots.take(page, "4-check-failed")

            # The asset's partitions are the mailboxes. A blocking check fails after its asset materialized, so
            # the mailbox's partition reads materialized: its failed day is in the materialization's metadata,
            # the mailbox-days of the mailbox (3 done by the backfill, FAILING_DAY failed).
            page.goto(f"http://127.0.0.1:{server.port}/assets/email_entities?view=partitions")
            for mailbox in MAILBOXES:
                expect(page.get_by_text(mailbox, exact=True).first).to_be_visible()
            page.get_by_text(MAILBOX, exact=True).first.click()
            for key, value in (("mailbox_days_done", len(backfill_days)), ("mailbox_days_failed", 1)):
                row = page.locator("tr").filter(has=page.get_by_text(key, exact=True))
                expect(row.first).to_have_text(re.compile(rf"^\s*{key}\s*{value}\s*$"))
            page.wait_for_load_state("networkidle")
            screenshots.take(page, "5-mailbox-partitions")
        phase("browser closed, every process stopped")

    engine = sa.create_engine(env["ATOM_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            outcomes = set(
                conn.execute(
                    sa.text("select outcome from extraction_outcomes where day = :day"), {"day": FAILING_DAY}
                ).scalars()
            )
            progress = [
                tuple(row)
                for row in conn.execute(sa.text("select asset, mailbox, day, status, detail from mailbox_days"))
            ]
    finally:
        engine.dispose()
    assert outcomes == {"no_content"}, f"the failing day's extraction outcomes are {outcomes}"
    # The failed run's day is recorded failed for email_entities, naming the blocking check; nothing
    # downstream of it ran; outlook_messages stored its message (done).
    assert {(asset, status) for asset, mailbox, day, status, _ in progress if day == FAILING_DAY} == {
        ("outlook_messages", "done"),
        ("email_entities", "failed"),
    }, progress
    [detail] = [detail for asset, _, day, status, detail in progress if day == FAILING_DAY and status == "failed"]
    assert "extraction_succeeded" in detail, detail
