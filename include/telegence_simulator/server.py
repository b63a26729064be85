"""The aiohttp application: the simulated carrier, its app wiring and the server loop.

The routes live by concern: :mod:`.contract` (the Telegence API, behind app-id/app-secret, rate
limits and faults) and :mod:`.admin_api` (``/_admin/*``, behind ``X-Admin-Token``). Both are bases
of :class:`Simulator`, the one object holding the scenario, state, faults and counters.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from .admin_api import ADMIN_TOKEN_ENV, ADMIN_TOKEN_HEADER, AdminApi, admin_token_problem, new_admin_token
from .clock import Clock
from .contract import AccountRuntime, ContractApi
from .counters import Counters
from .faults import FaultEngine, TokenBucket
from .scenario import Scenario
from .state import Carrier

__all__ = [
    "ADMIN_TOKEN_ENV",
    "ADMIN_TOKEN_HEADER",
    "Simulator",
    "admin_token_problem",
    "new_admin_token",
    "serve",
]

log = logging.getLogger("telegence_simulator")

MAX_BODY_BYTES = 32 * 1024 * 1024
FREEZE_EVERY_DEVICES = 2000


class Simulator(ContractApi, AdminApi):
    """The simulated carrier: scenario, state, faults, counters and the HTTP routes."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int | None = None,
        time_scale: float = 1.0,
        *,
        admin_token: str | None = None,
    ) -> None:
        problem = admin_token_problem(admin_token) if admin_token is not None else None
        if problem is not None:
            raise ValueError(problem)
        # the admin API (/_admin/*, except health) needs this token in the X-Admin-Token header;
        # None generates one. Kept as bytes for hmac.compare_digest and never logged.
        self._admin_token = (admin_token if admin_token is not None else new_admin_token()).encode()
        self.default_seed = seed if seed is not None else (scenario.seed or 0)
        self.clock = Clock(time_scale)
        self.scenario = scenario
        self.seed = self.default_seed
        self.carrier = Carrier(scenario, self.seed, self.clock)
        self.counters = Counters()
        self.accounts: dict[str, AccountRuntime] = {}
        self.faults = FaultEngine([], 0)
        self._frozen_devices = 0
        self.load(scenario, seed=self.default_seed, keep_state=False)

    # ------------------------------------------------------------------ lifecycle
    def load(self, scenario: Scenario, seed: int | None = None, keep_state: bool = False) -> None:
        """Install a scenario; without ``keep_state`` all devices, pools and counters are reset."""
        if seed is None:
            seed = scenario.seed if scenario.seed is not None else self.default_seed
        self.scenario = scenario
        self.seed = seed
        accounts = {}
        for account in scenario.effective_accounts():
            limit = account.rate_limit or scenario.rate_limit
            accounts[account.app_id] = AccountRuntime(
                app_id=account.app_id,
                secret=account.app_secret.get_secret_value().encode(),
                write_enabled=account.write_enabled,
                bucket=TokenBucket(limit) if limit is not None else None,
            )
        self.accounts = accounts
        self.faults = FaultEngine(scenario.faults, seed)
        if keep_state:
            self.carrier.configure(scenario, seed)
        else:
            self.carrier = Carrier(scenario, seed, self.clock)
            self.counters = Counters()
            # the old state sits in the permanent generation (see _maybe_freeze): release it
            gc.unfreeze()
            gc.collect()
            self._frozen_devices = 0
        log.info(
            "scenario %r loaded (seed=%s, keep_state=%s, accounts=%s)",
            scenario.name,
            seed,
            keep_state,
            sorted(accounts),
        )

    def reset(self) -> None:
        """Forget all state and counters; keep the current scenario and seed."""
        self.load(self.scenario, seed=self.seed, keep_state=False)

    def _maybe_freeze(self) -> None:
        """Move long-lived device state out of the garbage collector's sight.

        A full collection over 100k devices costs ~80 ms; freezing every couple of thousand new
        devices keeps collections small. Frozen objects are released on reset/load.
        """
        count = len(self.carrier.devices)
        if count - self._frozen_devices >= FREEZE_EVERY_DEVICES:
            gc.freeze()
            self._frozen_devices = count

    # ------------------------------------------------------------------ app
    def build_app(self) -> web.Application:
        """The aiohttp application with contract and admin routes."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.add_contract_routes(app)
        self.add_admin_routes(app)
        return app


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """Stop the server when the launching process goes away (no leaked simulators)."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("parent process %s is gone; shutting down", parent_pid)
            stop.set()
            return
        await asyncio.sleep(0.25)


async def serve(
    simulator: Simulator,
    host: str = "127.0.0.1",
    port: int = 8089,
    port_file: str | None = None,
    parent_pid: int | None = None,
    access_log: bool = False,
    announce_admin_token: bool = False,
) -> None:
    """Run the HTTP server until SIGTERM/SIGINT (or the parent process dies).

    ``announce_admin_token`` prints the admin token once on stderr after the server is listening
    (for a generated token, so that a person running the simulator by hand can use the admin API).
    """
    app = simulator.build_app()
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        shutdown_timeout=0.5,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    bound = runner.addresses[0]
    actual_port = int(bound[1])
    log.info("Telegence simulator listening on http://%s:%s (pid %s)", host, actual_port, os.getpid())
    if announce_admin_token:
        # printed once, never through logging and never per request
        print(
            f"Telegence simulator on http://{host}:{actual_port}: admin token: {simulator.admin_token} "
            f"(send it as {ADMIN_TOKEN_HEADER} on /_admin/*; choose one with --admin-token or {ADMIN_TOKEN_ENV})",
            file=sys.stderr,
            flush=True,
        )
    if port_file:
        tmp = Path(port_file + ".tmp")
        tmp.write_text(str(actual_port), encoding="utf-8")
        tmp.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch_parent(parent_pid, stop)) if parent_pid else None
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await runner.cleanup()
        log.info("Telegence simulator stopped")
