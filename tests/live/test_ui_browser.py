"""The Bulk changes page in a real browser, on the live stack (issue 12).

Debian's Chromium (``/usr/bin/chromium``; installed with apt when missing) driven by Playwright for
Python through that executable: nothing is downloaded (``playwright install`` is never run). One
stack per module, on databases of its own on the test server; the api-server has the activation
database connection (and no carrier connection). Users: ``admin`` (may act) and ``viewer`` (reads).

What a person does is what the test does: sign in on Airflow's login page, open the list, trigger a
NEW bulk change from its page, watch its progress move on the list (the page refreshes itself; the
test checks it was never reloaded), open its detail page, find a device by ICCID and open its audit
trail, download the CSV, retry the failed devices and cancel another bulk change, each confirmed;
the page inside Airflow's own navigation and on the run's tab; a viewer sees no action and is
refused one; nothing without signing in. Screenshots go to ``docs/ui/`` (list, detail, device
trail). Every wait is on a state with a generous deadline, never a fixed sleep.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from telegence_activation import repository as repo
from telegence_activation.api_client import run_id_for
from telegence_activation.domain.intake import IntakeOptions
from telegence_activation.domain.report import CSV_COLUMNS
from telegence_activation.intake import BulkChangeSpec, ingest_csv, write_sample_csv
from telegence_local.stack import LiveStack, StackConfig, debian_package

# Under xdist (make test) every module under tests/live/ is one group (tests/conftest.py chooses it
# from the path): the live stacks run on one worker, one after the other.
pytestmark = pytest.mark.timeout(1500)

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "ui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 900}  # a laptop screen
RUN_DEADLINE_MS = 600_000  # a run on a loaded 2-core machine; the waits end as soon as the state is there
PAGE_DEADLINE_MS = 60_000
APP_SECRET = "UI-s3cret-9b2e41c7"
SCENARIO: dict[str, Any] = {
    "name": "ui-test",
    "seed": 12,
    "accounts": [{"app_id": "ui-app-id", "app_secret": APP_SECRET, "write_enabled": True}],
    # Slow enough that the list shows the run under way.
    "activation": {"unit": "seconds", "reserved_after": 1, "done_after": 5},
    "ip_provisioning": {"unit": "seconds", "check_after": 0.3, "reserve_after": 0.6, "done_after": 1.2},
    "ip_pools": [{"pdp_name": "DEMO.PDP", "cidr": "10.20.0.0/16"}],
}
DEVICES = 400
REJECTED = 3


def chromium() -> str:
    """Debian's Chromium, installed with apt when it is missing (the test set-up's one install)."""
    try:
        return debian_package(CHROMIUM, "chromium")
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def stack(pg_server_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    suffix = secrets.token_hex(3)
    live = LiveStack(
        StackConfig(
            home=tmp_path_factory.mktemp("ui-airflow"),
            scenario=SCENARIO,
            db_server_uri=pg_server_uri,
            activation_database=f"telegence_ui_{suffix}",
            airflow_database=f"airflow_ui_{suffix}",
            app_id="ui-app-id",
            app_secret=APP_SECRET,
            extra_env={
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
                "TELEGENCE_TASK_RETRY_DELAY_SECONDS": "2",
            },
        )
    )
    try:
        live.start()
        live.client().unpause()
        yield live
    except BaseException:
        for component in ("api-server", "scheduler"):
            print(f"--- {component} ---\n{live.log_tail(component)}")
        raise
    finally:
        live.stop()
        with psycopg.connect(pg_server_uri, autocommit=True) as conn:
            for database in (live.config.airflow_database, live.config.activation_database):
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def password(stack: LiveStack, user: str) -> str:
    return str(json.loads((stack.config.home / "simple_auth_manager_passwords.json").read_text())[user])


def signed_in(browser: Any, stack: LiveStack, user: str) -> tuple[Any, Any]:
    """A browser context signed in as ``user`` through Airflow's login page, on the list page."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(PAGE_DEADLINE_MS)
    page = context.new_page()
    page.goto(f"{stack.api_url}/telegence/bulk-changes")
    page.wait_for_selector("input[name=username]")  # sent to the login page first
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password(stack, user))
    page.click("button[type=submit]")
    page.wait_for_url("**/telegence/bulk-changes")  # and back to the page asked for
    page.wait_for_selector("table.bulk-changes, p.none")
    return context, page


def new_bulk_change(
    stack: LiveStack, tmp_path: Path, n: int, customer: str, static_ip_every: int = 5
) -> tuple[int, list[str]]:
    path = write_sample_csv(tmp_path / f"ui-{secrets.token_hex(3)}.csv", n, static_ip_every=static_ip_every)
    result = ingest_csv(
        stack.activation_db_uri, path, BulkChangeSpec(1, IntakeOptions("BAN-UI"), customer_name=customer)
    )
    with psycopg.connect(stack.activation_db_uri) as conn:
        iccids = [
            r[0]
            for r in conn.execute(
                "SELECT iccid FROM activation.device_change WHERE bulk_change_id = %s ORDER BY line_number",
                (result.bulk_change_id,),
            )
        ]
    return result.bulk_change_id, iccids


