"""Throughput of the Telegence simulator: bounded load over loopback, figures on stdout.

    PYTHONPATH=include .venv/bin/python bench/simulator_throughput.py [--calls 500] [--items 200]

Phase 1 sends ``--calls`` activation POSTs of ``--items`` fresh, valid devices each (bodies are
pre-encoded so the client spends its CPU on HTTP only); phase 2 sends ``--status-calls`` status
GETs of those requests. Prints calls/s, items/s, p50/p99 latency, the simulator's RSS and its
CPU use (a simulator using well under 100% of one core is not the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import aiohttp
import psutil

from telegence_activation.domain.identifiers import luhn_check_digit as luhn_digit

ACTIVATE = "/sp/mobility/serviceactivation/api/v1/service"
HEADERS = {"app-id": "demo-app-id", "app-secret": "demo-app-secret", "Content-Type": "application/json"}


def make_body(start: int, items: int) -> bytes:
    """One activation POST body with ``items`` unique devices numbered from ``start``."""
    out = []
    for n in range(start, start + items):
        iccid = f"8901410{n:012d}"
        imei = f"35{n:012d}"
        out.append(
            {
                "billingAccount": {"id": "287301234567"},
                "relatedParty": [
                    {
                        "role": "subscriber",
                        "firstName": "Ada",
                        "lastName": "Lovelace",
                        "address": {
                            "streetNumber": "1",
                            "streetName": "Main",
                            "city": "Dallas",
                            "state": "TX",
                            "zipCode": "75201",
                        },
                    }
                ],
                "service": {
                    "serviceSpecification": {"id": "12", "href": "Mobility Services"},
                    "serviceQualification": {"id": ""},
                    "serviceCharacteristic": [
                        {"name": "singleUserCode", "value": "IOTPLAN1"},
                        {"name": "serviceZipCode", "value": "75201"},
                        {"name": "equipmentType", "value": "G"},
                        {"name": "deviceTechnologyType", "value": "UMTS"},
                        {"name": "IMEI", "value": imei + luhn_digit(imei)},
                        {"name": "sim", "value": iccid + luhn_digit(iccid)},
                        {"name": "offeringCode1", "value": "SOC1"},
                    ],
                },
            }
        )
    return json.dumps(out).encode()


def pct(values: list[float], q: float) -> float:
    """Percentile ``q`` (0..100) of ``values`` in milliseconds."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index] * 1000


async def run_phase(
    session: aiohttp.ClientSession,
    requests_: list[tuple[str, str, bytes | None]],
    concurrency: int,
    expect: int,
    rate: float = 0.0,
) -> tuple[float, list[float], list[bytes], int]:
    """Send all requests with ``concurrency`` workers, paced at ``rate`` calls/s if > 0.

    Returns (wall seconds, latencies, bodies, errors).
    """
    latencies: list[float] = []
    bodies: list[bytes] = [b""] * len(requests_)
    errors = 0
    position = 0

    async def worker() -> None:
        nonlocal position, errors
        while position < len(requests_):
            index = position
            position += 1
            method, url, body = requests_[index]
            if rate > 0:
                delay = t0 + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            started = time.perf_counter()
            async with session.request(method, url, data=body, headers=HEADERS) as response:
                payload = await response.read()
                if response.status != expect:
                    errors += 1
            latencies.append(time.perf_counter() - started)
            bodies[index] = payload

    t0 = started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, bodies, errors


