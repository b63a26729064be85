"""How fast the Bulk changes page answers for a 100,000-device bulk change (issue 12).

    .venv/bin/python bench/ui_page.py [--devices 100000] [--repeat 15] [--json FILE]

On the live stack (the real api-server with the package's plugin, over loopback HTTP, signed in
with a bearer token like a script would be; the browser's cookie goes through the same code), with a
database of its own on the activation database's server: a bulk change of ``--devices`` devices in
the middle of its run (60 % PROCESSED, 2 % ERROR over five reasons, 1 % API_FAILED, the rest
PENDING, an audit row per device, step timings) and, for comparison, one of 100 devices in the same
state. Each page is asked for ``--repeat`` times after one warm-up; the figures are the median and
the slowest (wall time of the whole answer, body included; each request opens its own database
connection, as the page does), right after the writes and again after a VACUUM (what autovacuum
soon leaves: the counts then read the index alone). Also printed: the plan PostgreSQL picks for a deep keyset page.
Nothing is asserted: the figures are printed (and written as JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import requests

from telegence_activation import repository as repo
from telegence_activation.api_client import run_id_for
from telegence_activation.db.connection import (
    activation_db_uri,
    configured_connection,
    embedded_running,
    stop_embedded,
)
from telegence_activation.domain.intake import IntakeOptions
from telegence_activation.intake import BulkChangeSpec, ingest_csv, write_sample_csv
from telegence_local.stack import LiveStack, StackConfig

REASONS = (
    "activation rejected by the carrier: SIM is blocked",
    "activation rejected by the carrier: rate plan not allowed",
    "activation not confirmed by the carrier before the deadline",
    "static IP not requested: 12 device(s) failed activation",
    "IP provisioning failed: profileUpdate=Failed",
)


def make_bulk_change(uri: str, workdir: Path, devices: int) -> int:
    """A bulk change of ``devices`` sample devices, put in the middle of its run."""
    path = write_sample_csv(workdir / f"ui-bench-{devices}.csv", devices, static_ip_every=4)
    bc = ingest_csv(
        uri, path, BulkChangeSpec(1, IntakeOptions("BAN-BENCH"), customer_name="Bench Fleet")
    ).bulk_change_id
    with psycopg.connect(uri) as conn:
        conn.execute(
            """UPDATE activation.bulk_change SET status = 'PROCESSING', dag_run_id = %s,
                      processing_started_at = now() - interval '3 minutes' WHERE id = %s""",
            (run_id_for(bc), bc),
        )
        conn.execute(
            """UPDATE activation.device_change d
                  SET status = CASE WHEN r < 0.60 THEN 'PROCESSED' WHEN r < 0.62 THEN 'ERROR'
                                    WHEN r < 0.63 THEN 'API_FAILED' ELSE 'PENDING' END,
                      step = CASE WHEN r < 0.60 THEN 'Done' ELSE 'WaitForActivation' END,
                      status_details = CASE WHEN r >= 0.60 AND r < 0.62 THEN (%(reasons)s::text[])[1 + (id %% 5)]
                                            WHEN r >= 0.62 AND r < 0.63 THEN 'carrier unavailable: HTTP 503 after 5 attempt(s)'
                                       END,
                      subscriber_number = CASE WHEN r < 0.60 THEN lpad((5550000000 + id %% 9999999)::text, 10, '0') END
                 FROM (SELECT id AS did, random() AS r FROM activation.device_change WHERE bulk_change_id = %(bc)s) x
                WHERE d.id = x.did""",
            {"bc": bc, "reasons": list(REASONS)},
        )
        conn.execute(
            """INSERT INTO activation.device_change_log (bulk_change_id, device_change_id, step, description,
                      request_text, response_text, response_status, has_errors, error_text, processed_by)
               SELECT bulk_change_id, id, 'ActivateDevice', 'Telegence New Service Activation', '{}', '{}',
                      'PENDING', false, NULL, 'bench'
                 FROM activation.device_change WHERE bulk_change_id = %s""",
            (bc,),
        )
        for step in ("ActivateDevice", "WaitForActivation"):
            repo.start_step(conn, bc, step)
        repo.finish_step(conn, bc, "ActivateDevice")
        conn.commit()
        conn.execute("ANALYZE activation.device_change")
        conn.execute("ANALYZE activation.device_change_log")
        conn.commit()
    return bc


def timed(session: requests.Session, url: str, repeat: int) -> dict[str, float]:
    first = session.get(url, timeout=60)
    first.raise_for_status()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        answer = session.get(url, timeout=60)
        answer.raise_for_status()
        times.append(time.perf_counter() - start)
    return {
        "median_ms": round(statistics.median(times) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
        "bytes": len(answer.content),
    }


def keyset_plan(uri: str, bc: int, after_id: int) -> list[str]:
    with psycopg.connect(uri) as conn:
        rows = conn.execute(
            """EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON)
               SELECT id FROM activation.device_change WHERE bulk_change_id = %s AND id > %s ORDER BY id LIMIT 51""",
            (bc, after_id),
        ).fetchall()
    return [r[0] for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="telegence-ui-bench-"))
    started_embedded = configured_connection() is None and not embedded_running()
    server_uri = activation_db_uri()  # the activation_db connection's server, else the embedded one
    suffix = secrets.token_hex(3)
    stack = LiveStack(
        StackConfig(
            home=workdir / "airflow",
            scenario="happy",
            db_server_uri=server_uri,
            activation_database=f"bench_ui_{suffix}",
            airflow_database=f"bench_ui_airflow_{suffix}",
        )
    )
    try:
        started = time.monotonic()
        stack.start()
        print(f"[ui-bench] stack up in {time.monotonic() - started:.0f} s", flush=True)
        started = time.monotonic()
        small = make_bulk_change(stack.activation_db_uri, workdir, 100)
        big = make_bulk_change(stack.activation_db_uri, workdir, args.devices)
        print(
            f"[ui-bench] bulk changes of 100 and {args.devices:,} devices in {time.monotonic() - started:.0f} s",
            flush=True,
        )
        with psycopg.connect(stack.activation_db_uri) as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM activation.device_change WHERE bulk_change_id = %s ORDER BY id", (big,)
                )
            ]
            iccid = conn.execute(
                "SELECT iccid FROM activation.device_change WHERE id = %s", (ids[len(ids) // 2],)
            ).fetchone()[0]
        token = requests.post(
            f"{stack.api_url}/auth/token", json={"username": "admin", "password": stack.password}, timeout=60
        ).json()["access_token"]
        session = requests.Session()
        session.headers.update({"Authorization": f"Bearer {token}", "Accept": "text/html"})
        base = f"{stack.api_url}/telegence"
        pages = {
            f"detail, {args.devices:,} devices (first page of devices)": f"{base}/bulk-changes/{big}",
            f"detail, {args.devices:,} devices (last page, keyset)": f"{base}/bulk-changes/{big}?after={ids[-40]}",
            f"detail, {args.devices:,} devices (search by ICCID)": f"{base}/bulk-changes/{big}?q={iccid}",
            f"refresh of the detail, {args.devices:,} devices": f"{base}/bulk-changes/{big}/_live",
            "list (both bulk changes)": f"{base}/bulk-changes",
            "detail, 100 devices (first page)": f"{base}/bulk-changes/{small}",
        }
        results: dict[str, Any] = {"devices": args.devices, "repeat": args.repeat, "pages": {}}
        width = max(len(name) for name in pages)
        for state in ("just written", "after VACUUM"):
            if state == "after VACUUM":
                # What autovacuum leaves soon after a big write (its threshold: 20 % of the rows
                # changed): the visibility map lets the counts read the index alone.
                with psycopg.connect(stack.activation_db_uri, autocommit=True) as conn:
                    conn.execute("VACUUM (ANALYZE) activation.device_change")
            print(f"\n[{state}]\n{'page':<{width}}  median ms  slowest ms  bytes")
            for name, url in pages.items():
                figures = timed(session, url, args.repeat)
                results["pages"].setdefault(state, {})[name] = figures
                print(
                    f"{name:<{width}}  {figures['median_ms']:>9}  {figures['max_ms']:>10}  {figures['bytes']:>6}",
                    flush=True,
                )
        results["keyset_plan"] = keyset_plan(stack.activation_db_uri, big, ids[-40])
        print("\nplan of the last keyset page:\n  " + "\n  ".join(results["keyset_plan"]))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        stack.stop()
        with psycopg.connect(server_uri, autocommit=True) as conn:
            for database in (stack.config.activation_database, stack.config.airflow_database):
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if started_embedded:  # leave the machine as we found it
            stop_embedded()
    return 0


if __name__ == "__main__":
    sys.exit(main())