def bulk_change(stack: LiveStack, bc: int) -> dict[str, Any]:
    with psycopg.connect(stack.activation_db_uri) as conn:
        found = repo.get_bulk_change(conn, bc)
    assert found is not None
    return found


def progress_done(page: Any, bc: int) -> int:
    return int(page.get_attribute(f'[data-bulk-change="{bc}"] .progress', "data-done"))


def confirm(page: Any, label: str, fill: dict[str, str] | None = None, check: str | None = None) -> str:
    """Click an action on a bulk change's page, confirm it; the outcome page's message."""
    page.click(f"a.button:has-text('{label}')")
    page.wait_for_selector("form.confirm")
    for selector, value in (fill or {}).items():
        page.fill(selector, value)
    if check:
        page.check(check)
    page.click("form.confirm button[type=submit]")
    page.wait_for_selector("div.notice")
    return str(page.inner_text("div.notice"))


# ---------------------------------------------------------------------------------------- tests


def test_nothing_is_shown_without_signing_in(stack: LiveStack, browser: Any, tmp_path: Path) -> None:
    bc, iccids = new_bulk_change(stack, tmp_path, 5, "Nobody Sees Us Ltd")
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(PAGE_DEADLINE_MS)
    page = context.new_page()
    for path in (
        "/telegence/bulk-changes",
        f"/telegence/bulk-changes/{bc}",
        f"/telegence/runs/{run_id_for(bc)}",
    ):
        page.goto(stack.api_url + path)
        page.wait_for_selector("input[name=username]")
        assert "/auth/login" in page.url
        assert "Nobody Sees Us" not in page.content() and iccids[0] not in page.content()
    for path in (
        f"/bulk-changes/{bc}/report.csv",
        f"/bulk-changes/{bc}/report.json",
        f"/api/bulk-changes/{bc}",
    ):
        answer = context.request.get(f"{stack.api_url}/telegence{path}", max_redirects=0)
        assert answer.status == 401, (path, answer.status)
        assert iccids[0] not in answer.text()
    refused = context.request.post(
        f"{stack.api_url}/telegence/bulk-changes/{bc}/cancel", form={"reason": "x"}, max_redirects=0
    )
    assert refused.status == 401
    assert bulk_change(stack, bc)["cancel_requested_at"] is None
    context.close()


def test_a_bulk_change_from_trigger_to_retry_in_the_browser(
    stack: LiveStack, browser: Any, tmp_path: Path
) -> None:
    assert stack.simulator is not None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    bc, iccids = new_bulk_change(stack, tmp_path, DEVICES, "Acme Fleet Services")
    rejected = iccids[10 : 10 + REJECTED]
    stack.simulator.admin.load_scenario(
        {
            **SCENARIO,
            "outcomes": [{"kind": "reject_activation", "iccids": rejected, "error": "SIM is blocked"}],
        },
        keep_state=True,
    )
    context, page = signed_in(browser, stack, "admin")

    # Cancel a bulk change never started, with a reason; who and why are recorded.
    other, _ = new_bulk_change(stack, tmp_path, 12, "Changed Their Mind Inc")
    page.goto(f"{stack.api_url}/telegence/bulk-changes/{other}")
    outcome = confirm(page, "Cancel", fill={"input[name=reason]": "customer changed the order"})
    assert f"bulk change {other} cancelled by admin" in outcome, outcome
    cancelled = bulk_change(stack, other)
    assert (cancelled["status"], cancelled["cancelled_by"]) == ("CANCELLED", "admin")
    assert cancelled["cancel_reason"] == "customer changed the order"

    # Trigger the 400-device one from its page: confirmed, Airflow starts the CLI's run id as admin.
    page.goto(f"{stack.api_url}/telegence/bulk-changes")
    page.click(f'[data-bulk-change="{bc}"] a[href$="/bulk-changes/{bc}"]')
    page.wait_for_selector("#summary")
    outcome = confirm(page, "Trigger")
    assert f"triggered run {run_id_for(bc)}" in outcome, outcome
    assert stack.client().get_run(run_id_for(bc))["triggering_user_name"] == "admin"

    # The list: the progress moves by itself (the page is never reloaded: the marker stays).
    page.goto(f"{stack.api_url}/telegence/bulk-changes")
    page.evaluate("window.__notReloaded = true")
    row = f'[data-bulk-change="{bc}"] .progress'
    page.wait_for_function(
        f"() => {{ const p = document.querySelector('{row}'); return p && +p.dataset.done > 0; }}",
        timeout=RUN_DEADLINE_MS,
    )
    first = progress_done(page, bc)
    if first < DEVICES:
        page.wait_for_function(
            f"() => +document.querySelector('{row}').dataset.done > {first}", timeout=RUN_DEADLINE_MS
        )
    assert page.evaluate("window.__notReloaded") is True
    assert progress_done(page, bc) > first or first == DEVICES
    page.screenshot(path=str(SCREENSHOTS / "list.png"))

    # Its page refreshes itself to the end: 3 rejected (permanent), the static IPs stopped by policy.
    page.click(f'[data-bulk-change="{bc}"] a[href$="/bulk-changes/{bc}"]')
    page.evaluate("window.__notReloaded = true")
    page.wait_for_selector('#summary[data-status="ERROR"]', timeout=RUN_DEADLINE_MS)
    assert page.evaluate("window.__notReloaded") is True
    assert page.inner_text("#summary h1 .badge") == "ERROR"
    assert page.locator("a.button:has-text('Retry failed')").count() == 1
    assert page.locator("a.button:has-text('Cancel')").count() == 0
    reasons = page.inner_text("table.failure-reasons")
    assert "SIM is blocked" in reasons and "permanent" in reasons and "stopped_by_policy" in reasons
    # The head of the page (figures, steps, failures, the first devices), not all 50 rows.
    page.screenshot(
        path=str(SCREENSHOTS / "detail.png"),
        full_page=True,
        clip={"x": 0, "y": 0, "width": 1366, "height": 1250},
    )

    # The CSV report: every device, the CLI's columns.
    with page.expect_download() as download:
        page.click("a.button:has-text('CSV')")
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS and sorted(r[1] for r in rows[1:]) == sorted(iccids)
    assert {r[3] for r in rows[1:] if r[1] in rejected} == {"ERROR"}

    # Find a rejected device by its ICCID and open its audit trail.
    page.fill("input[name=q]", rejected[1])
    page.click("form.toolbar button:has-text('Search')")
    page.wait_for_selector(f'tr[data-iccid="{rejected[1]}"]')
    assert page.locator("table.devices tbody tr").count() == 1
    page.click(f'tr[data-iccid="{rejected[1]}"] a')
    page.wait_for_selector("table.trail")
    assert "SIM is blocked" in page.inner_text("table.trail")

    # Retry every failed device (rejections are permanent: "every class") once the carrier takes them.
    stack.simulator.admin.load_scenario(SCENARIO, keep_state=True)
    page.goto(f"{stack.api_url}/telegence/bulk-changes/{bc}")
    outcome = confirm(page, "Retry failed", check="input[name=classes][value=all]")
    assert "reset" in outcome and f"run {run_id_for(bc)}" in outcome, outcome
    page.goto(f"{stack.api_url}/telegence/bulk-changes/{bc}")
    page.wait_for_selector('#summary[data-status="PROCESSED"]', timeout=RUN_DEADLINE_MS)
    device_trail = page.url + f"?q={rejected[1]}"
    page.goto(device_trail)
    page.click(f'tr[data-iccid="{rejected[1]}"] a')
    page.wait_for_selector("table.trail")
    trail = page.inner_text("table.trail")
    assert "retry-failed by admin" in trail and "PROCESSED" in trail
    page.screenshot(path=str(SCREENSHOTS / "device-trail.png"), full_page=True)

    context.close()


