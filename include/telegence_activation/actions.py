"""What a person does to a bulk change (trigger, cancel, retry failed devices): one implementation
for the command line and the Airflow UI, each call recorded with the person's name.

No Airflow import: the run is reached through the REST API client (``api_client.AirflowClient``)
where one is needed; the database through a psycopg connection the caller opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from telegence_activation import repository as repo
from telegence_activation.api_client import AirflowApiError, AirflowClient, dry_run_id_for, run_id_for
from telegence_activation.domain.errors import ERROR_CLASSES, classify

DEFAULT_RETRY_CLASSES = ("retryable",)


class ActionRefused(Exception):
    """The action cannot be done now; the message says why and what to do instead."""


@dataclass(frozen=True)
class Outcome:
    """What an action did, in one line for a person."""

    message: str
    details: dict[str, Any]


def trigger(
    conn: psycopg.Connection,
    client: AirflowClient,
    bulk_change_id: int,
    *,
    conf: dict[str, Any] | None = None,
    dry_run_stamp: str | None = None,
) -> Outcome:
    """Start the run of a NEW bulk change: run id ``run_id_for`` (a second trigger, by anyone, gets
    409 and is refused), or a dry run of its own (``dry_run_stamp``, repeatable, writes nothing to
    the carrier). ``conf`` adds the DAG's params to the run's conf. Reads only; the run claims the
    bulk change."""
    bulk_change = repo.get_bulk_change(conn, bulk_change_id)
    conn.rollback()
    if bulk_change is None:
        raise ActionRefused(f"bulk change {bulk_change_id} does not exist")
    dry_run = dry_run_stamp is not None
    run_id = dry_run_id_for(bulk_change_id, dry_run_stamp) if dry_run_stamp else run_id_for(bulk_change_id)
    if bulk_change["status"] != "NEW":
        raise ActionRefused(
            f"bulk change {bulk_change_id} is {bulk_change['status']}, not NEW: it was already triggered "
            f"(run {bulk_change['dag_run_id'] or run_id_for(bulk_change_id)}); follow it with 'status' or "
            "retry its failed devices with 'retry-failed'"
        )
    try:
        run = client.trigger({**(conf or {}), "bulk_change_id": bulk_change_id, "dry_run": dry_run}, run_id)
    except AirflowApiError as exc:
        if exc.status == 409:
            raise ActionRefused(
                f"bulk change {bulk_change_id} was already triggered as run {run_id}"
            ) from exc
        raise
    return Outcome(f"triggered run {run['dag_run_id']} ({run['state']})", {"run": run["dag_run_id"]})


def cancel(conn: psycopg.Connection, bulk_change_id: int, *, by: str, reason: str) -> Outcome:
    """Cancel a bulk change: no activation is sent after this returns (calls in flight finish and
    are recorded first); devices never sent end CANCELLED; lines the carrier accepted are carried
    to a terminal status by the run, which ends the bulk change CANCELLED. Committed on return."""
    if not reason.strip():
        raise ActionRefused("a cancel needs a reason (it is recorded and shown in the report)")
    result = repo.request_cancel(conn, bulk_change_id, by, reason.strip())
    outcome = result["outcome"]
    if outcome == "missing":
        conn.rollback()
        raise ActionRefused(f"bulk change {bulk_change_id} does not exist")
    if outcome == "finished":
        conn.rollback()
        raise ActionRefused(
            f"bulk change {bulk_change_id} is already {result['bulk_change']['status']}: nothing to cancel"
        )
    if outcome == "already":
        conn.rollback()
        earlier = result["bulk_change"]
        return Outcome(
            f"bulk change {bulk_change_id} was already cancelled by {earlier['cancelled_by']} at "
            f"{earlier['cancel_requested_at']:%Y-%m-%d %H:%M:%S %Z} ({earlier['cancel_reason']})",
            {"already": True},
        )
    conn.commit()
    run = result["run"]
    tail = (
        f"run {run} carries the lines the carrier accepted to a terminal status and ends it CANCELLED"
        if run
        else "no run had started: the bulk change is CANCELLED"
    )
    unknown = (
        f", {result['outcome_unknown']} with a lost activation answer ended ERROR"
        if result["outcome_unknown"]
        else ""
    )
    return Outcome(
        f"bulk change {bulk_change_id} cancelled by {by}: {result['never_sent']} device(s) never sent ended "
        f"CANCELLED{unknown}; {tail}",
        {k: result[k] for k in ("never_sent", "outcome_unknown", "run")},
    )


def retry_failed(
    conn: psycopg.Connection,
    client: AirflowClient,
    bulk_change_id: int,
    *,
    by: str,
    classes: tuple[str, ...] = DEFAULT_RETRY_CLASSES,
) -> Outcome:
    """Reset the failed devices of the ``classes`` of the error catalogue (default: retryable) and
    clear the bulk change's run so it does exactly what is left. API_FAILED devices (never taken
    by the carrier) are always sent again."""
    unknown_classes = set(classes) - set(ERROR_CLASSES)
    if unknown_classes:
        raise ActionRefused(
            f"unknown error class(es) {sorted(unknown_classes)}; known: {list(ERROR_CLASSES)}"
        )
    bulk_change = repo.get_bulk_change(conn, bulk_change_id)
    if bulk_change is None:
        raise ActionRefused(f"bulk change {bulk_change_id} does not exist")
    if bulk_change["cancel_requested_at"] is not None:
        raise ActionRefused(
            f"bulk change {bulk_change_id} was cancelled by {bulk_change['cancelled_by']}; order its devices "
            "again in a new bulk change"
        )
    run_id = bulk_change["dag_run_id"] or run_id_for(bulk_change_id)
    try:
        run = client.get_run(run_id)
    except AirflowApiError as exc:
        raise ActionRefused(f"run {run_id} of bulk change {bulk_change_id} not found: {exc}") from exc
    if run["state"] in ("queued", "running"):
        raise ActionRefused(f"run {run_id} is still {run['state']}; retry once it has finished")
    # The reasons of the chosen classes, staged in the database a page at a time (a bulk change can
    # have as many distinct reasons as failed devices), then reset in one statement.
    wanted = set(classes)
    _staged, left_out = repo.stage_retry_reasons(
        conn, bulk_change_id, lambda reason: classify(reason).error_class in wanted
    )
    # Devices left unfinished (e.g. an earlier retry whose clear did not go through) also need the
    # run cleared.
    unfinished = repo.count_unfinished(conn, bulk_change_id)
    reset = repo.reset_failed_devices(conn, bulk_change_id, f"retry-failed by {by}", only_staged=True)
    retryable = repo.count_retryable(conn, bulk_change_id)
    if not reset and not retryable and not unfinished:
        conn.rollback()
        hint = f" ({left_out} failed device(s) of other classes: retry them with --all)" if left_out else ""
        return Outcome(f"bulk change {bulk_change_id} has no failed device to retry{hint}", {"reset": {}})
    try:
        conn.commit()
    except psycopg.errors.ExclusionViolation as exc:
        raise ActionRefused(
            f"a failed device of bulk change {bulk_change_id} is open in another bulk change now "
            f"({exc.diag.message_detail}); nothing was reset"
        ) from exc
    # Clear the whole run: the rejected devices' tasks succeeded, so clearing only failed tasks
    # would not reach them; every task is idempotent and only does what is left.
    cleared = client.clear(run_id, only_failed=False)
    parts = [f"reset {sum(reset.values())} failed device(s) of class {'/'.join(classes)} for retry ({reset})"]
    if retryable:
        parts.append(f"{retryable} API_FAILED device(s) to send again")
    if unfinished:
        parts.append(f"{unfinished} device(s) still in progress")
    if left_out:
        parts.append(f"{left_out} failed device(s) of other classes left as they are (--all retries them)")
    return Outcome(
        f"{'; '.join(parts)}; cleared {len(cleared)} task(s) of run {run_id}",
        {"reset": reset, "api_failed": retryable, "left_out": left_out, "run": run_id},
    )
