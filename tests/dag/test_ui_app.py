"""The Bulk changes page (``telegence_activation.ui``) inside Airflow's real api-server app.

The app under test is Airflow's own ``create_app()`` (what ``airflow api-server`` serves): the
package's plugin is found through its entry point and mounted under ``/telegence``, behind the
api-server's middleware and auth manager (SimpleAuthManager; tokens minted by it for an admin, a
"user" and a viewer). Data come from the session's real activation database. Airflow's REST API is
not reached from here: trigger and retry get a recording stand-in client (the live browser test does
them for real).
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from telegence_activation import repository as repo
from telegence_activation.api_client import AirflowApiError, dry_run_id_for, run_id_for
from telegence_activation.domain.report import CSV_COLUMNS

pytestmark = pytest.mark.timeout(600)

PREFIX = "/telegence"
HTML = {"Accept": "text/html"}


class FakeAirflow:
    """Stands in for the REST client: records triggers and clears, answers a run's state."""

    def __init__(self) -> None:
        self.triggered: list[tuple[dict[str, Any], str]] = []
        self.cleared: list[str] = []
        self.run_state = "success"
        self.users: list[str] = []

    def client(self, user: Any) -> FakeAirflow:
        self.users.append(user.get_name())
        return self

    def trigger(self, conf: dict[str, Any], run_id: str) -> dict[str, Any]:
        if any(r == run_id for _, r in self.triggered):
            raise AirflowApiError(409, f"run {run_id} exists")
        self.triggered.append((conf, run_id))
        return {"dag_run_id": run_id, "state": "queued"}

    def get_run(self, run_id: str) -> dict[str, Any]:
        return {"dag_run_id": run_id, "state": self.run_state}

    def clear(self, run_id: str, task_ids: Any = None, *, only_failed: bool) -> list[dict[str, Any]]:
        self.cleared.append(run_id)
        return [{"task_id": "prepare"}]


@pytest.fixture(scope="module")
def api(airflow_db: None, db_uri: str) -> Iterator[Any]:
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    purge_cached_app()
    app = create_app(apps="core")
    with TestClient(app, base_url="http://127.0.0.1:8080") as client:
        yield client
    purge_cached_app()


@pytest.fixture
def fake_airflow(api: Any) -> Iterator[FakeAirflow]:
    from telegence_activation.plugin import TelegenceActivationPlugin

    fake = FakeAirflow()
    ui_app = TelegenceActivationPlugin.fastapi_apps[0]["app"].get()
    ui_app.state.airflow_client_factory = fake.client
    yield fake
    del ui_app.state.airflow_client_factory


def token(role: str, name: str | None = None) -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return str(get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=name or role, role=role)))


def as_(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role)}", **HTML}


def set_devices(
    db: psycopg.Connection, bc: int, n: int, status: str, reason: str | None, *, offset: int = 0
) -> list[int]:
    """Put ``n`` devices of a bulk change (from line ``offset + 1``) in ``status`` with ``reason``."""
    rows = db.execute(
        """UPDATE activation.device_change SET status = %s, status_details = %s, updated_at = now()
            WHERE id IN (SELECT id FROM activation.device_change WHERE bulk_change_id = %s
                          ORDER BY line_number OFFSET %s LIMIT %s)
        RETURNING id""",
        (status, reason, bc, offset, n),
    ).fetchall()
    return sorted(r[0] for r in rows)


def set_bulk_change(db: psycopg.Connection, bc: int, status: str, **fields: Any) -> None:
    sets = ", ".join([*(f"{k} = %({k})s" for k in fields), "status = %(status)s"])
    db.execute(
        f"UPDATE activation.bulk_change SET {sets} WHERE id = %(id)s", {**fields, "status": status, "id": bc}
    )


def listed_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'data-bulk-change="(\d+)"', html)]


