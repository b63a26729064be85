"""``make demo``: a real Airflow run of a bulk change against the Telegence simulator.

Starts the local stack (embedded PostgreSQL, simulator, Airflow api-server/scheduler/
dag-processor/triggerer with the LocalExecutor; with ``--executor celery`` or ``EXECUTOR=celery``
the CeleryExecutor, a Redis broker and two Celery workers), creates a bulk change of sample devices,
triggers the activation DAG through the REST API v2, follows it step by step, prints the summary
report, the UI address and the login, then keeps the stack up for the UI until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from telegence_activation import repository as repo
from telegence_activation.api_client import DAG_ID, run_id_for
from telegence_activation.domain.intake import IntakeOptions
from telegence_activation.intake import BulkChangeSpec, ingest_csv, write_sample_csv
from telegence_local.config import EXECUTORS
from telegence_local.stack import LiveStack, StackConfig

FINISHED = ("success", "failed")


def _say(text: str) -> None:
    print(text, flush=True)


def stack_trouble(stack: LiveStack) -> str:
    """Components that are not up, e.g. "scheduler restarting (killed by signal 9)"; empty when all are."""
    return ", ".join(f"{name} {state}" for name, state in sorted(stack.status.items()) if state != "up")


def follow(stack: LiveStack, bulk_change_id: int, run_id: str, timeout: float) -> str:
    """Print progress until the run finishes; return its final state."""
    client = stack.client()
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        down = stack_trouble(stack)
        try:
            run = client.get_run(run_id)
            tis = client.task_instances(run_id)
            with psycopg.connect(stack.activation_db_uri, connect_timeout=5) as conn:
                counts = repo.status_counts(conn, bulk_change_id)
                _, assigned = repo.static_ip_counts(conn, bulk_change_id)
        except Exception as exc:  # the api-server or the database may be restarting
            line = f"[{time.monotonic() - started:5.0f}s] waiting: {down or exc}"
            if line[8:] != last[8:]:
                _say(line)
                last = line
            time.sleep(2)
            continue
        batches = [t for t in tis if t["task_id"] == "activate"]
        done_batches = sum(1 for t in batches if t["state"] in ("success", "failed"))
        running = sorted(
            {t["task_id"] for t in tis if t["state"] in ("running", "queued", "up_for_reschedule")}
        )
        line = (
            f"[{time.monotonic() - started:5.0f}s] run {run['state']:<8} "
            f"batches sent {done_batches}/{len(batches) or '?'}  "
            f"devices {' '.join(f'{k}={v}' for k, v in sorted(counts.items()))}  "
            f"IPs assigned {assigned}  now: {', '.join(running) or '-'}" + (f"  [{down}]" if down else "")
        )
        if line[8:] != last[8:]:
            _say(line)
            last = line
        if run["state"] in FINISHED:
            return str(run["state"])
        time.sleep(2)
    raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f} s")


def print_report(report: dict[str, Any]) -> None:
    _say("")
    _say(f"=== Bulk change {report['bulk_change_id']}: {report['status']} ===")
    _say(f"devices {report['devices']}: {report['succeeded']} processed, {report['failed']} failed")
    _say(
        f"static IPs: {report['static_ip']['assigned']} assigned of {report['static_ip']['requested']} requested"
    )
    if report["failures_by_reason"]:
        _say("failures by reason:")
        for failure in report["failures_by_reason"]:
            _say(f"  {failure['devices']:>5}  {failure['status']}: {failure['reason']}")
    _say("time per step:")
    for step in report["steps"]:
        _say(f"  {step['step']:<24} {step['seconds'] if step['seconds'] is not None else '-':>8} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=10.0, help="carrier clock speed-up (default 10x)")
    parser.add_argument("--api-port", type=int, default=8080)
    parser.add_argument("--exit", action="store_true", help="stop the stack after the report (no UI wait)")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=os.environ.get("EXECUTOR") or "local",
        help="local: the scheduler runs the tasks (LocalExecutor); celery: a Redis broker and two Celery "
        "workers run them (CeleryExecutor). Default: $EXECUTOR, else local (make demo EXECUTOR=celery)",
    )
    args = parser.parse_args(argv)

    stack = LiveStack(
        StackConfig(
            api_port=args.api_port, scenario="demo", time_scale=args.time_scale, executor=args.executor
        )
    )

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and a plain kill both stop everything (SIGINT explicitly too: a shell that starts the
    # demo in the background leaves SIGINT ignored).
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    t0 = time.monotonic()
    try:
        _say(
            "starting embedded PostgreSQL, the Telegence simulator and Airflow "
            f"({', '.join(c for c in stack.config.components)}; {args.executor} executor) ..."
        )
        stack.start()
        _say(
            f"stack up in {time.monotonic() - t0:.0f} s: Airflow {stack.api_url}, simulator {stack.simulator.base_url}"  # type: ignore[union-attr]
            f", logs in {stack.logs_dir}"
        )
        client = stack.client()
        client.unpause(DAG_ID)

        samples = stack.config.home / "samples"
        csv_path = write_sample_csv(samples / f"demo-{int(time.time())}.csv", args.devices)
        result = ingest_csv(
            stack.activation_db_uri,
            csv_path,
            BulkChangeSpec(
                1, IntakeOptions("287301234567", "DEMO-DG", "DEMO-RP"), customer_name="Demo Customer"
            ),
        )
        _say(
            f"bulk change {result.bulk_change_id}: {result.device_count} devices "
            f"({result.static_ip_count} with static IP) from {csv_path}"
        )
        run_id = run_id_for(result.bulk_change_id)
        conf = {
            "bulk_change_id": result.bulk_change_id,
            "on_activation_failure": "continue",
            "activation_check_interval_seconds": 5,
            "ip_check_interval_seconds": 5,
        }
        _say(
            f"POST {stack.api_url}/api/v2/dags/{DAG_ID}/dagRuns  dag_run_id={run_id} conf={json.dumps(conf)}"
        )
        client.trigger(conf, run_id)
        state = follow(stack, result.bulk_change_id, run_id, args.timeout)
        with psycopg.connect(stack.activation_db_uri) as conn:
            report = repo.get_report(conn, result.bulk_change_id)
        if report:
            print_report(report)
        reports = Path(stack.env["TELEGENCE_REPORTS_DIR"])
        _say(f"report files: {reports / f'bulk_change_{result.bulk_change_id}.json'} (and .csv, .html)")
        _say(f"run {run_id} finished {state} in {time.monotonic() - t0:.0f} s (stack start included)")
        note = stack.client().get_run(run_id).get("note")
        if note:
            _say(f"the run's note in the Airflow UI:\n{note}")
        _say("")
        _say(f"Airflow UI: {stack.api_url}   login: admin / {stack.password}")
        _say(f"CLI:  python -m telegence_activation status {result.bulk_change_id}")
        if args.exit:
            return 0 if state == "success" else 1
        _say(
            "the stack keeps running for the UI (a component that exits is restarted); press Ctrl-C to stop it"
        )
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        _say("\nstopping ...")
        return 130
    finally:
        stack.stop()
        _say("stopped: every process the demo started has ended")


if __name__ == "__main__":
    sys.exit(main())
