"""The steps of the activation workflow, as stored in ``device_change.step`` and ``step_timing.step``.

Pure: no Airflow import, no database import. The values are the strings the database holds (the
``device_change.step`` CHECK constraint lists them), so they never change. They are plain ``str``
constants: what a query binds, what an audit row or the report holds, is exactly that string.
"""

from __future__ import annotations

from typing import Final

STEP_ACTIVATE: Final = "ActivateDevice"
STEP_WAIT_ACTIVATION: Final = "WaitForActivation"
STEP_REMOVE_CODES: Final = "RemoveOfferingCodes"
STEP_REQUEST_IP: Final = "RequestIPProvision"
STEP_CHECK_IP: Final = "CheckIPProvisionStatus"
STEP_DONE: Final = "Done"

# Every step, in the order a device goes through them.
STEPS: Final = (
    STEP_ACTIVATE,
    STEP_WAIT_ACTIVATION,
    STEP_REMOVE_CODES,
    STEP_REQUEST_IP,
    STEP_CHECK_IP,
    STEP_DONE,
)
# The steps of activating the SIM itself: a device that failed at one of them is activated again
# from the start (a new activation request) on a retry.
ACTIVATION_STEPS: Final = (STEP_ACTIVATE, STEP_WAIT_ACTIVATION)
