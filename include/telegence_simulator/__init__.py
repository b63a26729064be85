"""A real HTTP simulator of AT&T's Telegence mobility API (activation and static IP provisioning).

Stand-alone: it imports nothing from the rest of the project; clients meet it only over HTTP.
Run ``python -m telegence_simulator --help`` or use :func:`start_simulator`.
"""

from __future__ import annotations

from .launcher import AdminClient, RunningSimulator, start_simulator
from .scenario import Scenario, ScenarioError, builtin_names, load_scenario

__all__ = [
    "AdminClient",
    "RunningSimulator",
    "Scenario",
    "ScenarioError",
    "builtin_names",
    "load_scenario",
    "start_simulator",
]
