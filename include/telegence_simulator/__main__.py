"""Command line: ``python -m telegence_simulator --port 8089 [--scenario happy]``.

The admin API (``/_admin/*`` except ``/_admin/health``) needs the ``X-Admin-Token`` header. The token
comes from ``--admin-token``, else the ``TELEGENCE_SIMULATOR_ADMIN_TOKEN`` environment variable
(preferred: it does not show in ``ps``), else a random one is generated and printed once on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from .scenario import ScenarioError, builtin_names, load_scenario
from .server import ADMIN_TOKEN_ENV, Simulator, admin_token_problem, serve


def build_parser() -> argparse.ArgumentParser:
    """The CLI argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m telegence_simulator",
        description="HTTP simulator of AT&T's Telegence mobility API (activation and static IP).",
    )
    parser.add_argument("--port", type=int, default=8089, help="TCP port; 0 picks a free one (default 8089)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, loopback only)")
    parser.add_argument(
        "--scenario",
        default="happy",
        help=f"built-in scenario name ({', '.join(builtin_names())}) or a YAML/JSON file (default happy)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (overrides the scenario's seed)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="simulated seconds per real second for carrier-side progress (default 1.0)",
    )
    parser.add_argument("--port-file", default=None, help="write the bound port to this file once listening")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this parent process dies")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument("--access-log", action="store_true", help="log every request (slower)")
    parser.add_argument(
        "--admin-token",
        default=None,
        help=(
            "token the admin API (/_admin/*) requires in the X-Admin-Token header; default: the "
            f"{ADMIN_TOKEN_ENV} environment variable (preferred: a command line shows in ps), "
            "else a random token printed once at start"
        ),
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.time_scale <= 0:
        print("--time-scale must be > 0", file=sys.stderr)
        return 2
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    admin_token: str | None = args.admin_token
    if admin_token is None:
        admin_token = os.environ.get(ADMIN_TOKEN_ENV) or None  # empty counts as unset
    if admin_token is not None:
        problem = admin_token_problem(admin_token)
        if problem is not None:
            print(f"invalid admin token: {problem}", file=sys.stderr)
            return 2
    generated = admin_token is None
    simulator = Simulator(scenario, seed=args.seed, time_scale=args.time_scale, admin_token=admin_token)
    gc.collect()
    gc.freeze()  # imports and configuration never need collecting
    runner: Callable[..., Any] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is optional
        pass
    try:
        runner(
            serve(
                simulator,
                host=args.host,
                port=args.port,
                port_file=args.port_file,
                parent_pid=args.parent_pid,
                access_log=args.access_log,
                announce_admin_token=generated,
            )
        )
    except OSError as exc:
        print(f"cannot start simulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
