"""The simulator's admin API (``/_admin/*``): scenario, reset, counters, state, clock, completion.

Every route except ``/_admin/health`` needs the ``X-Admin-Token`` header (compared in constant time,
never logged or echoed): 401 without it, 403 with a wrong one.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .clock import Clock
from .counters import Counters
from .replies import json_reply
from .scenario import Scenario, ScenarioError, load_scenario, scenario_errors, scenario_from_mapping
from .state import Carrier

ADMIN_TOKEN_HEADER = "X-Admin-Token"
ADMIN_TOKEN_ENV = "TELEGENCE_SIMULATOR_ADMIN_TOKEN"

AdminHandler = Callable[[web.Request], Awaitable[web.Response]]


def new_admin_token() -> str:
    """A fresh random admin token (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


def admin_token_problem(token: str) -> str | None:
    """Why ``token`` cannot be an admin token (None when it can): it must be sent as a header value."""
    if not token:
        return "the admin token must not be empty"
    if not all(33 <= ord(ch) <= 126 for ch in token):
        return "the admin token must be printable ASCII without spaces"
    return None


class AdminApi:
    """The admin routes; a base of :class:`~telegence_simulator.server.Simulator`, which holds the state."""

    _admin_token: bytes
    scenario: Scenario
    seed: int
    clock: Clock
    carrier: Carrier
    counters: Counters

    if TYPE_CHECKING:

        def load(self, scenario: Scenario, seed: int | None = None, keep_state: bool = False) -> None: ...

        def reset(self) -> None: ...

    def add_admin_routes(self, app: web.Application) -> None:
        """Register the admin routes (all but health guarded by :meth:`_admin`)."""
        a = self._admin
        app.router.add_get("/_admin/health", self.admin_health)  # open: liveness only
        app.router.add_get("/_admin/scenario", a(self.admin_get_scenario))
        app.router.add_post("/_admin/scenario", a(self.admin_load_scenario))
        app.router.add_post("/_admin/reset", a(self.admin_reset))
        app.router.add_get("/_admin/counters", a(self.admin_counters))
        app.router.add_get("/_admin/devices/{iccid}", a(self.admin_device))
        app.router.add_get("/_admin/lines/{mdn}", a(self.admin_line))
        app.router.add_get("/_admin/requests/{request_id}", a(self.admin_request))
        app.router.add_get("/_admin/state", a(self.admin_state))
        app.router.add_get("/_admin/ip-pools", a(self.admin_pools))
        app.router.add_get("/_admin/ip-batches/{batch_id}", a(self.admin_batch))
        app.router.add_get("/_admin/clock", a(self.admin_clock))
        app.router.add_post("/_admin/clock", a(self.admin_clock))
        app.router.add_post("/_admin/complete", a(self.admin_complete))

    # ------------------------------------------------------------------ admin API
    @property
    def admin_token(self) -> str:
        """The token the admin API expects in the ``X-Admin-Token`` header."""
        return self._admin_token.decode()

    def _admin(self, handler: AdminHandler) -> AdminHandler:
        """Guard an admin handler: 401 without ``X-Admin-Token``, 403 with a wrong one.

        The header is compared in constant time and never logged or echoed.
        """
        expected = self._admin_token

        async def guarded(request: web.Request) -> web.Response:
            given = request.headers.get(ADMIN_TOKEN_HEADER)
            if not given:
                return json_reply(401, {"message": "admin token required"})
            if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected):
                return json_reply(403, {"message": "invalid admin token"})
            return await handler(request)

        return guarded

    async def admin_health(self, request: web.Request) -> web.Response:
        """Liveness plus a tiny summary; open (no token) so health checks and probes need no secret."""
        return json_reply(
            200,
            {
                "status": "ok",
                "pid": os.getpid(),
                "scenario": self.scenario.name,
                "seed": self.seed,
                "timeScale": self.clock.time_scale,
                "devices": len(self.carrier.devices),
            },
        )

    async def admin_get_scenario(self, request: web.Request) -> web.Response:
        """The current scenario (secrets masked)."""
        return json_reply(200, {"seed": self.seed, "scenario": self.scenario.public_dict()})

    async def admin_load_scenario(self, request: web.Request) -> web.Response:
        """Load a scenario from the JSON body or ``?name=``; ``?keep_state=1`` keeps devices."""
        query = request.query
        keep_state = query.get("keep_state", "0").lower() in ("1", "true", "yes")
        seed_text = query.get("seed")
        try:
            seed = int(seed_text) if seed_text not in (None, "") else None
        except ValueError:
            return json_reply(400, {"message": "seed must be an integer", "errors": [f"seed={seed_text!r}"]})
        try:
            name = query.get("name")
            if name:
                scenario = load_scenario(name)
            else:
                raw = await request.read()
                try:
                    data = json.loads(raw) if raw.strip() else {}
                except ValueError as exc:
                    return json_reply(
                        400, {"message": "Scenario body is not valid JSON", "errors": [str(exc)]}
                    )
                scenario = scenario_from_mapping(data, "admin scenario")
        except ScenarioError as exc:
            return json_reply(400, {"message": str(exc).splitlines()[0], "errors": scenario_errors(exc)})
        self.load(scenario, seed=seed, keep_state=keep_state)
        return json_reply(200, {"loaded": scenario.name, "seed": self.seed, "keepState": keep_state})

    async def admin_reset(self, request: web.Request) -> web.Response:
        """Forget all state and counters."""
        self.reset()
        return json_reply(200, {"reset": True, "scenario": self.scenario.name, "seed": self.seed})

    async def admin_counters(self, request: web.Request) -> web.Response:
        """Calls per endpoint/status, activations per ICCID, 429s and faults."""
        counters = self.counters
        per_iccid = self.carrier.activations_per_iccid()
        include = request.query.get("iccids", "1").lower() not in ("0", "false", "no")
        body: dict[str, Any] = {
            "calls": counters.calls,
            "throttled": counters.throttled,
            "throttledByAccount": counters.throttled_by_account,
            "faults": counters.faults,
            "iccidsActivated": len(per_iccid),
            "activationsTotal": sum(per_iccid.values()),
            "iccidsActivatedMoreThanOnce": sorted(i for i, n in per_iccid.items() if n > 1),
        }
        if include:
            body["activationsPerIccid"] = per_iccid
        return json_reply(200, body)

    async def admin_device(self, request: web.Request) -> web.Response:
        """State of one device by ICCID (latest attempt plus earlier attempts)."""
        iccid = request.match_info["iccid"]
        device = self.carrier.devices.get(iccid)
        if device is None:
            return json_reply(404, {"message": f"ICCID {iccid} was never activated"})
        return json_reply(200, self.carrier.device_view(device))

    async def admin_line(self, request: web.Request) -> web.Response:
        """State of one device by subscriber number (MDN)."""
        mdn = request.match_info["mdn"]
        device = self.carrier.lines.get(mdn)
        if device is None:
            return json_reply(404, {"message": f"no line with subscriber number {mdn}"})
        return json_reply(200, self.carrier.device_view(device))

    async def admin_request(self, request: web.Request) -> web.Response:
        """An activation request with its device ICCIDs (does not count as a poll)."""
        request_id = request.match_info["request_id"]
        accepted = self.carrier.requests.get(request_id)
        if accepted is None:
            return json_reply(404, {"message": f"activation request {request_id} not found"})
        body = json.loads(self.carrier.encode_request(accepted))
        return json_reply(
            200,
            {"id": accepted.id, "appId": accepted.app_id, "polls": accepted.polls, "services": body},
        )

    async def admin_state(self, request: web.Request) -> web.Response:
        """Summary of the whole carrier state."""
        return json_reply(200, self.carrier.summary())

    async def admin_pools(self, request: web.Request) -> web.Response:
        """Static IP pools with every handed-out address."""
        return json_reply(200, {name: pool.view() for name, pool in self.carrier.pools.items()})

    async def admin_batch(self, request: web.Request) -> web.Response:
        """A provisioning batch, including subscribers hidden by missing_from_ip_status."""
        batch = self.carrier.batches.get(request.match_info["batch_id"])
        if batch is None:
            return json_reply(404, {"message": "batch not found"})
        now = self.clock.now()
        for entry in batch.entries:
            self.carrier.refresh_entry(entry, now)
        return json_reply(
            200,
            {
                "batchId": batch.id,
                "appId": batch.app_id,
                "entries": [self.carrier.render_entry(e) for e in batch.entries],
            },
        )

    async def admin_clock(self, request: web.Request) -> web.Response:
        """GET the simulated clock; POST ``{"advance": s, "time_scale": f}`` to move or speed it."""
        if request.method == "POST":
            raw = await request.read()
            try:
                data = json.loads(raw) if raw.strip() else {}
                advance = float(data.get("advance", 0))
                scale = data.get("time_scale")
                if advance < 0 or (scale is not None and float(scale) <= 0):
                    raise ValueError("advance must be >= 0 and time_scale > 0")
            except (ValueError, TypeError, AttributeError) as exc:
                return json_reply(400, {"message": f"invalid clock request: {exc}"})
            if scale is not None:
                self.clock.set_time_scale(float(scale))
            if advance:
                self.clock.advance(advance)
        return json_reply(200, {"now": self.clock.now(), "timeScale": self.clock.time_scale})

    async def admin_complete(self, request: web.Request) -> web.Response:
        """Decide every open activation and provisioning entry now."""
        return json_reply(200, self.carrier.complete_all())