async def bench(args: argparse.Namespace, base_url: str, pid: int | None) -> dict[str, Any]:
    """Run both phases and collect the figures."""
    print(f"preparing {args.calls} bodies of {args.items} items ...", file=sys.stderr)
    bodies = [make_body(args.offset + c * args.items, args.items) for c in range(args.calls)]
    proc = psutil.Process(pid) if pid else None
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:
        cpu0 = sum(proc.cpu_times()[:2]) if proc else 0.0
        wall, lat, replies, errors = await run_phase(
            session, [("POST", ACTIVATE, b) for b in bodies], args.concurrency, 202, args.rate
        )
        cpu1 = sum(proc.cpu_times()[:2]) if proc else 0.0
        ids = [json.loads(r)[0]["id"] for r in replies if r.startswith(b"[")]
        status_reqs: list[tuple[str, str, bytes | None]] = [
            ("GET", f"{ACTIVATE}/{ids[i % len(ids)]}", None) for i in range(args.status_calls)
        ]
        s_wall, s_lat, _, s_errors = await run_phase(session, status_reqs, args.concurrency, 200)
        cpu2 = sum(proc.cpu_times()[:2]) if proc else 0.0
    rss = proc.memory_info().rss if proc else 0
    return {
        "activation": {
            "calls": args.calls,
            "paced_at": args.rate or None,
            "items_per_call": args.items,
            "errors": errors,
            "seconds": round(wall, 3),
            "calls_per_s": round(args.calls / wall, 1),
            "items_per_s": round(args.calls * args.items / wall),
            "p50_ms": round(pct(lat, 50), 2),
            "p99_ms": round(pct(lat, 99), 2),
            "server_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1) if proc else None,
            "body_kib": round(len(bodies[0]) / 1024, 1),
        },
        "status": {
            "calls": args.status_calls,
            "errors": s_errors,
            "seconds": round(s_wall, 3),
            "calls_per_s": round(args.status_calls / s_wall, 1),
            "items_per_s": round(args.status_calls * args.items / s_wall),
            "p50_ms": round(pct(s_lat, 50), 2),
            "p99_ms": round(pct(s_lat, 99), 2),
            "server_cpu_pct": round(100 * (cpu2 - cpu1) / s_wall, 1) if proc else None,
        },
        "devices_in_state": args.calls * args.items,
        "server_rss_mib": round(rss / 2**20, 1) if proc else None,
    }


def main() -> int:
    """Parse arguments, start (or reuse) a simulator, run the bench, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=500, help="activation POSTs (default 500)")
    parser.add_argument("--items", type=int, default=200, help="devices per POST (default 200)")
    parser.add_argument("--status-calls", type=int, default=1000, help="status GETs (default 1000)")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel connections (default 8)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="pace POSTs at this many calls/s (0: flat out)"
    )
    parser.add_argument("--offset", type=int, default=0, help="first device number (ICCID sequence)")
    parser.add_argument("--url", default=None, help="use a running loopback simulator (it is reset first)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args()
    if args.url and not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        parser.error("--url must be a loopback address")

    sys.path.insert(0, "include")
    from telegence_simulator.launcher import AdminClient, start_simulator

    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run

    if args.url:
        admin = AdminClient(args.url)
        admin.reset()
        pid = int(admin.health()["pid"])
        figures = run(bench(args, args.url, pid))
    else:
        with start_simulator("happy", seed=1) as sim:
            figures = run(bench(args, sim.base_url, sim.pid))
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    a, s = figures["activation"], figures["status"]
    pace = f", paced at {a['paced_at']:g} calls/s" if a["paced_at"] else ", flat out"
    print(
        f"activation POST: {a['calls']} calls x {a['items_per_call']} items ({a['body_kib']} KiB)"
        f" in {a['seconds']} s{pace}, {args.concurrency} connections"
    )
    print(
        f"  {a['calls_per_s']} calls/s, {a['items_per_s']} items/s, p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms,"
    )
    print(f"  errors {a['errors']}, simulator CPU {a['server_cpu_pct']}% of one core")
    print(f"status GET:      {s['calls']} calls in {s['seconds']} s")
    print(
        f"  {s['calls_per_s']} calls/s, {s['items_per_s']} items/s, p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms,"
    )
    print(f"  errors {s['errors']}, simulator CPU {s['server_cpu_pct']}% of one core")
    print(f"simulator RSS with {figures['devices_in_state']} devices: {figures['server_rss_mib']} MiB")
    print(f"median per call: {statistics.median([a['p50_ms'], s['p50_ms']]):.2f} ms (both phases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
