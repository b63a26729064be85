"""The aiohttp application: the Telegence contract endpoints, fault injection and the admin API."""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import os
import secrets
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from .checks import MAX_ITEMS, is_mdn, parse_activation
from .clock import Clock
from .faults import FaultEngine, TokenBucket, echo_secret_body, malformed_body
from .scenario import Scenario, ScenarioError, load_scenario, scenario_errors, scenario_from_mapping
from .state import Carrier

log = logging.getLogger("telegence_simulator")

ACTIVATION_PATH = "/sp/mobility/serviceactivation/api/v1/service"
LINECONFIG_PATH = "/sp/mobility/lineconfig/api/v1/service"
STATICIP_PATH = "/sp/mobility/staticip/api/v1"
MAX_IP_QUANTITY = 1000
MAX_BODY_BYTES = 32 * 1024 * 1024
FREEZE_EVERY_DEVICES = 2000
ADMIN_TOKEN_HEADER = "X-Admin-Token"
ADMIN_TOKEN_ENV = "TELEGENCE_SIMULATOR_ADMIN_TOKEN"

Handler = Callable[[web.Request, "AccountRuntime"], Awaitable[web.Response]]
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


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=_dumps(obj), content_type="application/json", headers=headers)


def _bad_request(message: str, errors: list[str]) -> web.Response:
    shown = errors[:25]
    more = f"; ... and {len(errors) - 25} more" if len(errors) > 25 else ""
    return _json(400, {"message": message, "errorDescription": "; ".join(shown) + more})


def _echo_secret(response: web.Response, secret: str) -> None:
    """Apply an ``echo_secret`` fault: put the caller's app-secret into the JSON answer."""
    body = response.body
    if isinstance(body, bytes):
        echoed = echo_secret_body(response.status, body, secret)
        if echoed is not None:
            response.body = echoed


@dataclass(slots=True)
class AccountRuntime:
    """An account as the server checks it (secret kept as bytes, never logged)."""

    app_id: str
    secret: bytes
    write_enabled: bool
    bucket: TokenBucket | None


class Counters:
    """Calls per endpoint and status, 429s sent and faults injected."""

    def __init__(self) -> None:
        self.calls: dict[str, dict[str, int]] = {}
        self.throttled = 0
        self.throttled_by_account: dict[str, int] = {}
        self.faults: dict[str, dict[str, int]] = {}

    def call(self, endpoint: str, status: int | str) -> None:
        """Count one answered (or dropped) call."""
        by_status = self.calls.setdefault(endpoint, {})
        key = str(status)
        by_status[key] = by_status.get(key, 0) + 1

    def fault(self, endpoint: str, kinds: tuple[str, ...]) -> None:
        """Count injected faults."""
        by_kind = self.faults.setdefault(endpoint, {})
        for kind in kinds:
            by_kind[kind] = by_kind.get(kind, 0) + 1

    def throttle(self, app_id: str) -> None:
        """Count one 429."""
        self.throttled += 1
        self.throttled_by_account[app_id] = self.throttled_by_account.get(app_id, 0) + 1


def _drop(request: web.Request) -> None:
    """Close the client connection without sending a response."""
    transport = request.transport
    if transport is not None:
        transport.close()


