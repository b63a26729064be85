"""Who may see and do what on the Bulk changes page: Airflow's own authentication and authorization.

- **Identity**: Airflow's ``get_user`` dependency (``airflow.api_fastapi.core_api.security``): the
  JWT of an ``Authorization: Bearer`` header, else the UI's ``_token`` cookie (already checked by the
  api-server's ``JWTRefreshMiddleware``, which wraps mounted plugin apps too). No valid token: 401
  (an HTML page asked for by a browser is redirected to the auth manager's login page instead).
- **Reading** (every page, fragment and download): ``requires_access_dag("GET", RUN)`` on the
  activation DAG, the right to see its runs; 403 otherwise.
- **Acting**: trigger and cancel need ``requires_access_dag("POST", RUN)`` (the right to trigger a
  run of the DAG, what the REST trigger endpoint asks); retry also ``("PUT", TASK_INSTANCE)``, what
  the clear endpoint asks, checked before any device is reset. The same checks decide whether the
  pages show the action buttons.
- **Confirmation and CSRF**: an action is a POST carrying a token from its confirmation page, an
  HMAC (``[api] secret_key``) of the user, the action and the bulk change, valid 15 minutes. A form
  on another site cannot produce one (and the ``_token`` cookie is SameSite=Lax anyway).
- **Carrying the action to Airflow**: retry clears the run and trigger creates it through Airflow's
  public REST API, as the signed-in user: a token minted for that user by the auth manager
  (``generate_jwt``, 5 minutes), sent to this api-server's own base URL (``[api] base_url``, never a
  URL taken from the request). Airflow checks the user's rights again and records the user
  (``triggering_user_name``, the event log). No password is stored anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.configuration import conf
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from telegence_activation.api_client import DAG_ID, AirflowApiError, AirflowClient

__all__ = [
    "GetUserDep",
    "UserTokenClient",
    "can_clear",
    "can_read",
    "can_trigger",
    "check_confirm_token",
    "confirm_token",
    "http_error_response",
    "may",
]

can_read = requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=DAG_ID)
can_trigger = requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=DAG_ID)
can_clear = requires_access_dag("PUT", DagAccessEntity.TASK_INSTANCE, param_dag_id=DAG_ID)

CONFIRM_TTL_SECONDS = 900
MINTED_TOKEN_SECONDS = 300
ACTIONS = ("trigger", "retry", "cancel")


def may(request: Request, user: BaseUser, *checks: Any) -> bool:
    """Whether ``user`` passes every one of Airflow's ``checks`` (``can_trigger``...)."""
    try:
        for check in checks:
            check(request, user)
    except HTTPException:
        return False
    return True


# ----------------------------------------------------------------------------- confirmation


def _secret() -> bytes:
    key = conf.get("api", "secret_key", fallback="") or conf.get("api_auth", "jwt_secret", fallback="")
    if not key:
        raise HTTPException(500, "no [api] secret_key configured: actions cannot be confirmed")
    return hashlib.sha256(b"telegence-bulk-changes-confirm\0" + key.encode()).digest()


def _mac(user: str, action: str, bulk_change_id: int, expires: int) -> str:
    message = f"{user}\0{action}\0{bulk_change_id}\0{expires}".encode()
    return hmac.new(_secret(), message, hashlib.sha256).hexdigest()


def confirm_token(user: str, action: str, bulk_change_id: int, now: float | None = None) -> str:
    """The token a confirmation form carries for ``user`` doing ``action`` to one bulk change."""
    expires = int(now if now is not None else time.time()) + CONFIRM_TTL_SECONDS
    return f"{expires}.{_mac(user, action, bulk_change_id, expires)}"


def check_confirm_token(
    token: str | None, user: str, action: str, bulk_change_id: int, now: float | None = None
) -> None:
    """Refuse (403) an action whose form did not come from its confirmation page, or came too late."""
    expires_text, _, mac = (token or "").partition(".")
    if not expires_text.isdigit() or not mac:
        raise HTTPException(403, "this action was not confirmed: use its confirmation page")
    expires = int(expires_text)
    if not hmac.compare_digest(mac, _mac(user, action, bulk_change_id, expires)):
        raise HTTPException(403, "this confirmation is not valid for you, this action or this bulk change")
    if expires < (now if now is not None else time.time()):
        raise HTTPException(403, "this confirmation has expired: confirm the action again")


# ----------------------------------------------------------------------------- errors


def _is_navigation(request: Request) -> bool:
    """A page a browser navigates to (not the page's own refresh requests, which say ``fetch``)."""
    headers = request.headers
    return (
        request.method == "GET"
        and "text/html" in headers.get("accept", "")
        and headers.get("sec-fetch-mode", "navigate") == "navigate"
        and headers.get("x-requested-with") != "fetch"
    )


def _not_signed_in(status: int, detail: Any) -> bool:
    # get_user answers 401 without a token or with an expired one, 403 "Invalid JWT token" with a bad one.
    return status == 401 or (status == 403 and detail == "Invalid JWT token")


def http_error_response(request: Request, status: int, detail: Any, render_error: Any) -> Response:
    """A browser that is not signed in goes to the login page (and back here after it); a script
    gets 401 JSON; any other error is a short page (HTML) or ``{"detail": ...}`` (JSON). No data."""
    if _not_signed_in(status, detail):
        if _is_navigation(request):
            login = get_auth_manager().get_url_login(next_url=str(request.url))
            return RedirectResponse(login, status_code=303, headers={"Cache-Control": "no-store"})
        return JSONResponse(
            {"detail": "Not authenticated"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"},
        )
    if "text/html" in request.headers.get("accept", ""):
        return render_error(request, status, str(detail))
    return JSONResponse({"detail": detail}, status_code=status, headers={"Cache-Control": "no-store"})


# ----------------------------------------------------------------------------- REST as the user


def airflow_api_url() -> str:
    """This api-server's own address: ``[api] base_url``, else loopback on ``[api] port``."""
    base = conf.get("api", "base_url", fallback="") or ""
    if base.startswith(("http://", "https://")):
        return base.rstrip("/")
    return f"http://127.0.0.1:{conf.getint('api', 'port', fallback=8080)}"


class UserTokenClient(AirflowClient):
    """The REST API client of the CLI, authenticated as the signed-in user with a short-lived token
    minted for them (no password): Airflow checks that user's rights and records their name."""

    def __init__(self, user: BaseUser, api_url: str | None = None) -> None:
        super().__init__(api_url or airflow_api_url(), user.get_name(), password="")
        self._token = get_auth_manager().generate_jwt(user, expiration_time_in_seconds=MINTED_TOKEN_SECONDS)

    def _authenticate(self) -> None:
        raise AirflowApiError(401, f"Airflow refused the token minted for {self.username!r}")
