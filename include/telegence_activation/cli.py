"""Command-line entry point: ``python -m telegence_activation ...`` (or ``telegence-activation``).

Commands::

    bulk-change create --csv FILE --service-provider N --billing-account BAN [...]
    bulk-change create --sample N --service-provider N --billing-account BAN [...]
    bulk-change sample N --out FILE
    db migrate | db uri | db stop
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
