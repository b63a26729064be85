"""The commands of ``python -m telegence_activation`` (parsing lives in ``cli.py``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from telegence_activation.domain.intake import IntakeOptions

# `status` prints the failure reasons with the most devices, this many.
STATUS_REASONS = 20


def redacted(uri: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def create(args: argparse.Namespace) -> int:
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


def trigger(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    import psycopg

    from telegence_activation import actions
    from telegence_activation.api_client import AirflowApiError
    from telegence_activation.db.connection import activation_db_uri

    conf: dict[str, Any] = {}
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
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") if args.dry_run else None
    try:
        with psycopg.connect(activation_db_uri()) as conn:
            outcome = actions.trigger(
                conn, _client(args), args.bulk_change_id, conf=conf, dry_run_stamp=stamp
            )
    except actions.ActionRefused as refused:
        print(f"error: {refused}", file=sys.stderr)
        return 1
    except AirflowApiError as exc:
        print(f"error: trigger refused: {exc}", file=sys.stderr)
        return 1
    print(outcome.message, file=sys.stderr)
    print(outcome.details["run"])
    return 0


def status(args: argparse.Namespace) -> int:
    import psycopg

    from telegence_activation import repository as repo
    from telegence_activation.db.connection import activation_db_uri

    with psycopg.connect(activation_db_uri()) as conn:
        bulk_change = _bulk_change_or_exit(conn, args.bulk_change_id)
        rows = repo.status_step_counts(conn, args.bulk_change_id)
        failures = repo.failure_reasons(conn, args.bulk_change_id, limit=STATUS_REASONS + 1)
    total = sum(n for _, _, n in rows)
    print(f"bulk change {bulk_change['id']}: {bulk_change['status']} ({total} devices)")
    if bulk_change["status_details"]:
        print(f"  {bulk_change['status_details']}")
    for status, step, count in rows:
        print(f"  {status:<11} {step:<24} {count:>8}")
    if failures:
        print("failures by reason:")
        for status, reason, count in failures[:STATUS_REASONS]:
            print(f"  {count:>8}  {status}: {reason}")
        if len(failures) > STATUS_REASONS:
            print(f"  … more reasons: see 'report {args.bulk_change_id}' (the CSV has every device)")
    return 0


def report(args: argparse.Namespace) -> int:
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


def retry_failed(args: argparse.Namespace) -> int:
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


def cancel(args: argparse.Namespace) -> int:
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
