"""Example: a downstream DAG scheduled on the bulk-change Asset (billing export of activated lines).

Each finished bulk change emits an event on ``telegence://bulk-change`` (the activation DAG's
``finalize`` task); this DAG runs for it and writes the activated lines to a billing CSV.
Wiring only: the work is ``telegence_activation.operators.billing_export``.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from telegence_activation.assets import BULK_CHANGE_FINISHED
from telegence_activation.operators.billing_export import BillingExportOperator

with DAG(
    dag_id="telegence_billing_export",
    description="Export the lines each finished bulk change activated, for billing",
    schedule=[BULK_CHANGE_FINISHED],
    catchup=False,
    tags=["telegence", "billing", "example"],
    doc_md=__doc__,
    params={
        "bulk_change_id": Param(
            None, type=["null", "integer"], minimum=1, description="Manual runs: the bulk change to export."
        ),
        "activation_db_conn_id": Param("activation_db", type="string", minLength=1),
    },
) as dag:
    BillingExportOperator(
        task_id="export_activated_lines", activation_db_conn_id="{{ params.activation_db_conn_id }}"
    )
