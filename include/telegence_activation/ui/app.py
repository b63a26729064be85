"""The Bulk changes app (FastAPI), mounted in the api-server by the plugin under ``/telegence``.

Pages: ``/bulk-changes`` (the list), ``/bulk-changes/<id>`` (a bulk change: progress, steps,
failures, devices with keyset paging and search), ``/bulk-changes/<id>/devices/<device id>`` (a
device's audit trail), ``/runs/<run id>`` (the bulk change a DAG run owns: the run page's tab), the
report downloads (``report.json`` / ``.csv`` / ``.html``), the parts that refresh themselves
(``.../_live``) and a small JSON status (``/api/bulk-changes/<id>``). Actions: a confirmation page
(``.../confirm/<action>``), then a POST (``.../<action>``). Who may do what: ``ui.security``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from telegence_activation import repository as repo
from telegence_activation.api_client import DAG_ID
from telegence_activation.db.connection import configured_connection, connection_to_uri
from telegence_activation.domain.report import CSV_COLUMNS
from telegence_activation.domain.report_html import render_report_html
from telegence_activation.ui import actions_view, assets, pages, security, web
from telegence_activation.ui.templates import render

log = logging.getLogger(__name__)


def _status_filter(status: str | None) -> str | None:
    if status and status not in pages.BULK_CHANGE_STATUSES:
        raise HTTPException(400, f"unknown status {status!r}; one of {', '.join(pages.BULK_CHANGE_STATUSES)}")
    return status or None


def _search(q: str | None) -> str | None:
    text = (q or "").strip()
    if text and not (text.isdigit() and len(text) <= 20):
        raise HTTPException(400, "search by the first digits of an ICCID, IMEI or MDN (digits only)")
    return text or None


# ----------------------------------------------------------------------------------- public

public = APIRouter()


@public.get("/static/app.js", include_in_schema=False)
def script() -> Response:
    return Response(assets.JS, media_type="text/javascript", headers={"Cache-Control": "max-age=300"})


@public.get("/static/icon.svg", include_in_schema=False)
def icon() -> Response:
    return Response(assets.ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=3600"})


# ------------------------------------------------------------------------------------ reads

read = APIRouter(dependencies=[Depends(security.can_read)])


def _list_live(request: Request, user: Any, conn: psycopg.Connection, status: str | None, before: int | None):
    rows, next_before = pages.bulk_change_list(conn, status, before)
    ctx = web.context(request, user)
    query = f"?status={status or ''}" + (f"&before={before}" if before else "")
    values = {
        **ctx,
        "rows": rows,
        "status": status,
        "before": before,
        "next_before": next_before,
        "statuses": pages.BULK_CHANGE_STATUSES,
        "poll_url": f"{ctx['root']}/bulk-changes/_live{query}",
        "poll_ms": pages.poll_ms([r["status"] for r in rows]),
    }
    return values


@read.get("/bulk-changes", response_class=HTMLResponse)
def bulk_change_list(
    request: Request, user: web.User, conn: web.Db, status: str | None = None, before: int | None = None
) -> HTMLResponse:
    values = _list_live(request, user, conn, _status_filter(status), before)
    return web.page(render("list.html", title="Bulk changes", **values))


@read.get("/bulk-changes/_live", response_class=HTMLResponse)
def bulk_change_list_live(
    request: Request, user: web.User, conn: web.Db, status: str | None = None, before: int | None = None
) -> HTMLResponse:
    return web.page(
        render("list_live.html", **_list_live(request, user, conn, _status_filter(status), before))
    )


def _detail(
    request: Request,
    user: Any,
    conn: psycopg.Connection,
    bulk_change: dict[str, Any],
    q: str | None,
    after: int,
) -> HTMLResponse:
    ctx = web.context(request, user)
    base = f"{ctx['root']}/bulk-changes/{bulk_change['id']}"
    search = _search(q)
    devices, next_after = pages.devices(conn, bulk_change["id"], max(after, 0), search)
    summary = pages.summary(conn, bulk_change)
    html = render(
        "detail.html",
        **ctx,
        **summary,
        title=f"Bulk change {bulk_change['id']}",
        base=base,
        poll_url=f"{base}/_live",
        actions=actions_view.available(request, user, bulk_change),
        devices=devices,
        next_after=next_after,
        after=after,
        q=search,
        page_size=pages.DEVICE_PAGE,
    )
    return web.page(html)


@read.get("/bulk-changes/{bc_id}", response_class=HTMLResponse)
def bulk_change_detail(
    request: Request, user: web.User, conn: web.Db, bc_id: int, q: str | None = None, after: int = 0
):
    return _detail(request, user, conn, web.bulk_change_or_404(conn, bc_id), q, after)


@read.get("/bulk-changes/{bc_id}/_live", response_class=HTMLResponse)
def bulk_change_summary(request: Request, user: web.User, conn: web.Db, bc_id: int) -> HTMLResponse:
    ctx = web.context(request, user)
    bulk_change = web.bulk_change_or_404(conn, bc_id)
    base = f"{ctx['root']}/bulk-changes/{bc_id}"
    html = render(
        "detail_live.html",
        **ctx,
        **pages.summary(conn, bulk_change),
        base=base,
        poll_url=f"{base}/_live",
        actions=actions_view.available(request, user, bulk_change),
    )
    return web.page(html)


@read.get("/runs/{run_id}", response_class=HTMLResponse)
def run_tab(
    request: Request,
    user: web.User,
    conn: web.Db,
    run_id: str,
    dag_id: str = DAG_ID,
    q: str | None = None,
    after: int = 0,
):
    """The "Bulk change" tab of a run's page (every DAG's runs have it: the UI gives the DAG too)."""
    bulk_change = pages.bulk_change_of_run(conn, run_id) if dag_id == DAG_ID else None
    if bulk_change is None:
        return web.message_page(
            request, user, 200, "No bulk change", f"Run {run_id} does not own a bulk change."
        )
    return _detail(request, user, conn, bulk_change, q, after)


@read.get("/bulk-changes/{bc_id}/devices/{device_id}", response_class=HTMLResponse)
def device_trail(request: Request, user: web.User, conn: web.Db, bc_id: int, device_id: int) -> HTMLResponse:
    device = repo.get_device(conn, bc_id, device_id)
    if device is None:
        raise HTTPException(404, f"bulk change {bc_id} has no device {device_id}")
    ctx = web.context(request, user)
    html = render(
        "device.html",
        **ctx,
        title=f"Device {device['iccid']}",
        base=f"{ctx['root']}/bulk-changes/{bc_id}",
        d=device,
        trail=repo.device_trail(conn, device_id),
    )
    return web.page(html)


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}


@read.get("/bulk-changes/{bc_id}/report.json")
def report_json(conn: web.Db, bc_id: int) -> Response:
    report = pages.report(conn, web.bulk_change_or_404(conn, bc_id))
    body = json.dumps(report, indent=2, default=str)
    return Response(body, media_type="application/json", headers=_attachment(f"bulk_change_{bc_id}.json"))


@read.get("/bulk-changes/{bc_id}/report.html")
def report_html(conn: web.Db, bc_id: int) -> Response:
    report = pages.report(conn, web.bulk_change_or_404(conn, bc_id))
    headers = {
        **_attachment(f"bulk_change_{bc_id}.html"),
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    }
    return Response(render_report_html(report), media_type="text/html", headers=headers)


@read.get("/bulk-changes/{bc_id}/report.csv")
def report_csv(conn: web.Db, bc_id: int) -> StreamingResponse:
    """Every device, streamed from the database (``repo.device_rows_for_export``, as the CLI's
    ``report --format csv``) on a connection of its own that lives as long as the download."""
    web.bulk_change_or_404(conn, bc_id)
    uri = connection_to_uri(configured_connection())  # type: ignore[arg-type]  # checked by activation_db

    def rows() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        with psycopg.connect(uri, connect_timeout=10) as stream:
            for n, row in enumerate(repo.device_rows_for_export(stream, bc_id), 1):
                writer.writerow(["" if v is None else v for v in row])
                if n % 2000 == 0:
                    yield out.getvalue()
                    out.seek(0)
                    out.truncate()
        yield out.getvalue()

    return StreamingResponse(rows(), media_type="text/csv", headers=_attachment(f"bulk_change_{bc_id}.csv"))


@read.get("/api/bulk-changes/{bc_id}")
def bulk_change_status(conn: web.Db, bc_id: int) -> JSONResponse:
    bulk_change = web.bulk_change_or_404(conn, bc_id)
    body = {
        "id": bc_id,
        "status": bulk_change["status"],
        "dag_run_id": bulk_change["dag_run_id"],
        "devices_by_status": repo.status_counts(conn, bc_id),
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def create_app() -> FastAPI:
    app = FastAPI(
        title="Telegence bulk changes",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return security.http_error_response(request, exc.status_code, exc.detail, web.error_page)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.include_router(public)
    app.include_router(read)
    app.include_router(actions_view.router)
    return app