def confirm_token_of(api: Any, bc: int, action: str, headers: dict[str, str]) -> str:
    page = api.get(f"{PREFIX}/bulk-changes/{bc}/confirm/{action}", headers=headers)
    assert page.status_code == 200, page.text
    found = re.search(r'name="confirm" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


# ------------------------------------------------------------------------------ registration


def test_the_plugin_mounts_the_app_and_adds_a_nav_entry_and_a_run_tab(api: Any) -> None:
    from telegence_activation.plugin import TelegenceActivationPlugin

    (mounted,) = TelegenceActivationPlugin.fastapi_apps
    assert mounted["url_prefix"] == PREFIX
    views = {v["destination"]: v for v in TelegenceActivationPlugin.external_views}
    assert views["nav"]["href"] == f"{PREFIX}/bulk-changes" and views["nav"]["url_route"] == "bulk-changes"
    assert views["dag_run"]["href"] == f"{PREFIX}/runs/{{RUN_ID}}?dag_id={{DAG_ID}}"
    assert views["dag_run"]["url_route"] == "bulk-change"
    # The UI learns them from the plugins endpoint (an admin may read it).
    plugins = api.get("/api/v2/plugins", headers=as_("admin")).json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "telegence_activation")
    assert {v["url_route"] for v in ours["external_views"]} == {"bulk-changes", "bulk-change"}
    # Static parts need no login and hold no data.
    assert api.get(f"{PREFIX}/static/app.js").status_code == 200
    assert api.get(f"{PREFIX}/static/icon.svg").headers["content-type"].startswith("image/svg+xml")


def test_the_run_id_rule_is_the_clis() -> None:
    from telegence_activation.ui.pages import RUN_ID_PATTERN

    for bc in (1, 42, 123456):
        for run_id in (run_id_for(bc), dry_run_id_for(bc, "20260101T000000")):
            found = RUN_ID_PATTERN.match(run_id)
            assert found and int(found.group(1)) == bc
    assert RUN_ID_PATTERN.match("manual__2026-01-01T00:00:00+00:00") is None


# ------------------------------------------------------------------------------ authentication


def test_without_a_valid_login_there_is_nothing_but_the_login_page_or_401(
    api: Any, make_bulk_change: Callable[..., Any]
) -> None:
    bc = make_bulk_change(3)
    iccid = bc.iccids[0]
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Cookie": "_token=forged"}):
        page = api.get(f"{PREFIX}/bulk-changes/{bc.id}", headers={**HTML, **headers}, follow_redirects=False)
        assert page.status_code == 303, (headers, page.status_code)
        assert page.headers["location"].startswith("/auth/login?next="), page.headers["location"]
        assert iccid not in page.text
        for path in (
            f"/api/bulk-changes/{bc.id}",
            f"/bulk-changes/{bc.id}/report.csv",
            "/bulk-changes/_live",
        ):
            answer = api.get(PREFIX + path, headers=headers, follow_redirects=False)
            assert answer.status_code == 401, (path, headers, answer.status_code)
            assert iccid not in answer.text and "devices_by_status" not in answer.text
        # The page's own refresh requests are not sent to the login page either.
        fetch = api.get(
            f"{PREFIX}/bulk-changes/_live", headers={**HTML, **headers, "X-Requested-With": "fetch"}
        )
        assert fetch.status_code == 401
    refused = api.post(f"{PREFIX}/bulk-changes/{bc.id}/cancel", data={"reason": "x"}, follow_redirects=False)
    assert refused.status_code == 401
    # An expired token is no login either.
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    expired = get_auth_manager().generate_jwt(
        SimpleAuthManagerUser(username="admin", role="admin"), expiration_time_in_seconds=-60
    )
    answer = api.get(f"{PREFIX}/api/bulk-changes/{bc.id}", headers={"Authorization": f"Bearer {expired}"})
    assert answer.status_code == 401


