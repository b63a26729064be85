"""The step names: pure, the strings the database stores, re-exported by the repository."""

from __future__ import annotations

import re
import subprocess
import sys

from telegence_activation.db.migrate import load_migrations
from telegence_activation.domain import steps


def test_step_names_are_the_stored_strings() -> None:
    # The database holds these strings (device_change.step, step_timing.step, the audit log):
    # they never change.
    assert steps.STEP_ACTIVATE == "ActivateDevice"
    assert steps.STEP_WAIT_ACTIVATION == "WaitForActivation"
    assert steps.STEP_REMOVE_CODES == "RemoveOfferingCodes"
    assert steps.STEP_REQUEST_IP == "RequestIPProvision"
    assert steps.STEP_CHECK_IP == "CheckIPProvisionStatus"
    assert steps.STEP_DONE == "Done"
    assert all(type(step) is str for step in steps.STEPS)


def test_steps_are_the_ones_the_schema_allows() -> None:
    checks = [
        m.group(1)
        for migration in load_migrations()
        for m in re.finditer(r"CHECK \(step IN \(([^)]*)\)\)", migration.sql)
    ]
    assert checks, "no CHECK constraint on device_change.step found in the migrations"
    allowed = re.findall(r"'([^']*)'", checks[-1])
    assert set(allowed) == set(steps.STEPS)
    assert len(steps.STEPS) == len(set(steps.STEPS))
    assert steps.STEPS[0] == steps.STEP_ACTIVATE and steps.STEPS[-1] == steps.STEP_DONE


def test_activation_steps_are_activate_and_wait() -> None:
    assert steps.ACTIVATION_STEPS == (steps.STEP_ACTIVATE, steps.STEP_WAIT_ACTIVATION)


def test_domain_modules_import_neither_airflow_nor_a_database_driver() -> None:
    # The CLI takes CSV_COLUMNS from domain.report: it must not pull Airflow in.
    code = (
        "import sys\n"
        "import telegence_activation.domain.steps, telegence_activation.domain.report\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'psycopg', 'sqlalchemy'))\n"
        "print(' '.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_repository_reexports_the_domain_step_names() -> None:
    from telegence_activation import repository as repo

    for name in (
        "STEP_ACTIVATE",
        "STEP_WAIT_ACTIVATION",
        "STEP_REMOVE_CODES",
        "STEP_REQUEST_IP",
        "STEP_CHECK_IP",
        "STEP_DONE",
    ):
        assert getattr(repo, name) is getattr(steps, name)
        assert name in repo.__all__