class Simulator:
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

    # ------------------------------------------------------------------ contract plumbing
    async def _refuse(
        self, request: web.Request, endpoint: str, secret: str | None, response: web.Response
    ) -> web.Response:
        """Count a 401/429/403 answered before the fault rules; only ``echo_secret`` rules apply."""
        self.counters.call(endpoint, response.status)
        faults = self.faults
        if secret is not None and faults.echoes(endpoint):
            body = await request.read() if faults.needs_body(endpoint) else None
            if faults.echo(endpoint, body):
                self.counters.fault(endpoint, ("echo_secret",))
                _echo_secret(response, secret)
        return response

    def _contract(
        self, endpoint: str, write: bool, handler: Handler
    ) -> Callable[[web.Request], Awaitable[Any]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            counters = self.counters
            headers = request.headers
            app_id = headers.get("app-id")
            secret = headers.get("app-secret")
            account = self.accounts.get(app_id) if app_id else None
            if not app_id or secret is None:
                return await self._refuse(
                    request,
                    endpoint,
                    secret,
                    _json(401, {"message": "Unauthorized: missing app-id or app-secret header"}),
                )
            if account is None or not hmac.compare_digest(secret.encode(), account.secret):
                return await self._refuse(
                    request,
                    endpoint,
                    secret,
                    _json(401, {"message": "Unauthorized: invalid app-id or app-secret"}),
                )
            bucket = account.bucket
            if bucket is not None:
                retry_after = bucket.take()
                if retry_after is not None:
                    counters.throttle(account.app_id)
                    return await self._refuse(
                        request,
                        endpoint,
                        secret,
                        _json(
                            429,
                            {"message": f"Too many requests: rate limit of {bucket.rate:g} calls/s exceeded"},
                            headers={"Retry-After": str(retry_after)},
                        ),
                    )
            if write and not account.write_enabled:
                return await self._refuse(
                    request,
                    endpoint,
                    secret,
                    _json(403, {"message": "Forbidden: write access is disabled for this account"}),
                )
            body = await request.read() if self.faults.needs_body(endpoint) else None
            plan = self.faults.plan(endpoint, body)
            if plan is None:
                response = await handler(request, account)
                counters.call(endpoint, response.status)
                return response
            counters.fault(endpoint, plan.fired)
            if plan.latency:
                await asyncio.sleep(plan.latency)
            if plan.action == "error":
                counters.call(endpoint, plan.status)
                response = _json(plan.status, {"message": f"Simulated upstream error {plan.status}"})
                if plan.echo_secret:
                    _echo_secret(response, secret)
                return response
            if plan.action == "timeout":
                await asyncio.sleep(plan.hold)
                counters.call(endpoint, 504)
                response = _json(504, {"message": "Gateway Timeout"})
                if plan.echo_secret:
                    _echo_secret(response, secret)
                return response
            if plan.action == "drop":
                counters.call(endpoint, "dropped")
                _drop(request)
                return web.Response(status=204)
            response = await handler(request, account)
            if plan.malformed is not None and 200 <= response.status < 300:
                original = response.body if isinstance(response.body, bytes) else b""
                body, content_type = malformed_body(plan.malformed, original)
                response = web.Response(status=response.status, body=body, content_type=content_type)
            if plan.echo_secret:
                _echo_secret(response, secret)
            if plan.lost == "drop":
                counters.call(endpoint, "dropped")
                _drop(request)
                return response
            if plan.lost == "delay":
                await asyncio.sleep(plan.lost_hold)
            counters.call(endpoint, response.status)
            return response

        return wrapped

    @staticmethod
    async def _read_json(request: web.Request) -> tuple[Any, web.Response | None]:
        raw = await request.read()
        try:
            return json.loads(raw), None
        except ValueError as exc:
            return None, _json(
                400, {"message": "Request body is not valid JSON", "errorDescription": str(exc)}
            )

    # ------------------------------------------------------------------ contract endpoints
    async def activate(self, request: web.Request, account: AccountRuntime) -> web.Response:
        """POST activation: validate all items, refuse duplicates, record one request."""
        body, error = await self._read_json(request)
        if error is not None:
            return error
        items, errors = parse_activation(body, MAX_ITEMS)
        if errors:
            return _bad_request("Invalid activation request; nothing was activated", errors)
        carrier = self.carrier
        duplicates = carrier.find_duplicates(items)
        if duplicates:
            return _json(
                409,
                {
                    "message": f"{len(duplicates)} SIM(s) already have a pending or active service; "
                    "nothing was activated",
                    "duplicates": duplicates,
                },
            )
        accepted = carrier.activate(items, account.app_id)
        self._maybe_freeze()
        return web.Response(
            status=202, body=carrier.encode_request(accepted, refresh=False), content_type="application/json"
        )

    async def activation_status(self, request: web.Request, account: AccountRuntime) -> web.Response:
        """GET activation status of one request (one poll)."""
        request_id = request.match_info["request_id"]
        body = self.carrier.poll_request(request_id)
        if body is None:
            return _json(404, {"message": f"Activation request {request_id} not found"})
        return web.Response(status=200, body=body, content_type="application/json")

    async def service_details(self, request: web.Request, account: AccountRuntime) -> web.Response:
        """GET line details by subscriber number."""
        mdn = request.match_info["mdn"]
        carrier = self.carrier
        device = carrier.line(mdn)
        if device is None or carrier.outcomes.first("service_details_404", device) is not None:
            return _json(404, {"message": f"Service {mdn} not found"})
        return _json(200, carrier.service_details(device))

    async def service_update(self, request: web.Request, account: AccountRuntime) -> web.Response:
        """PATCH a line: only removeOfferingCode characteristics are supported."""
        mdn = request.match_info["mdn"]
        body, error = await self._read_json(request)
        if error is not None:
            return error
        errors: list[str] = []
        codes: list[str] = []
        chars = body.get("serviceCharacteristic") if isinstance(body, dict) else None
        if not isinstance(chars, list) or not chars:
            errors.append("serviceCharacteristic must be a non-empty array")
        else:
            for index, char in enumerate(chars):
                if not isinstance(char, dict) or char.get("name") != "removeOfferingCode":
                    errors.append(
                        f"serviceCharacteristic {index}: only name 'removeOfferingCode' is supported"
                    )
                elif not isinstance(char.get("value"), str) or not char["value"]:
                    errors.append(f"serviceCharacteristic {index}: value must be a non-empty string")
                else:
                    codes.append(char["value"])
        if not isinstance(body, dict) or not isinstance(body.get("effectiveDate"), str):
            errors.append("effectiveDate is required (string, may be empty)")
        if errors:
            return _bad_request("Invalid service update", errors)
        device = self.carrier.line(mdn)
        if device is None:
            return _json(404, {"message": f"Service {mdn} not found"})
        removed = self.carrier.remove_offering_codes(device, codes)
        return _json(
            200,
            {"message": "Service update accepted", "subscriberNumber": mdn, "removedOfferingCodes": removed},
        )

    async def ip_reserve(self, request: web.Request, account: AccountRuntime) -> web.Response:
        """POST reserve static IP addresses from a PDP pool."""
        body, error = await self._read_json(request)
        if error is not None:
            return error
        pdp = body.get("pdpName") if isinstance(body, dict) else None
        quantity = body.get("ipQuantity") if isinstance(body, dict) else None
        if not isinstance(pdp, str) or not pdp:
            return _bad_request("Invalid IP reservation request", ["pdpName is required (non-empty string)"])
        if (
            not isinstance(quantity, int)
            or isinstance(quantity, bool)
            or not 1 <= quantity <= MAX_IP_QUANTITY
        ):
            return _bad_request(
                "Invalid IP reservation request", [f"ipQuantity must be an integer 1..{MAX_IP_QUANTITY}"]
            )
        addresses = self.carrier.reserve_ips(pdp, quantity)
        if addresses is None:
            return _bad_request("Unknown PDP name", [f"no static IP pool is configured for pdpName {pdp!r}"])
        if len(addresses) == quantity:
            message = f"Reserved {quantity} IP address(es) from {pdp}"
        elif addresses:
            message = f"Pool {pdp} is short of addresses: reserved {len(addresses)} of {quantity} requested"
        else:
            message = f"Pool {pdp} has no addresses available"
        return _json(200, {"ipAddressRecords": [{"ipAddress": a} for a in addresses], "message": message})

    async def ip_provision(self, request: web.Request, account: AccountRuntime) -> web.Response:
        """POST a static IP provisioning batch."""
        body, error = await self._read_json(request)
        if error is not None:
            return error
        batch_id, errors = self.carrier.provision(body, account.app_id)
        if batch_id is None:
            return _bad_request("Invalid static IP provisioning request; nothing was submitted", errors)
        return _json(
            202, {"message": f"Your request has been received and is being processed. batch-id: {batch_id}"}
        )

    async def ip_status(self, request: web.Request, account: AccountRuntime) -> web.Response:
        """GET provisioning status by ``batch-id`` or ``subscriber-number`` header."""
        batch_id = request.headers.get("batch-id")
        mdn = request.headers.get("subscriber-number")
        if batch_id:
            try:
                uuid.UUID(batch_id)
            except ValueError:
                return _bad_request("Invalid batch-id", [f"batch-id {batch_id!r} is not a UUID"])
            reply = self.carrier.ip_status_by_batch(batch_id)
            if reply is None:
                return _json(404, {"message": f"Batch {batch_id} not found"})
            return _json(200, reply)
        if mdn:
            if not is_mdn(mdn):
                return _bad_request("Invalid subscriber-number", ["subscriber-number must be 10 digits"])
            reply = self.carrier.ip_status_by_subscriber(mdn)
            if reply is None:
                return _json(404, {"message": f"No static IP provisioning found for subscriber {mdn}"})
            return _json(200, reply)
        return _bad_request("Missing header", ["send a batch-id or a subscriber-number header"])

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
                return _json(401, {"message": "admin token required"})
            if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected):
                return _json(403, {"message": "invalid admin token"})
            return await handler(request)

        return guarded

    async def admin_health(self, request: web.Request) -> web.Response:
        """Liveness plus a tiny summary; open (no token) so health checks and probes need no secret."""
        return _json(
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
        return _json(200, {"seed": self.seed, "scenario": self.scenario.public_dict()})

    async def admin_load_scenario(self, request: web.Request) -> web.Response:
        """Load a scenario from the JSON body or ``?name=``; ``?keep_state=1`` keeps devices."""
        query = request.query
        keep_state = query.get("keep_state", "0").lower() in ("1", "true", "yes")
        seed_text = query.get("seed")
        try:
            seed = int(seed_text) if seed_text not in (None, "") else None
        except ValueError:
            return _json(400, {"message": "seed must be an integer", "errors": [f"seed={seed_text!r}"]})
        try:
            name = query.get("name")
            if name:
                scenario = load_scenario(name)
            else:
                raw = await request.read()
                try:
                    data = json.loads(raw) if raw.strip() else {}
                except ValueError as exc:
                    return _json(400, {"message": "Scenario body is not valid JSON", "errors": [str(exc)]})
                scenario = scenario_from_mapping(data, "admin scenario")
        except ScenarioError as exc:
            return _json(400, {"message": str(exc).splitlines()[0], "errors": scenario_errors(exc)})
        self.load(scenario, seed=seed, keep_state=keep_state)
        return _json(200, {"loaded": scenario.name, "seed": self.seed, "keepState": keep_state})

    async def admin_reset(self, request: web.Request) -> web.Response:
        """Forget all state and counters."""
        self.reset()
        return _json(200, {"reset": True, "scenario": self.scenario.name, "seed": self.seed})

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
        return _json(200, body)

    async def admin_device(self, request: web.Request) -> web.Response:
        """State of one device by ICCID (latest attempt plus earlier attempts)."""
        iccid = request.match_info["iccid"]
        device = self.carrier.devices.get(iccid)
        if device is None:
            return _json(404, {"message": f"ICCID {iccid} was never activated"})
        return _json(200, self.carrier.device_view(device))

    async def admin_line(self, request: web.Request) -> web.Response:
        """State of one device by subscriber number (MDN)."""
        mdn = request.match_info["mdn"]
        device = self.carrier.lines.get(mdn)
        if device is None:
            return _json(404, {"message": f"no line with subscriber number {mdn}"})
        return _json(200, self.carrier.device_view(device))

    async def admin_request(self, request: web.Request) -> web.Response:
        """An activation request with its device ICCIDs (does not count as a poll)."""
        request_id = request.match_info["request_id"]
        accepted = self.carrier.requests.get(request_id)
        if accepted is None:
            return _json(404, {"message": f"activation request {request_id} not found"})
        body = json.loads(self.carrier.encode_request(accepted))
        return _json(
            200,
            {"id": accepted.id, "appId": accepted.app_id, "polls": accepted.polls, "services": body},
        )

    async def admin_state(self, request: web.Request) -> web.Response:
        """Summary of the whole carrier state."""
        return _json(200, self.carrier.summary())

    async def admin_pools(self, request: web.Request) -> web.Response:
        """Static IP pools with every handed-out address."""
        return _json(200, {name: pool.view() for name, pool in self.carrier.pools.items()})

    async def admin_batch(self, request: web.Request) -> web.Response:
        """A provisioning batch, including subscribers hidden by missing_from_ip_status."""
        batch = self.carrier.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _json(404, {"message": "batch not found"})
        now = self.clock.now()
        for entry in batch.entries:
            self.carrier.refresh_entry(entry, now)
        return _json(
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
                return _json(400, {"message": f"invalid clock request: {exc}"})
            if scale is not None:
                self.clock.set_time_scale(float(scale))
            if advance:
                self.clock.advance(advance)
        return _json(200, {"now": self.clock.now(), "timeScale": self.clock.time_scale})

    async def admin_complete(self, request: web.Request) -> web.Response:
        """Decide every open activation and provisioning entry now."""
        return _json(200, self.carrier.complete_all())

    # ------------------------------------------------------------------ app
    def build_app(self) -> web.Application:
        """The aiohttp application with contract and admin routes."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        c = self._contract
        app.router.add_post(ACTIVATION_PATH, c("activate", True, self.activate))
        app.router.add_get(
            ACTIVATION_PATH + "/{request_id}", c("activation_status", False, self.activation_status)
        )
        app.router.add_get(LINECONFIG_PATH + "/{mdn}", c("service_details", False, self.service_details))
        app.router.add_patch(LINECONFIG_PATH + "/{mdn}", c("service_update", True, self.service_update))
        app.router.add_post(STATICIP_PATH + "/ipaddresses", c("ip_reserve", True, self.ip_reserve))
        app.router.add_post(STATICIP_PATH + "/provisioning", c("ip_provision", True, self.ip_provision))
        app.router.add_get(STATICIP_PATH + "/provisioning/status", c("ip_status", False, self.ip_status))
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
