"""The Telegence contract: the carrier API routes, behind app-id/app-secret, rate limits and faults.

Each route is wrapped once (at start) by :meth:`ContractApi._contract`, which checks the account,
takes a rate-limit token, applies the scenario's fault plan and counts the call; the handlers
below then validate the request and answer from :class:`~telegence_simulator.state.Carrier`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .checks import MAX_ITEMS, is_mdn, parse_activation
from .counters import Counters
from .faults import FaultEngine, TokenBucket, malformed_body
from .replies import apply_echo_secret, bad_request, drop_connection, json_reply
from .state import Carrier

ACTIVATION_PATH = "/sp/mobility/serviceactivation/api/v1/service"
LINECONFIG_PATH = "/sp/mobility/lineconfig/api/v1/service"
STATICIP_PATH = "/sp/mobility/staticip/api/v1"
MAX_IP_QUANTITY = 1000

Handler = Callable[[web.Request, "AccountRuntime"], Awaitable[web.Response]]


@dataclass(slots=True)
class AccountRuntime:
    """An account as the server checks it (secret kept as bytes, never logged)."""

    app_id: str
    secret: bytes
    write_enabled: bool
    bucket: TokenBucket | None


class ContractApi:
    """The contract's routes; a base of :class:`~telegence_simulator.server.Simulator`, which holds the state."""

    carrier: Carrier
    counters: Counters
    accounts: dict[str, AccountRuntime]
    faults: FaultEngine

    if TYPE_CHECKING:

        def _maybe_freeze(self) -> None: ...

    def add_contract_routes(self, app: web.Application) -> None:
        """Register the contract's routes (each wrapped by :meth:`_contract`)."""
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
                apply_echo_secret(response, secret)
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
                    json_reply(401, {"message": "Unauthorized: missing app-id or app-secret header"}),
                )
            if account is None or not hmac.compare_digest(secret.encode(), account.secret):
                return await self._refuse(
                    request,
                    endpoint,
                    secret,
                    json_reply(401, {"message": "Unauthorized: invalid app-id or app-secret"}),
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
                        json_reply(
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
                    json_reply(403, {"message": "Forbidden: write access is disabled for this account"}),
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
                response = json_reply(plan.status, {"message": f"Simulated upstream error {plan.status}"})
                if plan.echo_secret:
                    apply_echo_secret(response, secret)
                return response
            if plan.action == "timeout":
                await asyncio.sleep(plan.hold)
                counters.call(endpoint, 504)
                response = json_reply(504, {"message": "Gateway Timeout"})
                if plan.echo_secret:
                    apply_echo_secret(response, secret)
                return response
            if plan.action == "drop":
                counters.call(endpoint, "dropped")
                drop_connection(request)
                return web.Response(status=204)
            response = await handler(request, account)
            if plan.malformed is not None and 200 <= response.status < 300:
                original = response.body if isinstance(response.body, bytes) else b""
                body, content_type = malformed_body(plan.malformed, original)
                response = web.Response(status=response.status, body=body, content_type=content_type)
            if plan.echo_secret:
                apply_echo_secret(response, secret)
            if plan.lost == "drop":
                counters.call(endpoint, "dropped")
                drop_connection(request)
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
            return None, json_reply(
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
            return bad_request("Invalid activation request; nothing was activated", errors)
        carrier = self.carrier
        duplicates = carrier.find_duplicates(items)
        if duplicates:
            return json_reply(
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
            return json_reply(404, {"message": f"Activation request {request_id} not found"})
        return web.Response(status=200, body=body, content_type="application/json")

    async def service_details(self, request: web.Request, account: AccountRuntime) -> web.Response:
        """GET line details by subscriber number."""
        mdn = request.match_info["mdn"]
        carrier = self.carrier
        device = carrier.line(mdn)
        if device is None or carrier.outcomes.first("service_details_404", device) is not None:
            return json_reply(404, {"message": f"Service {mdn} not found"})
        return json_reply(200, carrier.service_details(device))

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
            return bad_request("Invalid service update", errors)
        device = self.carrier.line(mdn)
        if device is None:
            return json_reply(404, {"message": f"Service {mdn} not found"})
        removed = self.carrier.remove_offering_codes(device, codes)
        return json_reply(
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
            return bad_request("Invalid IP reservation request", ["pdpName is required (non-empty string)"])
        if (
            not isinstance(quantity, int)
            or isinstance(quantity, bool)
            or not 1 <= quantity <= MAX_IP_QUANTITY
        ):
            return bad_request(
                "Invalid IP reservation request", [f"ipQuantity must be an integer 1..{MAX_IP_QUANTITY}"]
            )
        addresses = self.carrier.reserve_ips(pdp, quantity)
        if addresses is None:
            return bad_request("Unknown PDP name", [f"no static IP pool is configured for pdpName {pdp!r}"])
        if len(addresses) == quantity:
            message = f"Reserved {quantity} IP address(es) from {pdp}"
        elif addresses:
            message = f"Pool {pdp} is short of addresses: reserved {len(addresses)} of {quantity} requested"
        else:
            message = f"Pool {pdp} has no addresses available"
        return json_reply(
            200, {"ipAddressRecords": [{"ipAddress": a} for a in addresses], "message": message}
        )

    async def ip_provision(self, request: web.Request, account: AccountRuntime) -> web.Response:
        """POST a static IP provisioning batch."""
        body, error = await self._read_json(request)
        if error is not None:
            return error
        batch_id, errors = self.carrier.provision(body, account.app_id)
        if batch_id is None:
            return bad_request("Invalid static IP provisioning request; nothing was submitted", errors)
        return json_reply(
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
                return bad_request("Invalid batch-id", [f"batch-id {batch_id!r} is not a UUID"])
            reply = self.carrier.ip_status_by_batch(batch_id)
            if reply is None:
                return json_reply(404, {"message": f"Batch {batch_id} not found"})
            return json_reply(200, reply)
        if mdn:
            if not is_mdn(mdn):
                return bad_request("Invalid subscriber-number", ["subscriber-number must be 10 digits"])
            reply = self.carrier.ip_status_by_subscriber(mdn)
            if reply is None:
                return json_reply(404, {"message": f"No static IP provisioning found for subscriber {mdn}"})
            return json_reply(200, reply)
        return bad_request("Missing header", ["send a batch-id or a subscriber-number header"])