def test_the_ui_cookie_and_a_bearer_token_both_sign_in(
    api: Any, make_bulk_change: Callable[..., Any]
) -> None:
    bc = make_bulk_change(2)
    by_cookie = api.get(f"{PREFIX}/api/bulk-changes/{bc.id}", cookies={"_token": token("viewer")})
    assert by_cookie.status_code == 200 and by_cookie.json()["devices_by_status"] == {"NEW": 2}
    by_header = api.get(
        f"{PREFIX}/api/bulk-changes/{bc.id}", headers={"Authorization": f"Bearer {token('viewer')}"}
    )
    assert by_header.json() == by_cookie.json()
    api.cookies.clear()


# ------------------------------------------------------------------------------ list and detail


def test_the_list_is_newest_first_with_progress_and_a_status_filter(
    api: Any, db: psycopg.Connection, make_bulk_change: Callable[..., Any]
) -> None:
    older, newer = make_bulk_change(10), make_bulk_change(4)
    set_bulk_change(db, older.id, "PROCESSING", dag_run_id=run_id_for(older.id))
    set_devices(db, older.id, 6, "PROCESSED", None)
    set_devices(db, older.id, 1, "ERROR", "activation rejected by the carrier: SIM blocked", offset=6)
    page = api.get(f"{PREFIX}/bulk-changes", headers=as_("viewer"))
    assert page.status_code == 200
    ids = listed_ids(page.text)
    assert ids.index(newer.id) < ids.index(older.id) and ids == sorted(ids, reverse=True)
    row = page.text[page.text.index(f'data-bulk-change="{older.id}"') :]
    assert 'data-total="10" data-done="7" data-processed="6"' in row
    assert f'/dags/telegence_new_service_activation/runs/{run_id_for(older.id)}"' in row
    assert 'data-poll-ms="3000"' in page.text  # something runs: the list refreshes itself
    only = api.get(f"{PREFIX}/bulk-changes?status=PROCESSING", headers=as_("viewer"))
    assert older.id in listed_ids(only.text) and newer.id not in listed_ids(only.text)
    assert api.get(f"{PREFIX}/bulk-changes?status=BOGUS", headers=as_("viewer")).status_code == 400
    fragment = api.get(f"{PREFIX}/bulk-changes/_live?status=PROCESSING", headers=as_("viewer"))
    assert fragment.text.lstrip().startswith('<section id="bulk-changes"') and "<html" not in fragment.text


def test_the_detail_groups_failures_and_pages_devices_by_key(
    api: Any, db: psycopg.Connection, make_bulk_change: Callable[..., Any]
) -> None:
    bc = make_bulk_change(120, static_ip_every=0)
    set_bulk_change(db, bc.id, "ERROR", dag_run_id=run_id_for(bc.id))
    set_devices(db, bc.id, 100, "PROCESSED", None)
    set_devices(db, bc.id, 12, "ERROR", "activation rejected by the carrier: SIM blocked", offset=100)
    set_devices(
        db, bc.id, 5, "ERROR", "activation not confirmed by the carrier before the deadline", offset=112
    )
    set_devices(db, bc.id, 3, "API_FAILED", "carrier unavailable: HTTP 503 after 5 attempt(s)", offset=117)
    page = api.get(f"{PREFIX}/bulk-changes/{bc.id}", headers=as_("viewer")).text
    failures = page[page.index('class="failure-classes"') :]
    assert re.search(r"<td>permanent</td><td class=\"num\">12</td>", failures), failures[:800]
    assert re.search(r"<td>retryable</td><td class=\"num\">8</td>", failures)
    reasons = page[page.index('class="failure-reasons"') :]
    assert "SIM blocked" in reasons and ">sim_not_eligible<" in reasons and ">deadline<" in reasons
    assert 'data-poll-ms="0"' in page  # finished: no refresh
    # Keyset pages of 50: 50, 50, 20, in line order; each next page starts after the last id shown.
    seen: list[str] = []
    url = f"{PREFIX}/bulk-changes/{bc.id}"
    while url:
        html = api.get(url, headers=as_("viewer")).text
        seen += re.findall(r'<tr data-iccid="(\d+)"', html)
        nxt = re.search(r'href="([^"]+after=\d+)#devices"', html)
        url = nxt.group(1).replace("&amp;", "&") if nxt else ""
    assert seen == bc.iccids
    # Search by the start of an ICCID, an IMEI or an MDN.
    target = bc.iccids[57]
    db.execute(
        "UPDATE activation.device_change SET subscriber_number = '5551234567' WHERE bulk_change_id = %s AND iccid = %s",
        (bc.id, target),
    )
    imei = db.execute(
        "SELECT imei FROM activation.device_change WHERE bulk_change_id = %s AND iccid = %s", (bc.id, target)
    ).fetchone()[0]
    for q in (target, imei, "5551234567", "555123"):
        found = re.findall(
            r'<tr data-iccid="(\d+)"',
            api.get(f"{PREFIX}/bulk-changes/{bc.id}?q={q}", headers=as_("viewer")).text,
        )
        assert found == [target], q
    assert api.get(f"{PREFIX}/bulk-changes/{bc.id}?q=89%25", headers=as_("viewer")).status_code == 400
    assert api.get(f"{PREFIX}/bulk-changes/999999", headers=as_("viewer")).status_code == 404


