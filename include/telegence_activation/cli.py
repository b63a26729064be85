"""Command-line entry point: ``python -m telegence_activation ...`` (or ``telegence-activation``).

Commands::

    bulk-change create --csv FILE --service-provider N --billing-account BAN [...]
    bulk-change create --sample N --service-provider N --billing-account BAN [...]
    bulk-change sample N --out FILE
    trigger BULK_CHANGE_ID [--on-activation-failure stop|continue] [--batch-size N] [...]
    status BULK_CHANGE_ID
    report BULK_CHANGE_ID [--format json|csv]
    retry-failed BULK_CHANGE_ID
    db migrate | db uri | db stop

The run commands talk to Airflow's REST API: ``--api-url`` (env ``TELEGENCE_AIRFLOW_API_URL``,
default http://127.0.0.1:8080), ``--username`` (``TELEGENCE_AIRFLOW_USERNAME``, default admin) and
``--password`` (``TELEGENCE_AIRFLOW_PASSWORD``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from telegence_activation.domain.intake import IntakeOptions


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m telegence_activation",
        description="Bulk SIM activation on Telegence: intake, database and run tools.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    bulk = commands.add_parser("bulk-change", help="create bulk changes from device CSV files")
    bulk_commands = bulk.add_subparsers(dest="bulk_command", required=True)

    create = bulk_commands.add_parser("create", help="validate a CSV and write it as one new bulk change")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", type=Path, help="device CSV file (see README for the columns)")
    source.add_argument("--sample", type=_positive_int, metavar="N", help="generate N sample devices instead")
    create.add_argument("--service-provider", type=_positive_int, required=True, help="service provider id")
    create.add_argument("--billing-account", default="", help="BAN for rows without a billing_account column")
    create.add_argument("--carrier-data-group", help="carrier data group for static IP provisioning")
    create.add_argument("--carrier-rate-pool", help="carrier rate pool")
    create.add_argument(
        "--addition-bulk-change-id", type=_positive_int, help="related bulk change to finish too"
    )
    create.add_argument("--customer-name", help="customer named in the notification and report")
    create.add_argument("--notify-to", help="where the completion notification goes (e-mail or webhook)")
    create.add_argument("--seed", type=int, help="with --sample: seed for reproducible identifiers")
    create.add_argument(
        "--static-ip-every", type=int, default=3, help="with --sample: every Nth asks a static IP"
    )

    sample = bulk_commands.add_parser("sample", help="write a valid sample CSV")
    sample.add_argument("count", type=_positive_int, metavar="N")
    sample.add_argument("--out", type=Path, required=True)
    sample.add_argument("--seed", type=int)
    sample.add_argument(
        "--static-ip-every", type=int, default=3, help="every Nth device asks a static IP (0: none)"
    )

    def api_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--api-url", default=os.environ.get("TELEGENCE_AIRFLOW_API_URL", "http://127.0.0.1:8080")
        )
        command.add_argument("--username", default=os.environ.get("TELEGENCE_AIRFLOW_USERNAME", "admin"))
        command.add_argument("--password", default=os.environ.get("TELEGENCE_AIRFLOW_PASSWORD"))

    trigger = commands.add_parser("trigger", help="start the activation DAG for a bulk change (REST API)")
    trigger.add_argument("bulk_change_id", type=_positive_int)
    trigger.add_argument(
        "--dry-run", action="store_true", help="only plan (no carrier write; the bulk change stays NEW)"
    )
    trigger.add_argument(
        "--approval-over",
        type=int,
        dest="approval_required_over",
        metavar="N",
        help="ask for approval in the Airflow UI when more than N lines would be sent",
    )
    trigger.add_argument("--on-activation-failure", choices=["stop", "continue"])
    trigger.add_argument("--batch-size", type=_positive_int)
    trigger.add_argument(
        "--activation-check-interval", type=_positive_int, dest="activation_check_interval_seconds"
    )
    trigger.add_argument(
        "--activation-check-timeout", type=_positive_int, dest="activation_check_timeout_seconds"
    )
    trigger.add_argument("--ip-check-interval", type=_positive_int, dest="ip_check_interval_seconds")
    trigger.add_argument("--ip-check-timeout", type=_positive_int, dest="ip_check_timeout_seconds")
    api_options(trigger)

    status = commands.add_parser("status", help="devices of a bulk change by status and step (database)")
    status.add_argument("bulk_change_id", type=_positive_int)

    report = commands.add_parser("report", help="the summary report (json) or every device (csv)")
    report.add_argument("bulk_change_id", type=_positive_int)
    report.add_argument("--format", choices=["json", "csv"], default="json")

    retry = commands.add_parser(
        "retry-failed", help="reset failed devices and rerun the bulk change's DAG run"
    )
    retry.add_argument("bulk_change_id", type=_positive_int)
    which = retry.add_mutually_exclusive_group()
    which.add_argument(
        "--all", action="store_true", help="retry every failed device, whatever its error class"
    )
    which.add_argument(
        "--class",
        dest="error_class",
        action="append",
        choices=["retryable", "permanent", "needs_person", "unknown"],
        help="retry failed devices of this error class (repeatable; default: retryable)",
    )
    api_options(retry)

    cancel = commands.add_parser(
        "cancel", help="stop a bulk change: nothing more is sent; accepted lines finish (database)"
    )
    cancel.add_argument("bulk_change_id", type=_positive_int)
    cancel.add_argument("--reason", required=True, help="why (recorded, reported, told to the customer)")

    db = commands.add_parser("db", help="activation database")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("migrate", help="apply pending schema migrations")
    db_commands.add_parser("uri", help="print the database URI in use (password hidden)")
    db_commands.add_parser("stop", help="stop the embedded server, if it runs")
    return parser


def _redacted(uri: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def _create(args: argparse.Namespace) -> int:
    from telegence_activation.db.connection import activation_db_uri, data_dir
    from telegence_activation.db.migrate import migrate
    from telegence_activation.intake import BulkChangeSpec, IntakeRejected, ingest_csv, write_sample_csv

    path: Path = args.csv
    if args.sample:
        folder = data_dir() / "samples"
        folder.mkdir(exist_ok=True)
        name = f"sample-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.csv"
        path = write_sample_csv(
            folder / name, args.sample, seed=args.seed, static_ip_every=args.static_ip_every
        )
        print(f"sample CSV of {args.sample} devices: {path}", file=sys.stderr)
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return 2
    uri = activation_db_uri()
    migrate(uri)
    spec = BulkChangeSpec(
        service_provider_id=args.service_provider,
        options=IntakeOptions(args.billing_account, args.carrier_data_group, args.carrier_rate_pool),
        addition_bulk_change_id=args.addition_bulk_change_id,
        customer_name=args.customer_name,
        notify_to=args.notify_to,
    )
    try:
        result = ingest_csv(uri, path, spec)
    except IntakeRejected as rejected:
        print(f"error: {path}: {rejected}", file=sys.stderr)
        for problem in rejected.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(
        f"bulk change {result.bulk_change_id}: {result.device_count} devices "
        f"({result.static_ip_count} with static IP)",
        file=sys.stderr,
    )
    print(result.bulk_change_id)
    return 0


def _client(args: argparse.Namespace) -> Any:
    from telegence_activation.api_client import AirflowClient

    if not args.password:
        raise SystemExit("error: the Airflow password is needed: --password or TELEGENCE_AIRFLOW_PASSWORD")
    return AirflowClient(args.api_url, args.username, args.password)


def _bulk_change_or_exit(conn: Any, bulk_change_id: int) -> dict[str, Any]:
    from telegence_activation import repository as repo

    bulk_change = repo.get_bulk_change(conn, bulk_change_id)
    if bulk_change is None:
        raise SystemExit(f"error: bulk change {bulk_change_id} does not exist")
    return bulk_change


def _trigger(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    import psycopg

    from telegence_activation.api_client import AirflowApiError, dry_run_id_for, run_id_for
    from telegence_activation.db.connection import activation_db_uri

    run_id = (
        dry_run_id_for(args.bulk_change_id, datetime.now(UTC).strftime("%Y%m%dT%H%M%S"))
        if args.dry_run
        else run_id_for(args.bulk_change_id)
    )
    with psycopg.connect(activation_db_uri()) as conn:
        bulk_change = _bulk_change_or_exit(conn, args.bulk_change_id)
    if bulk_change["status"] != "NEW":
        print(
            f"error: bulk change {args.bulk_change_id} is {bulk_change['status']}, not NEW: it was already "
            f"triggered (run {bulk_change['dag_run_id'] or run_id}); use 'status' to follow it or "
            "'retry-failed' to retry its failed devices",
            file=sys.stderr,
        )
        return 1
    conf: dict[str, Any] = {"bulk_change_id": args.bulk_change_id, "dry_run": args.dry_run}
    for key in (
        "approval_required_over",
        "on_activation_failure",
        "batch_size",
        "activation_check_interval_seconds",
        "activation_check_timeout_seconds",
        "ip_check_interval_seconds",
        "ip_check_timeout_seconds",
    ):
        if getattr(args, key) is not None:
            conf[key] = getattr(args, key)
    try:
        run = _client(args).trigger(conf, run_id)
    except AirflowApiError as exc:
        if exc.status == 409:
            print(
                f"error: bulk change {args.bulk_change_id} was already triggered as run {run_id}",
                file=sys.stderr,
            )
        else:
            print(f"error: trigger refused: {exc}", file=sys.stderr)
        return 1
    print(f"triggered run {run['dag_run_id']} ({run['state']})", file=sys.stderr)
    print(run["dag_run_id"])
    return 0


def _status(args: argparse.Namespace) -> int:
    import psycopg

    from telegence_activation import repository as repo
    from telegence_activation.db.connection import activation_db_uri

    with psycopg.connect(activation_db_uri()) as conn:
        bulk_change = _bulk_change_or_exit(conn, args.bulk_change_id)
        rows = repo.status_step_counts(conn, args.bulk_change_id)
        failures = repo.failure_reasons(conn, args.bulk_change_id)
    total = sum(n for _, _, n in rows)
    print(f"bulk change {bulk_change['id']}: {bulk_change['status']} ({total} devices)")
    if bulk_change["status_details"]:
        print(f"  {bulk_change['status_details']}")
    for status, step, count in rows:
        print(f"  {status:<11} {step:<24} {count:>8}")
    if failures:
        print("failures by reason:")
        for status, reason, count in failures[:20]:
            print(f"  {count:>8}  {status}: {reason}")
    return 0


def _report(args: argparse.Namespace) -> int:
    import csv
    import json

    import psycopg

    from telegence_activation import repository as repo
    from telegence_activation.db.connection import activation_db_uri
    from telegence_activation.domain.report import CSV_COLUMNS

    with psycopg.connect(activation_db_uri()) as conn:
        _bulk_change_or_exit(conn, args.bulk_change_id)
        if args.format == "csv":
            writer = csv.writer(sys.stdout)
            writer.writerow(CSV_COLUMNS)
            for row in repo.device_rows_for_export(conn, args.bulk_change_id):
                writer.writerow(["" if v is None else v for v in row])
            return 0
        report = repo.get_report(conn, args.bulk_change_id)
    if report is None:
        print(
            f"error: bulk change {args.bulk_change_id} has no report yet (it is not finished)",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(report, indent=2))
    return 0


def _retry_failed(args: argparse.Namespace) -> int:
    import getpass

    import psycopg

    from telegence_activation import actions
    from telegence_activation.db.connection import activation_db_uri

    client = _client(args)
    classes = actions.ERROR_CLASSES if args.all else tuple(args.error_class or actions.DEFAULT_RETRY_CLASSES)
    with psycopg.connect(activation_db_uri()) as conn:
        try:
            outcome = actions.retry_failed(
                conn, client, args.bulk_change_id, by=getpass.getuser(), classes=tuple(classes)
            )
        except actions.ActionRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(outcome.message)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    import getpass

    import psycopg

    from telegence_activation import actions
    from telegence_activation.db.connection import activation_db_uri

    with psycopg.connect(activation_db_uri()) as conn:
        print(f"cancelling bulk change {args.bulk_change_id} (waits for activation calls in flight)...")
        try:
            outcome = actions.cancel(conn, args.bulk_change_id, by=getpass.getuser(), reason=args.reason)
        except actions.ActionRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(outcome.message)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "trigger": _trigger,
        "status": _status,
        "report": _report,
        "retry-failed": _retry_failed,
        "cancel": _cancel,
    }
    if args.command in commands:
        return int(commands[args.command](args))
    if args.command == "bulk-change" and args.bulk_command == "create":
        return _create(args)
    if args.command == "bulk-change" and args.bulk_command == "sample":
        from telegence_activation.intake import write_sample_csv

        write_sample_csv(args.out, args.count, seed=args.seed, static_ip_every=args.static_ip_every)
        print(args.out)
        return 0
    if args.command == "db":
        from telegence_activation.db.connection import activation_db_uri, stop_embedded
        from telegence_activation.db.migrate import migrate

        if args.db_command == "stop":
            stop_embedded()
            return 0
        uri = activation_db_uri()
        if args.db_command == "migrate":
            applied = migrate(uri)
            print(f"applied: {', '.join(map(str, applied)) or 'nothing (up to date)'}")
        else:
            print(_redacted(uri))
        return 0
    raise AssertionError(f"unhandled command {args}")  # argparse guarantees one of the above


if __name__ == "__main__":
    sys.exit(main())
