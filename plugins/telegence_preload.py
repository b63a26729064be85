"""Preload the activation package in long-lived Airflow processes.

With ``[core] lazy_load_plugins = False`` the scheduler imports plugins at start, so the
LocalExecutor's forked task processes inherit these modules instead of importing them again for
every task (about 0.6 s of CPU per task instance on a 2-core machine; see bench/results.md).
Harmless elsewhere: the package is needed by every component that runs tasks anyway.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

import telegence_activation.operators.activate
import telegence_activation.operators.approval
import telegence_activation.operators.finalize
import telegence_activation.operators.offering_codes
import telegence_activation.operators.plan
import telegence_activation.operators.plan_static_ip
import telegence_activation.operators.prepare
import telegence_activation.operators.request_static_ips
import telegence_activation.sensors.activation_status
import telegence_activation.sensors.ip_provisioning_status  # noqa: F401


class TelegencePreloadPlugin(AirflowPlugin):
    name = "telegence_preload"