def test_a_device_shows_its_audit_trail(
    api: Any, db: psycopg.Connection, make_bulk_change: Callable[..., Any]
) -> None:
    bc, other = make_bulk_change(3), make_bulk_change(1)
    device_id = db.execute(
        "SELECT id FROM activation.device_change WHERE bulk_change_id = %s AND iccid = %s",
        (bc.id, bc.iccids[1]),
    ).fetchone()[0]
    with psycopg.connect(db.info.dsn) as conn:
        repo.write_audit(
            conn,
            [
                repo.AuditRow(
                    bc.id,
                    device_id,
                    "ActivateDevice",
                    "Telegence New Service Activation",
                    '{"sim": 1}',
                    '{"requestId": "r-1"}',
                    "PENDING",
                    False,
                ),
                repo.AuditRow(
                    bc.id,
                    device_id,
                    "WaitForActivation",
                    "Telegence activation status",
                    None,
                    '{"status": "rejected"}',
                    "ERROR",
                    True,
                    "activation rejected by the carrier: SIM blocked",
                ),
            ],
        )
    page = api.get(f"{PREFIX}/bulk-changes/{bc.id}/devices/{device_id}", headers=as_("viewer"))
    assert page.status_code == 200
    trail = page.text[page.text.index('class="trail"') :]
    assert trail.index("ActivateDevice") < trail.index("WaitForActivation")
    assert "SIM blocked" in trail and "permanent" in trail and "r-1" in trail
    assert (
        api.get(f"{PREFIX}/bulk-changes/{other.id}/devices/{device_id}", headers=as_("viewer")).status_code
        == 404
    )


