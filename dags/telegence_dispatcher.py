"""The dispatcher: no bulk change is left NEW for ever because its REST trigger was lost.

On a schedule (every minute by default: ``TELEGENCE_DISPATCH_SCHEDULE``, a cron expression) it
starts one activation run per NEW bulk change older than the grace period with no owning run, with
the same run id as the CLI (so one triggered by REST meanwhile is not started twice), and lists
the bulk changes PROCESSING with no live run. Its data interval selects the bulk changes created in
that window (shifted back by the grace period), so a backfill over a past window re-dispatches what
was missed then, and nothing that already ran. Wiring only: the work is
``telegence_activation.operators.dispatch``.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, AssetOrTimeSchedule, CronDataIntervalTimetable, Param

from telegence_activation.assets import BULK_CHANGE_CREATED
from telegence_activation.operators.dispatch import ACTIVATION_DAG_ID, FindBulkChangesToDispatchOperator

with DAG(
    dag_id="telegence_dispatcher",
    description="Start the bulk changes nobody started; list the stuck ones",
    # Every minute with data intervals (each run looks at the bulk changes of its interval), and at
    # once on each bulk change the database announces (event-driven: the Asset's watcher).
    schedule=AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable(
            os.environ.get("TELEGENCE_DISPATCH_SCHEDULE", "* * * * *"), timezone="UTC"
        ),
        assets=[BULK_CHANGE_CREATED],
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["telegence", "dispatch"],
    doc_md=__doc__,
    params={
        "grace_seconds": Param(
            60, type="integer", minimum=0, description="Left to a bulk change's own REST trigger first."
        ),
        "sweep_older": Param(
            True,
            type="boolean",
            description="Also start older ones a missed interval left (not in backfills).",
        ),
        "limit": Param(500, type="integer", minimum=1, maximum=5000, description="At most per run."),
        "activation_db_conn_id": Param("activation_db", type="string", minLength=1),
    },
) as dag:
    find = FindBulkChangesToDispatchOperator(
        task_id="find_bulk_changes",
        grace_seconds="{{ params.grace_seconds }}",
        sweep_older="{{ params.sweep_older }}",
        limit="{{ params.limit }}",
        activation_db_conn_id="{{ params.activation_db_conn_id }}",
    )
    # One trigger per bulk change; a run id that exists (REST got there first) is skipped, not failed.
    TriggerDagRunOperator.partial(
        task_id="start_activation",
        trigger_dag_id=ACTIVATION_DAG_ID,
        skip_when_already_exists=True,
        wait_for_completion=False,
        map_index_template="{{ task.trigger_run_id }}",
    ).expand_kwargs(find.output)
