"""Bulk-change intake: CSV validation, the one-transaction write, the CLI, memory at scale."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from telegence_activation.domain.identifiers import make_iccid, make_imei
from telegence_activation.domain.intake import ALL_COLUMNS, IntakeOptions, sample_rows
from telegence_activation.intake import BulkChangeSpec, IntakeRejected, ingest_csv, write_sample_csv

SPEC = BulkChangeSpec(
    service_provider_id=1,
    options=IntakeOptions("BAN-100", carrier_data_group="DG1", carrier_rate_pool="RP1"),
)


def _write(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or list(ALL_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _counts(uri: str) -> tuple[int, int]:
    with psycopg.connect(uri) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM activation.bulk_change), (SELECT count(*) FROM activation.device_change)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telegence_activation", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def test_valid_file_is_written_with_the_real_change_request_shape(tmp_path: Path, db_uri: str) -> None:
    rows = list(sample_rows(12, seed=7, static_ip_every=3))
    result = ingest_csv(db_uri, _write(tmp_path / "ok.csv", rows), SPEC)
    assert (result.device_count, result.static_ip_count) == (12, 4)
    with psycopg.connect(db_uri) as conn:
        bc = conn.execute(
            "SELECT status, device_count, service_provider_id, carrier_data_group FROM activation.bulk_change "
            "WHERE id = %s",
            (result.bulk_change_id,),
        ).fetchone()
        devices = conn.execute(
            "SELECT line_number, iccid, imei, status, step, needs_static_ip, change_request "
            "FROM activation.device_change WHERE bulk_change_id = %s ORDER BY line_number",
            (result.bulk_change_id,),
        ).fetchall()
    assert bc == ("NEW", 12, 1, "DG1")
    assert [d[0] for d in devices] == list(range(2, 14))  # CSV line numbers; line 1 is the header
    assert [d[1] for d in devices] == [r["iccid"] for r in rows]
    assert {d[3] for d in devices} == {"NEW"} and {d[4] for d in devices} == {"ActivateDevice"}
    first = devices[0][6]
    item = first["TelegenceActivationRequest"]
    names = [c["name"] for c in item["service"]["serviceCharacteristic"]]
    assert names[:6] == [
        "singleUserCode",
        "serviceZipCode",
        "equipmentType",
        "deviceTechnologyType",
        "IMEI",
        "sim",
    ]
    assert item["billingAccount"] == {"id": "BAN-100"}
    assert first["CarrierDataGroup"] == "DG1" and first["CarrierRatePool"] == "RP1"
    assert first["StaticIPProvision"] == {
        "PDPName": "DEMO.PDP",
        "StaticIPAPN": "iot.static.apn",
        "LteIndicator": "Y",
        "DefaultAPN": "N",
    }
    assert first["CustomerIPRange"] == "10.20.0.0/16"
    assert devices[1][5] is False and devices[1][6]["StaticIPProvision"] is None
    # The second sample device carries a removeOfferingCode, kept in storage for the later PATCH.
    second = devices[1][6]["TelegenceActivationRequest"]["service"]["serviceCharacteristic"]
    assert {"name": "removeOfferingCode", "value": "OLDSOC"} in second


def _one_bad(column: str, value: str) -> list[dict[str, str]]:
    rows = list(sample_rows(3, seed=11, static_ip_every=1))
    rows[1][column] = value
    return rows


BAD_ROWS = {
    "iccid-luhn": (
        _one_bad("iccid", make_iccid(5)[:-1] + "0" if make_iccid(5)[-1] != "0" else make_iccid(5)[:-1] + "1"),
        "line 3: iccid:",
        "check digit",
    ),
    "iccid-length": (_one_bad("iccid", "8901410"), "line 3: iccid:", "19 or 20 digits"),
    "imei-luhn": (
        _one_bad("imei", make_imei(5)[:-1] + str((int(make_imei(5)[-1]) + 1) % 10)),
        "line 3: imei:",
        "check digit",
    ),
    "imei-length": (_one_bad("imei", "12345"), "line 3: imei:", "15 digits"),
    "missing-rate-plan": (_one_bad("rate_plan_code", ""), "line 3: rate_plan_code:", "is required"),
    "missing-zip": (_one_bad("zip_code", ""), "line 3: zip_code:", "is required"),
    "bad-zip": (_one_bad("zip_code", "7520"), "line 3: zip_code:", "not a ZIP code"),
    "bad-cidr": (_one_bad("customer_ip_range", "10.20.0.1/16"), "line 3: customer_ip_range:", "CIDR"),
    "cidr-garbage": (_one_bad("customer_ip_range", "10.20.0.0/33"), "line 3: customer_ip_range:", "CIDR"),
    "static-ip-without-apn": (_one_bad("static_ip_apn", ""), "line 3: static_ip_apn:", "required"),
    "bad-lte-indicator": (_one_bad("lte_indicator", "maybe"), "line 3: lte_indicator:", "Y or N"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_each_kind_of_bad_row_is_rejected_and_nothing_written(tmp_path: Path, db_uri: str, case: str) -> None:
    rows, where, what = BAD_ROWS[case]
    before = _counts(db_uri)
    with pytest.raises(IntakeRejected) as rejected:
        ingest_csv(db_uri, _write(tmp_path / f"{case}.csv", rows), SPEC)
    assert any(p.startswith(where) and what in p for p in rejected.value.problems), rejected.value.problems
    assert _counts(db_uri) == before


def test_duplicates_within_the_file_name_both_lines(tmp_path: Path, db_uri: str) -> None:
    rows = list(sample_rows(4, seed=3))
    rows[3]["iccid"] = rows[0]["iccid"]
    rows[2]["imei"] = rows[1]["imei"]
    before = _counts(db_uri)
    with pytest.raises(IntakeRejected) as rejected:
        ingest_csv(db_uri, _write(tmp_path / "dup.csv", rows), SPEC)
    problems = rejected.value.problems
    assert any(p.startswith("line 5: iccid:") and "already appears on line 2" in p for p in problems)
    assert any(p.startswith("line 4: imei:") and "already appears on line 3" in p for p in problems)
    assert _counts(db_uri) == before


def test_header_problems_are_reported(tmp_path: Path, db_uri: str) -> None:
    rows = list(sample_rows(2, seed=5))
    columns = [c for c in ALL_COLUMNS if c != "imei"] + ["colour"]
    with pytest.raises(IntakeRejected) as rejected:
        ingest_csv(db_uri, _write(tmp_path / "hdr.csv", rows, columns), SPEC)
    assert "header: missing required column 'imei'" in rejected.value.problems
    assert "header: unknown column 'colour'" in rejected.value.problems


def test_every_bad_line_is_reported_not_only_the_first(tmp_path: Path, db_uri: str) -> None:
    rows = list(sample_rows(50, seed=9))
    for i in (4, 17, 33):
        rows[i]["imei"] = "1"
    with pytest.raises(IntakeRejected) as rejected:
        ingest_csv(db_uri, _write(tmp_path / "many.csv", rows), SPEC)
    assert rejected.value.total == 3
    assert [p.split(":")[0] for p in rejected.value.problems] == ["line 6", "line 19", "line 35"]


def test_cli_creates_a_bulk_change_and_prints_its_id(tmp_path: Path, db_uri: str) -> None:
    path = write_sample_csv(tmp_path / "cli.csv", 25, seed=21)
    done = _cli(
        "bulk-change", "create", "--csv", str(path), "--service-provider", "3", "--billing-account", "B"
    )
    assert done.returncode == 0, done.stderr
    bulk_change_id = int(done.stdout.strip())
    with psycopg.connect(db_uri) as conn:
        row = conn.execute(
            "SELECT service_provider_id, device_count, (SELECT count(*) FROM activation.device_change d "
            "WHERE d.bulk_change_id = b.id) FROM activation.bulk_change b WHERE id = %s",
            (bulk_change_id,),
        ).fetchone()
    assert row == (3, 25, 25)


def test_cli_rejects_a_bad_file_with_line_and_field(tmp_path: Path, db_uri: str) -> None:
    rows = list(sample_rows(5, seed=31))
    rows[2]["iccid"] = "123"
    path = _write(tmp_path / "bad.csv", rows)
    before = _counts(db_uri)
    done = _cli(
        "bulk-change", "create", "--csv", str(path), "--service-provider", "1", "--billing-account", "B"
    )
    assert done.returncode == 1
    assert "line 4: iccid: '123' must be 19 or 20 digits" in done.stderr
    assert "nothing written" in done.stderr
    assert done.stdout == ""
    assert _counts(db_uri) == before


def test_cli_sample_generates_a_valid_file(tmp_path: Path, db_uri: str) -> None:
    out = tmp_path / "sample.csv"
    done = _cli("bulk-change", "sample", "40", "--out", str(out), "--seed", "1")
    assert done.returncode == 0, done.stderr
    result = ingest_csv(db_uri, out, SPEC)
    assert result.device_count == 40


def test_cli_refuses_an_unknown_addition_bulk_change(tmp_path: Path, db_uri: str) -> None:
    path = write_sample_csv(tmp_path / "a.csv", 3)
    done = _cli(
        "bulk-change",
        "create",
        "--csv",
        str(path),
        "--service-provider",
        "1",
        "--billing-account",
        "B",
        "--addition-bulk-change-id",
        "999999",
    )
    assert done.returncode == 1
    assert "bulk change 999999 does not exist" in done.stderr


def test_100k_rows_stream_in_bounded_memory(
    tmp_path: Path, db_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ingest 100,000 devices in a child process and report its peak memory (measured, not asserted on time)."""
    path = write_sample_csv(tmp_path / "big.csv", 100_000, seed=4242)
    code = (
        "import resource, sys, time; from pathlib import Path\n"
        "from telegence_activation.intake import ingest_csv, BulkChangeSpec\n"
        "from telegence_activation.domain.intake import IntakeOptions\n"
        "t = time.perf_counter()\n"
        "r = ingest_csv(sys.argv[1], Path(sys.argv[2]), BulkChangeSpec(1, IntakeOptions('BAN')))\n"
        "print(r.bulk_change_id, r.device_count, time.perf_counter() - t,"
        " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, db_uri, str(path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    bulk_change_id, count, seconds, peak_kib = done.stdout.split()
    assert int(count) == 100_000
    with psycopg.connect(db_uri) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM activation.device_change WHERE bulk_change_id = %s", (int(bulk_change_id),)
        ).fetchone()
    assert stored == (100_000,)
    peak_mb = int(peak_kib) / 1024
    with capsys.disabled():
        print(
            f"\n[intake 100k] {float(seconds):.1f} s ingest ({100_000 / float(seconds):,.0f} rows/s), "
            f"peak RSS {peak_mb:.0f} MB, wall {time.perf_counter() - started:.1f} s"
        )
    # Generous bound: a regression to loading the file or the rows in memory would be several times this.
    assert peak_mb < 400, json.dumps({"peak_mb": peak_mb})


