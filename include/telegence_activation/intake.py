"""Bulk-change intake: stream a device CSV into one bulk change and its device changes.

The whole file is validated and written in **one transaction**: rows are streamed into the
database with ``COPY`` while they are validated, and any bad row rolls everything back, so a
bulk change either exists with every device of the file or does not exist at all. Memory stays
flat in the file size (only the ICCID/IMEI sets that catch duplicates grow, ~120 bytes a row).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import psycopg

from telegence_activation import repository as repo
from telegence_activation.domain.intake import (
    ALL_COLUMNS,
    SAMPLE_CUSTOMER_IP_RANGE,
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


# A device line is a few hundred bytes; anything this long is not a device list.
MAX_LINE_BYTES = 64 * 1024
ENCODING = "UTF-8"
_OTHER_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def _shown(raw: bytes, limit: int = 24) -> str:
    """A short, printable prefix of a bad line (never the whole value)."""
    text = raw[:limit].decode("utf-8", errors="backslashreplace").replace("\x00", "\\0")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text + ("..." if len(raw) > limit else ""))


def _text_lines(handle: BinaryIO) -> Iterator[str | RowError]:
    """The file's lines as text, or for an unreadable line why: over ``MAX_LINE_BYTES``, a NUL byte
    (binary data), or not UTF-8. Memory stays bounded whatever the file holds."""
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass  # skip the rest of the oversized line without holding it
            yield RowError(
                number, "(line)", f"longer than the limit of {MAX_LINE_BYTES} bytes: {_shown(raw)}"
            )
        elif b"\x00" in raw:
            yield RowError(
                number, "(line)", f"contains a NUL byte (binary data, not CSV text): {_shown(raw)}"
            )
        else:
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield RowError(
                    number,
                    "(line)",
                    f"is not {ENCODING} text (byte 0x{raw[exc.start]:02X} at position {exc.start + 1}; save the "
                    f"file as {ENCODING}): {_shown(raw)}",
                )


def _rows(
    path: Path, record: Callable[[list[RowError]], None]
) -> Iterator[tuple[int, dict[str, str | None]]]:
    """The data rows of the CSV file, with their line numbers. An unreadable header rejects the file;
    unreadable lines and CSV syntax errors are recorded (one reason per problem), never raised as
    tracebacks."""
    with path.open("rb") as handle:
        lines = _text_lines(handle)
        first = next(lines, "")
        if isinstance(first, RowError):
            raise IntakeRejected([f"header: {first}"], 1)
        header = next(csv.reader([first]), [])
        if len(header) == 1:
            for delimiter, name in _OTHER_DELIMITERS.items():
                if delimiter in header[0]:
                    raise IntakeRejected([f"header: the columns are separated by {name}; use commas"], 1)
        problems = header_problems(header)
        if problems:
            raise IntakeRejected([f"header: {p}" for p in problems], len(problems))
        fieldnames = [name.strip().lower() for name in header]

        def text() -> Iterator[str]:
            for line in lines:
                if isinstance(line, RowError):
                    record([line])
                    yield "\n"  # keeps the CSV reader's line numbers exact
                else:
                    yield line

        reader = csv.reader(text(), strict=True)
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                record([RowError(reader.line_num + 1, "(line)", f"is not valid CSV ({exc})")])
                continue
            if not values:
                continue
            line = reader.line_num + 1  # the header was line 1
            if len(values) != len(fieldnames):
                record(
                    [
                        RowError(
                            line,
                            "(line)",
                            f"has {len(values)} field(s), the header has {len(fieldnames)}"
                            + (" (truncated?)" if len(values) < len(fieldnames) else ""),
                        )
                    ]
                )
                continue
            yield line, dict(zip(fieldnames, values, strict=True))


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
            for line, raw in _rows(path, record):
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


def write_sample_csv(
    path: Path,
    count: int,
    *,
    seed: int | None = None,
    static_ip_every: int = 3,
    customer_ip_range: str | None = SAMPLE_CUSTOMER_IP_RANGE,
) -> Path:
    """Write a valid sample CSV of ``count`` devices to ``path`` (static IPs in ``customer_ip_range``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(ALL_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(
            sample_rows(
                count, seed=seed, static_ip_every=static_ip_every, customer_ip_range=customer_ip_range
            )
        )
    return path
