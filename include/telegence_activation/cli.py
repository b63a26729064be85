"""Command-line entry point: ``python -m telegence_activation ...`` (or ``telegence-activation``).

Commands::

    bulk-change create --csv FILE --service-provider N --billing-account BAN [...]
    bulk-change create --sample N --service-provider N --billing-account BAN [...]
    bulk-change sample N --out FILE
    trigger BULK_CHANGE_ID [--on-activation-failure stop|continue] [--batch-size N] [...]
    status BULK_CHANGE_ID
    report BULK_CHANGE_ID [--format json|csv]
    trigger BULK_CHANGE_ID --dry-run | --approval-over N
    retry-failed BULK_CHANGE_ID [--all | --class CLASS ...]
    cancel BULK_CHANGE_ID --reason TEXT
    db migrate | db uri | db stop

The run commands talk to Airflow's REST API: ``--api-url`` (env ``TELEGENCE_AIRFLOW_API_URL``,
default http://127.0.0.1:8080), ``--username`` (``TELEGENCE_AIRFLOW_USERNAME``, default admin) and
``--password`` (``TELEGENCE_AIRFLOW_PASSWORD``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from telegence_activation import cli_commands as cmd


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "trigger": cmd.trigger,
        "status": cmd.status,
        "report": cmd.report,
        "retry-failed": cmd.retry_failed,
        "cancel": cmd.cancel,
    }
    if args.command in commands:
        return int(commands[args.command](args))
    if args.command == "bulk-change" and args.bulk_command == "create":
        return cmd.create(args)
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
            print(cmd.redacted(uri))
        return 0
    raise AssertionError(f"unhandled command {args}")  # argparse guarantees one of the above


if __name__ == "__main__":
    sys.exit(main())