def test_the_downloads_are_the_clis_report(
    api: Any, db: psycopg.Connection, make_bulk_change: Callable[..., Any]
) -> None:
    bc = make_bulk_change(7)
    set_devices(db, bc.id, 2, "ERROR", "activation rejected by the carrier: SIM blocked")
    answer = api.get(f"{PREFIX}/bulk-changes/{bc.id}/report.csv", headers=as_("viewer"))
    assert answer.status_code == 200 and "attachment" in answer.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert tuple(rows[0]) == CSV_COLUMNS and [r[1] for r in rows[1:]] == bc.iccids
    cli = subprocess.run(
        [sys.executable, "-m", "telegence_activation", "report", str(bc.id), "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert list(csv.reader(io.StringIO(cli.stdout))) == rows
    # Not finished: a report built now, marked interim; finished: the stored one.
    interim = api.get(f"{PREFIX}/bulk-changes/{bc.id}/report.json", headers=as_("viewer")).json()
    assert (
        interim["interim"] is True
        and interim["devices"] == 7
        and interim["failures_by_class"] == {"permanent": 2}
    )
    with psycopg.connect(db.info.dsn) as conn:
        repo.save_report(conn, bc.id, {**interim, "interim": False, "status": "ERROR", "stored": "yes"})
    set_bulk_change(db, bc.id, "ERROR")
    stored = api.get(f"{PREFIX}/bulk-changes/{bc.id}/report.json", headers=as_("viewer")).json()
    assert stored["stored"] == "yes"
    page = api.get(f"{PREFIX}/bulk-changes/{bc.id}/report.html", headers=as_("viewer"))
    assert page.status_code == 200 and f"Bulk change {bc.id}" in page.text and "<script" not in page.text


def test_every_value_is_escaped(
    api: Any, db: psycopg.Connection, make_bulk_change: Callable[..., Any]
) -> None:
    bc = make_bulk_change(2, customer_name="<script>alert('name')</script>")
    set_devices(db, bc.id, 1, "ERROR", 'rejected: <img src=x onerror="alert(1)">')
    for path in ("/bulk-changes", f"/bulk-changes/{bc.id}"):
        page = api.get(PREFIX + path, headers=as_("viewer"))
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert ".row > section {" in page.text  # our own style sheet is the one thing not escaped
    page = api.get(f"{PREFIX}/bulk-changes/{bc.id}", headers=as_("viewer")).text
    assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in page and "&lt;img src=x" in page


# ------------------------------------------------------------------------------ actions


def test_a_viewer_sees_no_action_and_is_refused_them(
    api: Any, db: psycopg.Connection, make_bulk_change: Callable[..., Any]
) -> None:
    bc = make_bulk_change(3)
    viewer = as_("viewer")
    page = api.get(f"{PREFIX}/bulk-changes/{bc.id}", headers=viewer).text
    assert "/confirm/" not in page
    assert api.get(f"{PREFIX}/bulk-changes/{bc.id}/confirm/cancel", headers=viewer).status_code == 403
    # Even with a confirmation an admin was given, a viewer's POST is refused before anything happens.
    admin_token = confirm_token_of(api, bc.id, "cancel", as_("admin"))
    refused = api.post(
        f"{PREFIX}/bulk-changes/{bc.id}/cancel", headers=viewer, data={"confirm": admin_token, "reason": "x"}
    )
    assert refused.status_code == 403
    assert repo.get_bulk_change(db, bc.id)["cancel_requested_at"] is None
    admin_page = api.get(f"{PREFIX}/bulk-changes/{bc.id}", headers=as_("admin")).text
    assert "/confirm/trigger" in admin_page and "/confirm/cancel" in admin_page


def test_cancel_asks_for_confirmation_and_records_who(
    api: Any, db: psycopg.Connection, make_bulk_change: Callable[..., Any]
) -> None:
    bc = make_bulk_change(4)
    alice = {"Authorization": f"Bearer {token('user', 'alice')}", **HTML}
    url = f"{PREFIX}/bulk-changes/{bc.id}/cancel"
    assert api.post(url, headers=alice, data={"reason": "no confirm"}).status_code == 403
    bobs = confirm_token_of(api, bc.id, "cancel", {"Authorization": f"Bearer {token('user', 'bob')}", **HTML})
    assert api.post(url, headers=alice, data={"confirm": bobs, "reason": "bob's"}).status_code == 403
    other_action = confirm_token_of(api, bc.id, "trigger", alice)
    assert api.post(url, headers=alice, data={"confirm": other_action, "reason": "x"}).status_code == 403
    assert repo.get_bulk_change(db, bc.id)["cancel_requested_at"] is None
    done = api.post(
        url,
        headers=alice,
        data={"confirm": confirm_token_of(api, bc.id, "cancel", alice), "reason": "order changed"},
    )
    assert done.status_code == 200 and "cancelled by alice" in done.text
    after = repo.get_bulk_change(db, bc.id)
    assert (after["status"], after["cancelled_by"], after["cancel_reason"]) == (
        "CANCELLED",
        "alice",
        "order changed",
    )
    reasons = {
        r[0]
        for r in db.execute(
            "SELECT status_details FROM activation.device_change WHERE bulk_change_id = %s", (bc.id,)
        )
    }
    assert reasons == {"cancelled by alice (order changed); never sent to the carrier"}
    audit_by = {
        r[0]
        for r in db.execute(
            "SELECT processed_by FROM activation.device_change_log WHERE bulk_change_id = %s", (bc.id,)
        )
    }
    assert audit_by == {"cancel by alice"}
    again = api.post(
        url, headers=alice, data={"confirm": confirm_token_of(api, bc.id, "cancel", alice), "reason": "x"}
    )
    assert again.status_code == 200 and f"bulk change {bc.id} was already cancelled by alice" in again.text
    assert "/confirm/cancel" not in api.get(f"{PREFIX}/bulk-changes/{bc.id}", headers=alice).text


def test_trigger_uses_the_clis_run_id_as_the_user(
    api: Any, db: psycopg.Connection, make_bulk_change: Callable[..., Any], fake_airflow: FakeAirflow
) -> None:
    bc = make_bulk_change(2)
    admin = as_("admin")
    done = api.post(
        f"{PREFIX}/bulk-changes/{bc.id}/trigger",
        headers=admin,
        data={"confirm": confirm_token_of(api, bc.id, "trigger", admin)},
    )
    assert done.status_code == 200 and f"triggered run {run_id_for(bc.id)}" in done.text
    assert fake_airflow.triggered == [({"bulk_change_id": bc.id, "dry_run": False}, run_id_for(bc.id))]
    assert fake_airflow.users == ["admin"]
    again = api.post(
        f"{PREFIX}/bulk-changes/{bc.id}/trigger",
        headers=admin,
        data={"confirm": confirm_token_of(api, bc.id, "trigger", admin)},
    )
    assert again.status_code == 409 and "already triggered" in again.text
    set_bulk_change(db, bc.id, "PROCESSING", dag_run_id=run_id_for(bc.id))
    late = api.post(
        f"{PREFIX}/bulk-changes/{bc.id}/trigger",
        headers=admin,
        data={"confirm": confirm_token_of(api, bc.id, "trigger", admin)},
    )
    assert late.status_code == 409 and "not NEW" in late.text


def test_retry_resets_the_chosen_classes_as_the_user(
    api: Any, db: psycopg.Connection, make_bulk_change: Callable[..., Any], fake_airflow: FakeAirflow
) -> None:
    bc = make_bulk_change(6, static_ip_every=0)
    set_bulk_change(db, bc.id, "ERROR", dag_run_id=run_id_for(bc.id))
    set_devices(db, bc.id, 2, "PROCESSED", None)
    set_devices(
        db, bc.id, 2, "ERROR", "activation not confirmed by the carrier before the deadline", offset=2
    )
    set_devices(db, bc.id, 2, "ERROR", "activation rejected by the carrier: SIM blocked", offset=4)
    admin = as_("admin")
    fake_airflow.run_state = "running"
    busy = api.post(
        f"{PREFIX}/bulk-changes/{bc.id}/retry",
        headers=admin,
        data={"confirm": confirm_token_of(api, bc.id, "retry", admin)},
    )
    assert busy.status_code == 409 and "still running" in busy.text
    fake_airflow.run_state = "success"
    done = api.post(
        f"{PREFIX}/bulk-changes/{bc.id}/retry",
        headers=admin,
        data={"confirm": confirm_token_of(api, bc.id, "retry", admin), "classes": "retryable"},
    )
    assert done.status_code == 200 and "reset 2 failed device(s)" in done.text, done.text
    assert fake_airflow.cleared == [run_id_for(bc.id)]
    counts = repo.status_counts(db, bc.id)
    assert counts == {"PROCESSED": 2, "NEW": 2, "ERROR": 2}
    by = {
        r[0]
        for r in db.execute(
            "SELECT processed_by FROM activation.device_change_log WHERE bulk_change_id = %s AND description LIKE '%%reset%%'",
            (bc.id,),
        )
    }
    assert by == {"retry-failed by admin"}
    everything = api.post(
        f"{PREFIX}/bulk-changes/{bc.id}/retry",
        headers=admin,
        data={"confirm": confirm_token_of(api, bc.id, "retry", admin), "classes": "all"},
    )
    assert "reset 2 failed device(s)" in everything.text and repo.status_counts(db, bc.id) == {
        "PROCESSED": 2,
        "NEW": 4,
    }


def test_the_run_tab_shows_the_bulk_change_of_the_run(
    api: Any, db: psycopg.Connection, make_bulk_change: Callable[..., Any]
) -> None:
    bc, claimed = make_bulk_change(2), make_bulk_change(2)
    set_bulk_change(db, claimed.id, "PROCESSING", dag_run_id="manual__by_hand")
    viewer = as_("viewer")
    assert f"Bulk change {bc.id} " in api.get(f"{PREFIX}/runs/{run_id_for(bc.id)}", headers=viewer).text
    assert f"Bulk change {claimed.id} " in api.get(f"{PREFIX}/runs/manual__by_hand", headers=viewer).text
    dry = dry_run_id_for(bc.id, "20260101T000000")
    assert f"Bulk change {bc.id} " in api.get(f"{PREFIX}/runs/{dry}", headers=viewer).text
    none = api.get(f"{PREFIX}/runs/scheduled__2026-01-01", headers=viewer)
    assert none.status_code == 200 and "does not own a bulk change" in none.text
    other_dag = api.get(f"{PREFIX}/runs/{run_id_for(bc.id)}?dag_id=telegence_billing_export", headers=viewer)
    assert other_dag.status_code == 200 and "does not own a bulk change" in other_dag.text
    ours = api.get(
        f"{PREFIX}/runs/{run_id_for(bc.id)}?dag_id=telegence_new_service_activation", headers=viewer
    )
    assert f"Bulk change {bc.id} " in ours.text


def test_a_running_bulk_change_refreshes_itself_until_it_ends(
    api: Any, db: psycopg.Connection, make_bulk_change: Callable[..., Any]
) -> None:
    bc = make_bulk_change(5)
    set_bulk_change(db, bc.id, "PROCESSING", dag_run_id=run_id_for(bc.id))
    live = api.get(f"{PREFIX}/bulk-changes/{bc.id}/_live", headers=as_("viewer")).text
    assert 'data-poll-ms="3000"' in live and 'data-done="0"' in live
    set_devices(db, bc.id, 3, "PROCESSED", None)
    assert 'data-done="3"' in api.get(f"{PREFIX}/bulk-changes/{bc.id}/_live", headers=as_("viewer")).text
    set_devices(db, bc.id, 5, "PROCESSED", None)
    set_bulk_change(db, bc.id, "PROCESSED")
    done = api.get(f"{PREFIX}/bulk-changes/{bc.id}/_live", headers=as_("viewer")).text
    assert 'data-poll-ms="0"' in done and 'data-done="5"' in done


def test_the_token_minted_for_a_user_is_accepted_by_the_rest_api(api: Any) -> None:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from telegence_activation.ui.security import UserTokenClient

    client = UserTokenClient(SimpleAuthManagerUser(username="alice", role="user"), api_url="http://unused")
    answer = api.get("/api/v2/dags", headers={"Authorization": f"Bearer {client._token}"})
    assert answer.status_code == 200, answer.text
    me = json.loads(json.dumps(answer.json()))
    assert "dags" in me


def test_a_confirmation_expires() -> None:
    from fastapi import HTTPException

    from telegence_activation.ui import security

    issued = security.confirm_token("alice", "cancel", 7, now=1_000_000)
    security.check_confirm_token(issued, "alice", "cancel", 7, now=1_000_000 + 60)
    with pytest.raises(HTTPException, match="expired"):
        security.check_confirm_token(
            issued, "alice", "cancel", 7, now=1_000_000 + security.CONFIRM_TTL_SECONDS + 1
        )
    with pytest.raises(HTTPException, match="not valid"):
        security.check_confirm_token(issued, "alice", "cancel", 8, now=1_000_000)
