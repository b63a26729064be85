"""A DAG-run listener: when a bulk change's run ends, its note in the Airflow UI says the outcome.

Called by the scheduler (``DagRun.notify_dagrun_state_changed``) inside its own session: the note is
set on the run object and saved with the run's new state. A green run with failed devices says so
on the run's page ("2 failed", the reasons and their error classes); a dry run shows its plan; a
cancelled bulk change who cancelled it and why. Registered by ``telegence_activation.plugin``.
Never lets an error reach the scheduler: a note that cannot be written is logged and skipped.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.report import run_note

log = logging.getLogger(__name__)

DAG_ID = "telegence_new_service_activation"


def note_for(conf: dict[str, Any]) -> str | None:
    """The note of a run of ``conf``, from the activation database (None without a bulk change)."""
    from telegence_activation.hooks.activation_db import ActivationDbHook

    bc_id = conf.get("bulk_change_id")
    if bc_id is None:
        return None
    hook = ActivationDbHook(activation_db_conn_id=conf.get("activation_db_conn_id") or ACTIVATION_DB_CONN_ID)
    with hook.get_conn() as conn:
        bulk_change = repo.get_bulk_change(conn, int(bc_id))
        if bulk_change is None:
            return f"bulk change {bc_id} does not exist"
        return run_note(bulk_change, repo.get_report(conn, int(bc_id)), repo.get_plan(conn, int(bc_id)))


def annotate(dag_run: Any) -> None:
    if dag_run.dag_id != DAG_ID:
        return
    try:
        note = note_for(dict(dag_run.conf or {}))
        if note:
            dag_run.note = note
    except Exception:  # the scheduler must go on whatever happens here
        log.exception("Could not write the bulk change outcome into the note of run %s", dag_run.run_id)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    annotate(dag_run)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    annotate(dag_run)
