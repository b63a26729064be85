"""Device updates and the per-device audit log: the bulk write paths of every step.

``update_devices`` applies any number of updates with one set-based ``UPDATE ... unnest``;
``write_audit`` appends audit rows with one ``COPY``; ``record`` does both in the caller's
transaction, so a device never changes state without the audit row that records it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from functools import lru_cache
from typing import Any

import psycopg

from telegence_activation.domain.errors import classify

PROCESSED_BY = "telegence_new_service_activation"
# The audit log's written columns: AuditRow's fields in order, then the error class of its reason.
AUDIT_COLUMNS = (
    "bulk_change_id, device_change_id, step, description, request_text, response_text, "
    "response_status, has_errors, error_text, processed_by, carrier_write_id, error_class"
)
AUDIT_TEXT_LIMIT = 8000


@lru_cache(maxsize=4096)
def error_class_of(reason: str | None) -> str:
    """The error catalogue's class of a failure reason (cached: a bulk change repeats few reasons)."""
    return classify(reason).error_class


def clip(text: str | None) -> str | None:
    """Audit texts are kept to ``AUDIT_TEXT_LIMIT`` characters (the rest is counted, not stored)."""
    if text is None or len(text) <= AUDIT_TEXT_LIMIT:
        return text
    return text[:AUDIT_TEXT_LIMIT] + f"... [{len(text) - AUDIT_TEXT_LIMIT} more characters]"


@dataclass(frozen=True)
class AuditRow:
    """One row of the per-device audit log (fields in the order of ``AUDIT_COLUMNS``)."""

    bulk_change_id: int
    device_change_id: int | None
    step: str
    description: str
    request_text: str | None
    response_text: str | None
    response_status: str
    has_errors: bool
    error_text: str | None = None
    processed_by: str = PROCESSED_BY
    carrier_write_id: int | None = None


def audit_of(
    update: DeviceUpdate,
    bulk_change_id: int,
    *,
    description: str,
    request_text: str | None,
    response_text: str | None,
    step: str | None = None,
    carrier_write_id: int | None = None,
) -> AuditRow:
    """The audit row recording one device update (an ERROR/API_FAILED update carries its reason)."""
    failed = update.status in ("ERROR", "API_FAILED", "CANCELLED")
    return AuditRow(
        bulk_change_id=bulk_change_id,
        device_change_id=update.device_change_id,
        step=step or update.step,
        description=description,
        request_text=clip(request_text),
        response_text=clip(response_text),
        response_status=update.status,
        has_errors=failed,
        error_text=update.status_details if failed else None,
        carrier_write_id=carrier_write_id,
    )


@dataclass(frozen=True)
class DeviceUpdate:
    """New state of one device; ``None`` fields keep their stored value."""

    device_change_id: int
    status: str
    step: str
    status_details: str
    activation_request_id: str | None = None
    subscriber_number: str | None = None
    reserved_ip: str | None = None
    assigned_ip: str | None = None
    ip_batch_id: str | None = None
    activated: bool = False
    offering_codes_removed: bool = False


# The optional columns of an update: how each is set from the unnested value ``u.<name>`` (sent only
# when some update of the call carries it, so the common updates unnest 4 arrays, not 11).
_OPTIONAL_SET = {
    "activation_request_id": (
        "text",
        "activation_request_id = COALESCE(u.activation_request_id, d.activation_request_id)",
    ),
    "subscriber_number": ("text", "subscriber_number = COALESCE(u.subscriber_number, d.subscriber_number)"),
    "reserved_ip": ("text", "reserved_ip = COALESCE(u.reserved_ip::inet, d.reserved_ip)"),
    "assigned_ip": ("text", "assigned_ip = COALESCE(u.assigned_ip::inet, d.assigned_ip)"),
    "ip_batch_id": ("text", "ip_batch_id = COALESCE(u.ip_batch_id::uuid, d.ip_batch_id)"),
    "activated": ("boolean", "activated_at = CASE WHEN u.activated THEN now() ELSE d.activated_at END"),
    "offering_codes_removed": (
        "boolean",
        "offering_codes_removed_at = CASE WHEN u.offering_codes_removed THEN now() ELSE d.offering_codes_removed_at END",
    ),
}


def update_devices(conn: psycopg.Connection, updates: Sequence[DeviceUpdate]) -> None:
    """Apply device updates with one set-based statement (arrays unnested), whatever their number.

    Only the optional columns some update carries are sent (a ``None``/``False`` keeps the stored
    value either way), so the statement is as narrow as the step's updates."""
    if not updates:
        return
    names = ["device_change_id", "status", "step", "status_details"]
    names += [name for name in _OPTIONAL_SET if any(getattr(u, name) for u in updates)]
    columns: dict[str, list[Any]] = {name: [getattr(u, name) for u in updates] for name in names}
    types = {"device_change_id": "bigint", "status": "text", "step": "text", "status_details": "text"}
    types.update({name: kind for name, (kind, _) in _OPTIONAL_SET.items()})
    arrays = ", ".join(f"%({name})s::{types[name]}[]" for name in names)
    aliases = ", ".join("id" if name == "device_change_id" else name for name in names)
    optional = "".join(f"{_OPTIONAL_SET[name][1]}, " for name in names if name in _OPTIONAL_SET)
    conn.execute(
        f"""UPDATE activation.device_change d
              SET status = u.status, step = u.step, status_details = u.status_details, {optional}
                  updated_at = now(),
                  processed_at = CASE WHEN u.status IN ('PROCESSED', 'ERROR', 'API_FAILED', 'CANCELLED') THEN now()
                                      ELSE d.processed_at END
             FROM unnest({arrays}) AS u({aliases})
            WHERE d.id = u.id""",
        columns,
    )


def write_audit(conn: psycopg.Connection, rows: Sequence[AuditRow]) -> None:
    """Append audit rows with one COPY."""
    if not rows:
        return
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY activation.device_change_log ({AUDIT_COLUMNS}) FROM STDIN") as copy,
    ):
        for r in rows:
            copy.write_row((*astuple(r), error_class_of(r.error_text) if r.has_errors else None))


def record(conn: psycopg.Connection, updates: Sequence[DeviceUpdate], audit: Sequence[AuditRow]) -> None:
    """Store device updates together with the audit rows that record them.

    ``update_devices(conn, updates)`` then ``write_audit(conn, audit)``, on ``conn`` and inside the
    caller's transaction: neither commits, so the caller commits or rolls back both as one (use it
    within ``with conn.transaction():`` or an operator's ``self.transaction()``; on an autocommit
    connection they are two statements). The same bulk paths as the two calls: one
    ``UPDATE ... unnest`` and one ``COPY``, whatever the number of rows. An empty list sends
    nothing, so both empty is a no-op. The rows need not match one to one (a device may have no
    audit row, or several).
    """
    update_devices(conn, updates)
    write_audit(conn, audit)