# ------------------------------------------------------------------------------ unreadable files


def _valid_text(rows: int = 3, seed: int | None = None) -> str:
    import io

    handle = io.StringIO()
    writer = csv.DictWriter(handle, fieldnames=list(ALL_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(sample_rows(rows, seed=seed))
    return handle.getvalue()


def _with_line(extra: bytes) -> bytes:
    """A valid file whose third line is replaced by ``extra``."""
    lines = _valid_text().encode().splitlines(keepends=True)
    lines[2] = extra
    return b"".join(lines)


def _bad_files() -> dict[str, tuple[bytes, str]]:
    valid = _valid_text()
    header, first = valid.splitlines()[:2]
    return {
        "binary": (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00",
            "header: line 1: (line): is not UTF-8 text (byte 0x89",
        ),
        "nul-byte": (
            _with_line(first.encode()[:30] + b"\x00" + first.encode()[31:] + b"\n"),
            "line 3: (line): contains a NUL byte",
        ),
        "latin-1": (
            _with_line(first.replace(first.split(",")[5], "Jos\u00e9").encode("latin-1") + b"\n"),
            "line 3: (line): is not UTF-8 text (byte 0xE9",
        ),
        "10-MB-field": (
            _with_line(b'"' + b"x" * 10_000_000 + b'"\n'),
            "line 3: (line): longer than the limit of 65536 bytes",
        ),
        "semicolons": (
            valid.replace(",", ";").encode(),
            "header: the columns are separated by semicolons; use commas",
        ),
        "tabs": (valid.replace(",", "\t").encode(), "header: the columns are separated by tabs; use commas"),
        "truncated-last-line": (valid.encode()[: len(valid) - 60], "(truncated?)"),
        "unterminated-quote": (valid.encode() + first.encode()[:20] + b',"open quote', "is not valid CSV"),
        "empty": (b"", "header: the file is empty (no header line)"),
        "header-only": ((header + "\n").encode(), "line 1: (file): has a header but no device rows"),
    }


@pytest.mark.parametrize("case", sorted(_bad_files()))
def test_every_unreadable_file_is_refused_with_one_line_reasons_and_nothing_written(
    tmp_path: Path, db_uri: str, case: str
) -> None:
    content, message = _bad_files()[case]
    path = tmp_path / f"{case}.csv"
    path.write_bytes(content)
    before = _counts(db_uri)
    done = _cli(
        "bulk-change", "create", "--csv", str(path), "--service-provider", "1", "--billing-account", "B"
    )
    assert done.returncode == 1
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "nothing written" in done.stderr
    assert all(len(line) < 400 for line in done.stderr.splitlines())  # a short prefix, never the value
    assert _counts(db_uri) == before
