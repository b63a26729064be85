"""A 100-device run of the benchmark, so ``make bench`` cannot rot. Figures are printed, not asserted on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(900)
def test_bench_runs_and_writes_every_figure(
    tmp_path: Path, db_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--sizes",
            "100",
            "--db-rows",
            "1000",
            "--out",
            str(tmp_path),
        ],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=850,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    (run,) = results["end_to_end"]
    assert run["devices"] == 100 and run["state"] == "success"
    assert run["statuses"] == {"PROCESSED": 100}
    # The ratio is of the unrounded wall time; wall_s is rounded to 0.1 s.
    assert (
        run["wall_s"] > 0
        and run["ideal_s"] > 0
        and abs(run["ratio"] - run["wall_s"] / run["ideal_s"]) <= 0.005 + 0.05 / run["ideal_s"]
    )
    assert set(run["steps"]) >= {"ActivateDevice", "WaitForActivation", "CheckIPProvisionStatus"}
    assert set(results["db_writes"]) >= {"dag_rows_per_s", "copy_rows_per_s", "insert_per_row_rows_per_s"}
    assert 0 < results["max_xcom_bytes"] < 2048
    assert set(results["peak_rss_mb"]) == {"scheduler", "api-server", "worker"}
    assert results["carrier_calls"]["made"] >= results["carrier_calls"]["minimum"] > 0
    assert "| 100 | success |" in (tmp_path / "results.md").read_text()
    with capsys.disabled():
        print(
            "\n[bench smoke]",
            json.dumps({k: run[k] for k in ("wall_s", "ideal_s", "ratio")}),
            results["db_writes"],
        )
