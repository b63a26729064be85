"""The quick fault suite of ``make chaos`` (``bench/chaos.py --quick``), in-process, on one live stack.

One stack for the module, the runner's: supervised, on an embedded PostgreSQL server of its own in
the module's temporary folder, with the simulator and the Airflow components (LocalExecutor). Each
quick fault is injected as the runner does it, and its row must show nothing lost, nothing done
twice, every carrier write recorded, the bulk change finished (PROCESSED or ERROR, by itself or
after one documented command) and the fault's own checks held (e.g. ``retry-failed`` refused
while the run was running).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import chaos

pytestmark = pytest.mark.timeout(1200)

DEVICES = 6


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[chaos.Chaos]:
    work = tmp_path_factory.mktemp("chaos")
    with chaos.chaos_stack(work, DEVICES, pgdata=work / "pgdata") as running:
        yield running


@pytest.mark.parametrize("fault", chaos.QUICK)
def test_fault_leaves_nothing_lost_or_doubled(ctx: chaos.Chaos, fault: str) -> None:
    row = chaos.run_fault(ctx, fault)
    print(row)
    if not row.clean:  # shown with the failure
        for component in ("scheduler", "api-server"):
            print(f"--- {component} ---\n{ctx.stack.log_tail(component)}")
    assert row.devices > 0, row
    assert row.lost == 0, row
    assert row.double_activations == 0, row
    assert row.duplicate_audit_rows == 0, row
    assert row.missing_attempts == 0, row
    assert set(row.outcome["status"].split("/")) <= {"PROCESSED", "ERROR"}, row
    assert all(row.checks.values()), row
