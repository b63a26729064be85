"""Telegence new service activation: one run per bulk change, triggered with the bulk change in its conf.

plan -> unless_dry_run -> approve -> prepare -> activate (mapped, one instance per group of batches of <= 200
devices, sized from the carrier slots) -> wait_for_activation
-> remove_offering_codes -> plan_static_ip -> request_static_ips -> check_ip_provisioning -> finalize

Wiring only: the work lives in ``telegence_activation`` (operators, sensors, hooks, domain).
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, Param, TriggerRule
from airflow.sdk.configuration import conf

from telegence_activation.assets import BULK_CHANGE_FINISHED
from telegence_activation.operators.activate import ActivateBatchOperator
from telegence_activation.operators.approval import BulkChangeApprovalOperator
from telegence_activation.operators.finalize import FinalizeBulkChangeOperator
from telegence_activation.operators.offering_codes import RemoveOfferingCodesOperator
from telegence_activation.operators.plan import PlanBulkChangeOperator, go_on_unless_dry_run
from telegence_activation.operators.plan_static_ip import PlanStaticIPOperator
from telegence_activation.operators.prepare import PrepareBulkChangeOperator
from telegence_activation.operators.request_static_ips import RequestStaticIPsOperator
from telegence_activation.sensors.activation_status import ActivationStatusSensor
from telegence_activation.sensors.base import MAX_CHECK_TIMEOUT_SECONDS
from telegence_activation.sensors.ip_provisioning_status import IPProvisioningStatusSensor

CARRIER_POOL = "telegence_api"
# Default seconds between checks: the sensors' poke interval at parse time and the params' defaults.
ACTIVATION_CHECK_INTERVAL = 30
IP_CHECK_INTERVAL = 60
# Environment knobs for operators of the deployment (read from the environment, no I/O).
RETRY_DELAY = timedelta(seconds=float(os.environ.get("TELEGENCE_TASK_RETRY_DELAY_SECONDS", "30")))
MAX_ACTIVE_BATCHES = int(os.environ.get("TELEGENCE_MAX_ACTIVE_BATCHES_PER_RUN", "8"))
# An override of batches_per_task above this is refused by the params' schema (5,000 batches of
# 200: 1,000,000 devices in one instance).
MAX_BATCHES_PER_TASK = 5000
APPROVAL_TIMEOUT = timedelta(hours=float(os.environ.get("TELEGENCE_APPROVAL_TIMEOUT_HOURS", "24")))
# Reschedule-mode sensors can be failed by a scheduler race (apache/airflow#71172, open in 3.3):
# the executor's "success" for one poke arrives after the next poke was queued (seen about once per
# three reschedules at 5 s intervals). Every poke is idempotent and the step's deadline is kept in
# the database, so the sensors retry as often as the race needs: the deadline, not the number of
# tries, ends a wait.
SENSOR_RETRIES = {"retries": 5000, "retry_delay": timedelta(seconds=3), "retry_exponential_backoff": 0}
# Connections, per run (templated): None = the defaults (activation_db; telegence_sp_<id>, else
# telegence_default).
CONNECTIONS = {
    "activation_db_conn_id": "{{ params.activation_db_conn_id }}",
    "telegence_conn_id": "{{ params.telegence_conn_id }}",
}
# How the two checks wait between pokes, per run: rescheduled (default) or deferred to the
# triggerer on a time-only trigger (the pokes stay on the worker). The param's default follows
# Airflow's [operators] default_deferrable (False unless the deployment turns it on).
DEFERRABLE_CHECKS = {"deferrable": "{{ params.deferrable_checks }}"}

with DAG(
    dag_id="telegence_new_service_activation",
    description="Activate a bulk change of SIM cards on Telegence, then provision their static IPs",
    schedule=None,
    max_active_runs=16,
    render_template_as_native_obj=True,
    tags=["telegence", "activation"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": RETRY_DELAY, "retry_exponential_backoff": 2.0},
    params={
        "bulk_change_id": Param(type="integer", minimum=1, description="The bulk change to run (required)."),
        "dry_run": Param(
            False,
            type="boolean",
            description="Only plan: validate, check credentials read-only, write the plan; nothing is sent.",
        ),
        "approval_required_over": Param(
            0,
            type="integer",
            minimum=0,
            description="Ask a person to approve the plan above this many lines (0: never).",
        ),
        "addition_bulk_change_id": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Related bulk change finished with this one.",
        ),
        "carrier_data_group": Param(
            None, type=["null", "string"], description="Overrides the stored data group."
        ),
        "carrier_rate_pool": Param(
            None, type=["null", "string"], description="Overrides the stored rate pool."
        ),
        "on_activation_failure": Param(
            "stop",
            enum=["stop", "continue"],
            description="stop: no static IP step if any device failed activation; continue: active devices go on.",
        ),
        "batch_size": Param(
            200, type="integer", minimum=1, maximum=200, description="Devices per activation call."
        ),
        "batches_per_task": Param(
            "auto",
            type=["string", "integer"],
            pattern="^auto$",
            minimum=0,
            maximum=MAX_BATCHES_PER_TASK,
            description=(
                "Batches each activate task instance sends: 'auto' (or 0) chooses from the batch count and the "
                "carrier slots (about two instances per slot, within [core] max_map_length); an integer overrides "
                "(raised if it would exceed max_map_length)."
            ),
        ),
        "patch_parallel_calls": Param(
            "auto",
            type=["string", "integer"],
            pattern="^auto$",
            minimum=0,
            maximum=64,
            description=(
                "Concurrent PATCH calls of remove_offering_codes: 'auto' (or 0) = the carrier slots, fewer for few "
                "lines; an integer overrides."
            ),
        ),
        "activation_check_interval_seconds": Param(
            ACTIVATION_CHECK_INTERVAL,
            type="integer",
            minimum=1,
            maximum=3600,
            description="Seconds between activation checks (the sensor's poke interval for this run).",
        ),
        "activation_check_timeout_seconds": Param(
            3600,
            type="integer",
            minimum=1,
            maximum=MAX_CHECK_TIMEOUT_SECONDS,
            description="Deadline of the activation checks, from their first check (kept in the database).",
        ),
        "ip_check_interval_seconds": Param(
            IP_CHECK_INTERVAL,
            type="integer",
            minimum=1,
            maximum=3600,
            description="Seconds between static IP checks (the sensor's poke interval for this run).",
        ),
        "ip_check_timeout_seconds": Param(
            3600,
            type="integer",
            minimum=1,
            maximum=MAX_CHECK_TIMEOUT_SECONDS,
            description="Deadline of the static IP checks, from their first check (kept in the database).",
        ),
        "deferrable_checks": Param(
            conf.getboolean("operators", "default_deferrable", fallback=False),
            type="boolean",
            description=(
                "Wait between the activation and static IP checks deferred to the triggerer (a time-only "
                "trigger; the checks still run on a worker) instead of rescheduled by the scheduler."
            ),
        ),
        "activation_db_conn_id": Param(
            "activation_db", type="string", minLength=1, description="The activation database connection."
        ),
        "telegence_conn_id": Param(
            None,
            type=["null", "string"],
            description="Carrier connection override (default: telegence_sp_<service provider>, else telegence_default).",
        ),
    },
) as dag:
    plan = PlanBulkChangeOperator(
        task_id="plan",
        **CONNECTIONS,
        bulk_change_id="{{ params.bulk_change_id }}",
        batch_size="{{ params.batch_size }}",
        plan_only="{{ params.dry_run }}",
    )
    # A dry run ends here: every later task is skipped, whatever its trigger rule.
    unless_dry_run = ShortCircuitOperator(
        task_id="unless_dry_run",
        python_callable=go_on_unless_dry_run,
        ignore_downstream_trigger_rules=True,
    )
    approve = BulkChangeApprovalOperator(
        task_id="approve",
        activation_db_conn_id=CONNECTIONS["activation_db_conn_id"],
        bulk_change_id="{{ params.bulk_change_id }}",
        approval_required_over="{{ params.approval_required_over }}",
        response_timeout=APPROVAL_TIMEOUT,
    )
    prepare = PrepareBulkChangeOperator(
        task_id="prepare",
        **CONNECTIONS,
        bulk_change_id="{{ params.bulk_change_id }}",
        batch_size="{{ params.batch_size }}",
        batches_per_task="{{ params.batches_per_task }}",
        # The carrier slots activate may use at once: the sizing gives each about two instances.
        carrier_slots=MAX_ACTIVE_BATCHES,
        addition_bulk_change_id="{{ params.addition_bulk_change_id }}",
        carrier_data_group="{{ params.carrier_data_group }}",
        carrier_rate_pool="{{ params.carrier_rate_pool }}",
    )
    activate = ActivateBatchOperator.partial(
        task_id="activate",
        **CONNECTIONS,
        bulk_change_id="{{ params.bulk_change_id }}",
        pool=CARRIER_POOL,
        max_active_tis_per_dagrun=MAX_ACTIVE_BATCHES,
        map_index_template="{{ batch_label }}",
    ).expand(batch_no=prepare.output)  # [first batch, how many] per instance, sized by prepare
    wait_for_activation = ActivationStatusSensor(
        task_id="wait_for_activation",
        **CONNECTIONS,
        bulk_change_id="{{ params.bulk_change_id }}",
        poke_interval=ACTIVATION_CHECK_INTERVAL,  # what the serialized DAG shows; a run's param overrides
        check_interval_seconds="{{ params.activation_check_interval_seconds }}",
        check_timeout_seconds="{{ params.activation_check_timeout_seconds }}",
        **DEFERRABLE_CHECKS,
        pool=CARRIER_POOL,
        # Devices of the batches that did activate still need their status, whatever failed.
        trigger_rule=TriggerRule.ALL_DONE,
        **SENSOR_RETRIES,
    )
    remove_offering_codes = RemoveOfferingCodesOperator(
        task_id="remove_offering_codes",
        bulk_change_id="{{ params.bulk_change_id }}",
        max_parallel_calls="{{ params.patch_parallel_calls }}",
        carrier_slots=MAX_ACTIVE_BATCHES,
        pool=CARRIER_POOL,
        **CONNECTIONS,
    )
    plan_static_ip = PlanStaticIPOperator(
        task_id="plan_static_ip",
        activation_db_conn_id=CONNECTIONS["activation_db_conn_id"],
        bulk_change_id="{{ params.bulk_change_id }}",
        on_activation_failure="{{ params.on_activation_failure }}",
    )
    request_static_ips = RequestStaticIPsOperator(
        task_id="request_static_ips",
        bulk_change_id="{{ params.bulk_change_id }}",
        pool=CARRIER_POOL,
        **CONNECTIONS,
    )
    check_ip_provisioning = IPProvisioningStatusSensor(
        task_id="check_ip_provisioning",
        **CONNECTIONS,
        bulk_change_id="{{ params.bulk_change_id }}",
        poke_interval=IP_CHECK_INTERVAL,
        check_interval_seconds="{{ params.ip_check_interval_seconds }}",
        check_timeout_seconds="{{ params.ip_check_timeout_seconds }}",
        **DEFERRABLE_CHECKS,
        pool=CARRIER_POOL,
        # Checks whatever was submitted, also when the request step skipped or failed part-way.
        trigger_rule=TriggerRule.ALL_DONE,
        **SENSOR_RETRIES,
    )
    finalize = FinalizeBulkChangeOperator(
        task_id="finalize",
        outlets=[BULK_CHANGE_FINISHED],  # downstream DAGs (e.g. telegence_billing_export) run on it
        bulk_change_id="{{ params.bulk_change_id }}",
        activation_db_conn_id=CONNECTIONS["activation_db_conn_id"],
        trigger_rule=TriggerRule.ALL_DONE,
    )

    (
        plan
        >> unless_dry_run
        >> approve
        >> prepare
        >> activate
        >> wait_for_activation
        >> remove_offering_codes
        >> plan_static_ip
        >> request_static_ips
        >> check_ip_provisioning
        >> finalize
    )
