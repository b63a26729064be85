"""The actions of the Bulk changes page: trigger a NEW bulk change, retry its failed devices, cancel it.

Each is a confirmation page (``GET .../confirm/<action>``: what will happen, a signed token, the
reason of a cancel, the classes of a retry) and a POST that does it as the signed-in user, with the
same code as the CLI: ``actions.cancel`` and ``actions.retry_failed`` (``by`` = the Airflow user's
name, recorded on the bulk change and in the devices' audit rows), and for a trigger the CLI's rule
(only a NEW bulk change; run id ``api_client.run_id_for``, so a second trigger is refused by Airflow
with 409). Retry and trigger reach Airflow through its REST API as that user (``ui.security``).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse

from telegence_activation import actions
from telegence_activation.api_client import AirflowApiError, AirflowClient, run_id_for
from telegence_activation.domain.errors import ERROR_CLASSES
from telegence_activation.ui import security, web
from telegence_activation.ui.templates import render

log = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(security.can_read), Depends(security.can_trigger)])


def _client_for(request: Request, user: Any) -> AirflowClient:
    """The REST client actions use: the signed-in user's (tests may put a factory in the app state)."""
    factory = getattr(request.app.state, "airflow_client_factory", None)
    return factory(user) if factory is not None else security.UserTokenClient(user)


def available(request: Request, user: Any, bulk_change: dict[str, Any]) -> list[dict[str, str]]:
    """The action buttons the detail page shows this user for this bulk change (none for a viewer)."""
    if not security.may(request, user, security.can_trigger):
        return []
    status, cancelled = bulk_change["status"], bulk_change["cancel_requested_at"] is not None
    shown = []
    if status == "NEW" and not cancelled and not bulk_change["dag_run_id"]:
        shown.append({"action": "trigger", "label": "Trigger", "css": "primary"})
    if (
        status in ("PROCESSING", "ERROR")
        and not cancelled
        and security.may(request, user, security.can_clear)
    ):
        shown.append({"action": "retry", "label": "Retry failed", "css": ""})
    if status in ("NEW", "PROCESSING") and not cancelled:
        shown.append({"action": "cancel", "label": "Cancel", "css": "danger"})
    return shown


_WORDS = {
    "trigger": ("Trigger bulk change {id}?", "Trigger", "primary"),
    "retry": ("Retry the failed devices of bulk change {id}?", "Retry failed devices", ""),
    "cancel": ("Cancel bulk change {id}?", "Cancel bulk change {id}", "danger"),
}


def _explain(action: str, bulk_change: dict[str, Any]) -> list[str]:
    bc_id = bulk_change["id"]
    if action == "trigger":
        return [
            f"Starts DAG run {run_id_for(bc_id)} of {security.DAG_ID} for the {bulk_change['device_count']:,} "
            "device(s) of this bulk change, with the default parameters (like `trigger` of the command line). "
            "Every device is sent to the carrier.",
        ]
    if action == "retry":
        return [
            "Puts the failed devices of the chosen classes of the error catalogue back where a rerun picks "
            "them up (devices the carrier could not be reached for are always sent again), audits each "
            "reset with your name, and clears the bulk change's run so it does exactly what is left. "
            "Refused while the run is still queued or running.",
        ]
    return [
        "No activation is sent after this (calls in flight finish and are recorded first). Devices never "
        "sent end CANCELLED with your name and reason; lines the carrier already accepted are carried to "
        "a terminal status. A line cannot be un-activated.",
    ]


def _check(request: Request, user: Any, action: str) -> None:
    if action not in security.ACTIONS:
        raise HTTPException(404, f"no action {action!r}")
    if action == "retry" and not security.may(request, user, security.can_clear):
        raise HTTPException(403, "retrying needs the right to clear the DAG's task instances")


@router.get("/bulk-changes/{bc_id}/confirm/{action}", response_class=HTMLResponse)
def confirm(request: Request, user: web.User, conn: web.Db, bc_id: int, action: str) -> HTMLResponse:
    _check(request, user, action)
    bulk_change = web.bulk_change_or_404(conn, bc_id)
    ctx = web.context(request, user)
    heading, button, css = _WORDS[action]
    html = render(
        "confirm.html",
        **ctx,
        title=heading.format(id=bc_id),
        heading=heading.format(id=bc_id),
        button=button.format(id=bc_id),
        button_css=css,
        bc=bulk_change,
        base=f"{ctx['root']}/bulk-changes/{bc_id}",
        action=action,
        token=security.confirm_token(user.get_name(), action, bc_id),
        explain=_explain(action, bulk_change),
    )
    return web.page(html)


@router.post("/bulk-changes/{bc_id}/{action}", response_class=HTMLResponse)
def act(
    request: Request,
    user: web.User,
    conn: web.Db,
    bc_id: int,
    action: str,
    confirm: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    classes: Annotated[str, Form()] = "retryable",
) -> HTMLResponse:
    _check(request, user, action)
    name = user.get_name()
    security.check_confirm_token(confirm, name, action, bc_id)
    back = f"{web.context(request, user)['root']}/bulk-changes/{bc_id}"
    try:
        if action == "cancel":
            outcome = actions.cancel(conn, bc_id, by=name, reason=reason)
        elif action == "retry":
            chosen = tuple(ERROR_CLASSES) if classes == "all" else actions.DEFAULT_RETRY_CLASSES
            outcome = actions.retry_failed(conn, _client_for(request, user), bc_id, by=name, classes=chosen)
        else:
            outcome = actions.trigger(conn, _client_for(request, user), bc_id)
    except actions.ActionRefused as refused:
        return web.message_page(request, user, 409, "Not done", str(refused), kind="error", back=back)
    except AirflowApiError as exc:
        log.warning("%s of bulk change %s by %s: Airflow answered %s", action, bc_id, name, exc)
        return web.message_page(request, user, 502, "Airflow refused", str(exc), kind="error", back=back)
    log.info("%s of bulk change %s by %s: %s", action, bc_id, name, outcome.message)
    return web.message_page(request, user, 200, "Done", outcome.message, kind="done", back=back)
