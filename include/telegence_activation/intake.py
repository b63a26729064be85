"""Bulk-change intake: stream a device CSV into one bulk change and its device changes.

The whole file is validated and written in **one transaction**: rows are streamed into the
database with ``COPY`` while they are validated, and any bad row rolls everything back, so a
bulk change either exists with every device of the file or does not exist at all. Memory stays
flat in the file size (only the ICCID/IMEI sets that catch duplicates grow, ~120 bytes a row).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from telegence_activation import repository as repo
from telegence_activation.domain.intake import (
    ALL_COLUMNS,
    IntakeOptions,
    RowError,
    RowValidator,
    header_problems,
    sample_rows,
)

MAX_ERRORS_KEPT = 200


class IntakeRejected(Exception):
    """The file had problems; nothing was written."""

    def __init__(self, problems: list[str], total: int) -> None:
        self.problems = problems
        self.total = total
        more = f" (showing the first {len(problems)})" if total > len(problems) else ""
        super().__init__(f"{total} problem(s) found, nothing written{more}")


@dataclass(frozen=True)
class IntakeResult:
    bulk_change_id: int
    device_count: int
    static_ip_count: int


@dataclass(frozen=True)
class BulkChangeSpec:
    """Bulk-change-wide settings given on the command line."""

    service_provider_id: int
    options: IntakeOptions
    addition_bulk_change_id: int | None = None
    customer_name: str | None = None
    notify_to: str | None = None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str | None]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        problems = header_problems(reader.fieldnames)
        if problems:
            raise IntakeRejected([f"header: {p}" for p in problems], len(problems))
        reader.fieldnames = [name.strip().lower() for name in reader.fieldnames or []]
        for raw in reader:
            yield reader.line_num, raw


def ingest_csv(uri: str, path: Path, spec: BulkChangeSpec) -> IntakeResult:
    """Validate ``path`` and write it as a new bulk change; raise IntakeRejected on any bad row."""
    try:
        return _ingest(uri, path, spec)
    except psycopg.errors.ExclusionViolation as exc:
        # Another intake committed the same ICCID meanwhile (the deferred constraint caught it).
        raise IntakeRejected(
            [f"iccid: {exc.diag.message_detail or 'an ICCID is open in another bulk change'}"], 1
        ) from exc


def _ingest(uri: str, path: Path, spec: BulkChangeSpec) -> IntakeResult:
    validator = RowValidator(spec.options)
    kept: list[str] = []
    total_errors = 0
    count = static_ip = 0

    def record(errors: list[RowError]) -> None:
        nonlocal total_errors
        total_errors += len(errors)
        kept.extend(str(e) for e in errors[: max(0, MAX_ERRORS_KEPT - len(kept))])

    with psycopg.connect(uri) as conn, conn.transaction():
        if spec.addition_bulk_change_id is not None:
            found = conn.execute(
                "SELECT 1 FROM activation.bulk_change WHERE id = %s", (spec.addition_bulk_change_id,)
            ).fetchone()
            if found is None:
                raise IntakeRejected(
                    [f"--addition-bulk-change-id: bulk change {spec.addition_bulk_change_id} does not exist"],
                    1,
                )
        row = conn.execute(
            """INSERT INTO activation.bulk_change (service_provider_id, addition_bulk_change_id,
                   carrier_data_group, carrier_rate_pool, customer_name, notify_to, source_file)
               VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
            (
                spec.service_provider_id,
                spec.addition_bulk_change_id,
                spec.options.carrier_data_group,
                spec.options.carrier_rate_pool,
                spec.customer_name,
                spec.notify_to,
                str(path),
            ),
        ).fetchone()
        assert row is not None
        bulk_change_id = int(row[0])
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY activation.device_change (bulk_change_id, line_number, iccid, imei, change_request) "
                "FROM STDIN"
            ) as copy,
        ):
            for line, raw in _rows(path):
                valid, errors = validator.validate(line, raw)
                if errors:
                    record(errors)
                    continue
                assert valid is not None
                count += 1
                static_ip += valid.change_request["StaticIPProvision"] is not None
                if not total_errors:
                    copy.write_row(
                        (bulk_change_id, line, valid.iccid, valid.imei, json.dumps(valid.change_request))
                    )
        if not total_errors and count == 0:
            record([RowError(1, "(file)", "has a header but no device rows")])
        if not total_errors:
            record(
                [
                    RowError(
                        int(line), "iccid", f"{iccid} is open in bulk change {other} (not PROCESSED or ERROR)"
                    )
                    for line, iccid, other in repo.open_elsewhere(conn, bulk_change_id, MAX_ERRORS_KEPT)
                ]
            )
        if total_errors:
            raise IntakeRejected(kept, total_errors)
        conn.execute(
            "UPDATE activation.bulk_change SET device_count = %s WHERE id = %s", (count, bulk_change_id)
        )
    return IntakeResult(bulk_change_id, count, static_ip)


def write_sample_csv(path: Path, count: int, *, seed: int | None = None, static_ip_every: int = 3) -> Path:
    """Write a valid sample CSV of ``count`` devices to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(ALL_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sample_rows(count, seed=seed, static_ip_every=static_ip_every))
    return path
