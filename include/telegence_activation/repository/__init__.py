"""SQL of the activation workflow: every query the tools, hooks and operators run, parametrized.

Functions take an open psycopg connection and leave transaction control to the caller, so an
operator can make "device updates + their audit rows" one transaction (``record``). Writes are
batched: ``COPY`` for audit rows, one ``UPDATE ... unnest`` for device updates.

Callers use the package as a whole (``from telegence_activation import repository as repo``, then
``repo.<name>``); the modules split it by concern:

- ``records``: device updates and audit rows (the bulk write paths);
- ``bulk_changes``: the bulk change, its counts and report, the reset for ``retry-failed``;
- ``devices``: batches, the devices each step picks up, the CSV export;
- ``step_timing``: step start/finish and the deadlines of the waiting steps;
- ``carrier_writes``: the write-ahead record of carrier writes;
- ``notifications``: customer notifications, once per outcome;
- ``operations``: cancel (serialized with the activation senders) and dry-run plans;
- ``browse``: the Bulk changes page's list, devices page (keyset) and device audit trail;
- ``rate_limit``: the carrier rate limit's token buckets (one statement per token).

The step names are ``telegence_activation.domain.steps``'s, re-exported here.
"""

from __future__ import annotations

from telegence_activation.domain.steps import (
    STEP_ACTIVATE,
    STEP_CHECK_IP,
    STEP_DONE,
    STEP_REMOVE_CODES,
    STEP_REQUEST_IP,
    STEP_WAIT_ACTIVATION,
)
from telegence_activation.repository.browse import (
    bulk_change_of_run,
    device_trail,
    devices_page,
    get_device,
    list_bulk_changes,
)
from telegence_activation.repository.bulk_changes import (
    BULK_CHANGE_OVERRIDABLE,
    claim_bulk_change,
    failure_reasons,
    get_bulk_change,
    get_report,
    iter_failure_reasons,
    reserved_not_used,
    reset_failed_devices,
    save_report,
    set_addition_bulk_change_status,
    set_bulk_change_field,
    set_bulk_change_status,
    stage_retry_reasons,
    static_ip_counts,
    status_counts,
    status_step_counts,
)
from telegence_activation.repository.carrier_writes import (
    carrier_write_counts,
    complete_carrier_write,
    record_carrier_write,
)
from telegence_activation.repository.devices import (
    OPEN_STATUSES,
    activation_failures,
    any_at_step,
    assign_batches,
    batch_bounds,
    batches_to_send,
    count_retryable,
    count_unfinished,
    device_rows_for_export,
    devices_at_step,
    fail_unfinished,
    lock_batch,
    mark_ip_submitted,
    next_batch_no,
    open_elsewhere,
    pending_activation_requests,
    unbatched_device_ids,
    unknown_activation_batches,
)
from telegence_activation.repository.notifications import (
    finish_notification,
    notified_outcomes,
    record_notification,
)
from telegence_activation.repository.operations import (
    FINISHED_STATUSES,
    get_plan,
    lock_for_sending,
    request_cancel,
    requests_page,
    save_plan,
    static_ip_by_pdp,
)
from telegence_activation.repository.rate_limit import (
    delete_rate_bucket,
    get_rate_bucket,
    take_rate_token,
)
from telegence_activation.repository.records import (
    AUDIT_COLUMNS,
    AUDIT_TEXT_LIMIT,
    PROCESSED_BY,
    AuditRow,
    DeviceUpdate,
    audit_of,
    clip,
    error_class_of,
    record,
    update_devices,
    write_audit,
)
from telegence_activation.repository.step_timing import (
    finish_step,
    reopen_rounds,
    start_round,
    start_step,
    step_times,
)

__all__ = [
    "AUDIT_COLUMNS",
    "AUDIT_TEXT_LIMIT",
    "BULK_CHANGE_OVERRIDABLE",
    "FINISHED_STATUSES",
    "OPEN_STATUSES",
    "PROCESSED_BY",
    "STEP_ACTIVATE",
    "STEP_CHECK_IP",
    "STEP_DONE",
    "STEP_REMOVE_CODES",
    "STEP_REQUEST_IP",
    "STEP_WAIT_ACTIVATION",
    "AuditRow",
    "DeviceUpdate",
    "activation_failures",
    "any_at_step",
    "assign_batches",
    "audit_of",
    "batch_bounds",
    "batches_to_send",
    "bulk_change_of_run",
    "carrier_write_counts",
    "claim_bulk_change",
    "clip",
    "complete_carrier_write",
    "count_retryable",
    "count_unfinished",
    "delete_rate_bucket",
    "device_rows_for_export",
    "device_trail",
    "devices_at_step",
    "devices_page",
    "error_class_of",
    "fail_unfinished",
    "failure_reasons",
    "finish_notification",
    "finish_step",
    "get_bulk_change",
    "get_device",
    "get_plan",
    "get_rate_bucket",
    "get_report",
    "iter_failure_reasons",
    "list_bulk_changes",
    "lock_batch",
    "lock_for_sending",
    "mark_ip_submitted",
    "next_batch_no",
    "notified_outcomes",
    "open_elsewhere",
    "pending_activation_requests",
    "record",
    "record_carrier_write",
    "record_notification",
    "reopen_rounds",
    "request_cancel",
    "requests_page",
    "reserved_not_used",
    "reset_failed_devices",
    "save_plan",
    "save_report",
    "set_addition_bulk_change_status",
    "set_bulk_change_field",
    "set_bulk_change_status",
    "stage_retry_reasons",
    "start_round",
    "start_step",
    "static_ip_by_pdp",
    "static_ip_counts",
    "status_counts",
    "status_step_counts",
    "step_times",
    "take_rate_token",
    "unbatched_device_ids",
    "unknown_activation_batches",
    "update_devices",
    "write_audit",
]
