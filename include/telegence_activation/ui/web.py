"""What every route of the Bulk changes app shares: the database connection, the page context
(where the app and the Airflow UI are, who is signed in), HTML responses with their security
headers, message pages."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from telegence_activation import repository as repo
from telegence_activation.api_client import DAG_ID
from telegence_activation.db.connection import configured_connection, connection_to_uri
from telegence_activation.ui import URL_PREFIX, assets, security
from telegence_activation.ui.templates import render

log = logging.getLogger(__name__)

_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'self'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def activation_db() -> Iterator[psycopg.Connection]:
    """A connection to the activation database (the api-server's ``activation_db`` connection)."""
    configured = configured_connection()
    if configured is None:
        raise HTTPException(
            503,
            "this api-server has no activation_db connection: give it one (AIRFLOW_CONN_ACTIVATION_DB or "
            "a secrets backend) to show bulk changes",
        )
    try:
        conn = psycopg.connect(connection_to_uri(configured), connect_timeout=10)
    except psycopg.OperationalError as exc:
        log.warning("activation database unreachable: %s", exc)
        raise HTTPException(503, "the activation database cannot be reached right now; try again") from exc
    try:
        yield conn
    finally:
        conn.close()


Db = Annotated[psycopg.Connection, Depends(activation_db)]
User = security.GetUserDep


def page(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)


def context(request: Request, user: Any) -> dict[str, Any]:
    """What every template needs: where the app and the Airflow UI are, who is signed in."""
    root = str(request.scope.get("root_path") or URL_PREFIX).rstrip("/")
    airflow_root = str(request.scope.get("app_root_path") or "").rstrip("/") + "/"
    name = user.get_name() if user is not None else ""
    return {
        "root": root,
        "airflow_root": airflow_root,
        "user": name,
        "css": assets.CSS,
        "dag_id": DAG_ID,
    }


def message_page(
    request: Request, user: Any, status: int, heading: str, message: str, kind: str = "", back: str = ""
) -> HTMLResponse:
    ctx = context(request, user)
    html = render(
        "message.html",
        **ctx,
        title=heading,
        heading=heading,
        message=message,
        kind=kind,
        back=back or f"{ctx['root']}/bulk-changes",
        back_label="Back" if back else "All bulk changes",
    )
    return page(html, status)


def error_page(request: Request, status: int, detail: str) -> HTMLResponse:
    return message_page(request, None, status, f"HTTP {status}", detail, kind="error")


def bulk_change_or_404(conn: psycopg.Connection, bc_id: int) -> dict[str, Any]:
    bulk_change = repo.get_bulk_change(conn, bc_id)
    if bulk_change is None:
        raise HTTPException(404, f"bulk change {bc_id} does not exist")
    return bulk_change