def test_the_page_lives_in_airflows_navigation_and_on_the_run(
    stack: LiveStack, browser: Any, tmp_path: Path
) -> None:
    bc, _ = new_bulk_change(stack, tmp_path, 6, "Tabbed Co")
    stack.client().trigger({"bulk_change_id": bc, "activation_check_interval_seconds": 2}, run_id_for(bc))
    context, page = signed_in(browser, stack, "admin")
    # The navigation entry: Airflow's page with the list in its frame.
    page.goto(f"{stack.api_url}/plugin/bulk-changes")
    frame = page.frame_locator("iframe")
    frame.locator(f'[data-bulk-change="{bc}"]').wait_for()
    # The run link inside the frame moves Airflow itself to the run's page (not Airflow in the frame).
    frame.locator(f'[data-bulk-change="{bc}"] a[data-airflow-route]').click()
    page.wait_for_url(re.compile(rf".*/dags/telegence_new_service_activation/runs/{run_id_for(bc)}$"))
    # The run's "Bulk change" tab shows the bulk change of that run.
    page.goto(
        f"{stack.api_url}/dags/telegence_new_service_activation/runs/{run_id_for(bc)}/plugin/bulk-change"
    )
    page.frame_locator("iframe").locator("h1", has_text=f"Bulk change {bc}").wait_for()
    context.close()


def test_a_viewer_reads_but_cannot_act(stack: LiveStack, browser: Any, tmp_path: Path) -> None:
    bc, _ = new_bulk_change(stack, tmp_path, 4, "Read Only Partners")
    context, page = signed_in(browser, stack, "viewer")
    page.goto(f"{stack.api_url}/telegence/bulk-changes/{bc}")
    page.wait_for_selector("#summary")
    assert "signed in as viewer" in page.inner_text("header")
    assert page.locator("a.button:has-text('Cancel')").count() == 0
    assert page.locator("a.button:has-text('Trigger')").count() == 0
    answer = context.request.get(f"{stack.api_url}/telegence/bulk-changes/{bc}/confirm/cancel")
    assert answer.status == 403
    refused = context.request.post(
        f"{stack.api_url}/telegence/bulk-changes/{bc}/cancel", form={"reason": "no", "confirm": "1.x"}
    )
    assert refused.status == 403
    assert bulk_change(stack, bc)["cancel_requested_at"] is None
    context.close()
