"""The repository package keeps the one namespace its callers use: ``repo.<name>``."""

from __future__ import annotations

import re
from pathlib import Path

from telegence_activation import repository as repo
from telegence_activation.domain.report import CSV_COLUMNS

REPO_ROOT = Path(__file__).resolve().parents[2]
CALLER_DIRS = ("include", "dags", "plugins", "tests", "bench")


def _names_callers_use() -> set[str]:
    found: set[str] = set()
    for folder in CALLER_DIRS:
        for path in (REPO_ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "import repository as repo" in text:
                found.update(re.findall(r"\brepo\.([A-Za-z]\w*)", text))
    return found


def test_every_name_callers_use_is_exported() -> None:
    used = _names_callers_use()
    assert "update_devices" in used  # the scan finds the callers
    missing = sorted(name for name in used if name not in repo.__all__)
    assert not missing, f"used as repo.<name> but not in repository.__all__: {missing}"


def test_all_names_exist_and_are_unique() -> None:
    assert len(repo.__all__) == len(set(repo.__all__))
    assert [name for name in repo.__all__ if not hasattr(repo, name)] == []


def test_record_is_exported() -> None:
    assert "record" in repo.__all__ and callable(repo.record)


def test_csv_columns_are_the_report_columns() -> None:
    # The CSV report's header (finalize and the CLI): one column per value of device_rows_for_export.
    assert CSV_COLUMNS == (
        "line_number",
        "iccid",
        "imei",
        "status",
        "step",
        "subscriber_number",
        "assigned_ip",
        "activation_request_id",
        "ip_batch_id",
        "status_details",
    )
