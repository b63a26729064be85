"""A small client of Airflow's REST API v2 (JWT from ``POST /auth/token``), for the CLI and the demo."""

from __future__ import annotations

from typing import Any

import requests

DAG_ID = "telegence_new_service_activation"


def run_id_for(bulk_change_id: int) -> str:
    """The DAG run id of a bulk change: one run per bulk change, so a second trigger is refused."""
    return f"bulk_change__{bulk_change_id}"


def dry_run_id_for(bulk_change_id: int, stamp: str) -> str:
    """The run id of a dry run (any number of them; none owns the bulk change)."""
    return f"bulk_change__{bulk_change_id}__dry_run__{stamp}"


class AirflowApiError(RuntimeError):
    """A REST call answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class AirflowClient:
    """Airflow REST API v2 with a bearer token obtained from the username and password."""

    def __init__(self, api_url: str, username: str, password: str, timeout: float = 30) -> None:
        self.api_url = api_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self.session = requests.Session()
        self._token: str | None = None

    def _authenticate(self) -> None:
        reply = self.session.post(
            f"{self.api_url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=self.timeout,
        )
        if reply.status_code not in (200, 201):
            raise AirflowApiError(
                reply.status_code, f"login as {self.username!r} refused: {reply.text[:300]}"
            )
        self._token = reply.json()["access_token"]

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._token is None:
            self._authenticate()
        for attempt in (1, 2):
            reply = self.session.request(
                method,
                f"{self.api_url}{path}",
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=self.timeout,
                **kwargs,
            )
            if reply.status_code == 401 and attempt == 1:  # expired token
                self._authenticate()
                continue
            break
        if reply.status_code >= 400:
            try:
                detail = reply.json().get("detail", reply.text)
            except ValueError:
                detail = reply.text
            raise AirflowApiError(reply.status_code, detail if isinstance(detail, str) else str(detail))
        return reply.json() if reply.content else None

    def get_dag(self, dag_id: str = DAG_ID) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v2/dags/{dag_id}"))

    def unpause(self, dag_id: str = DAG_ID) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, conf: dict[str, Any], run_id: str, dag_id: str = DAG_ID) -> dict[str, Any]:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        return dict(self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body))

    def get_run(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> list[dict[str, Any]]:
        reply = self.request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}
        )
        return list(reply["task_instances"])

    def respond(
        self, run_id: str, task_id: str, option: str, map_index: int = -1, dag_id: str = DAG_ID
    ) -> dict[str, Any]:
        """Answer a human-in-the-loop task (e.g. the approval: "Approve" or "Reject") as this user."""
        return dict(
            self.request(
                "PATCH",
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails",
                json={"chosen_options": [option], "params_input": {}},
            )
        )

    def clear(
        self, run_id: str, task_ids: list[str] | None = None, *, only_failed: bool, dag_id: str = DAG_ID
    ) -> list[dict[str, Any]]:
        """Clear task instances of a run for real (``dry_run`` false), downstream included."""
        body: dict[str, Any] = {
            "dag_run_id": run_id,
            "dry_run": False,
            "only_failed": only_failed,
            "include_downstream": True,
            "reset_dag_runs": True,
        }
        if task_ids:
            body["task_ids"] = task_ids
        reply = self.request("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", json=body)
        return list(reply.get("task_instances", []))
