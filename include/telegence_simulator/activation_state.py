"""Carrier state, activation side: activation requests, device attempts, lines and offering codes.

State moves lazily: a device's status is recomputed only when something looks at it (a status
poll, a duplicate check, an admin read), from the simulated clock or the number of polls. That
keeps 100k devices cheap: nothing runs in the background.
"""

from __future__ import annotations

import json
import random
import uuid
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .checks import ParsedItem
from .outcomes import Outcomes, attempt_fraction
from .scenario import ActivationProgress

if TYPE_CHECKING:
    from .clock import Clock
    from .static_ip_state import IpEntry

DEFAULT_REJECT_ERROR = "Activation rejected by carrier: SIM is not eligible for activation (simulated)"
OPEN_STATUSES = frozenset({"pending", "reserved"})

_json_str = lru_cache(maxsize=4096)(json.dumps)

_DEVICE_TEMPLATE = (
    '{"id":"%s","interactionStatus":"%s","billingAccount":{"id":%s},'
    '"service":{"status":"%s","subscriberNumber":%s,"error":%s,'
    '"serviceCharacteristic":[{"name":"sim","value":"%s"},{"name":"IMEI","value":"%s"}]}}'
)


class ActivationRequest:
    """One accepted activation POST."""

    __slots__ = ("accepted_at", "app_id", "devices", "id", "open", "polls")

    def __init__(self, request_id: str, accepted_at: float, app_id: str) -> None:
        self.id = request_id
        self.accepted_at = accepted_at
        self.app_id = app_id
        self.devices: list[Device] = []
        self.open = 0
        self.polls = 0


class Device:
    """One activation attempt of one ICCID (``previous`` links to the earlier attempt)."""

    __slots__ = (
        "attempt",
        "ban",
        "chars",
        "error",
        "iccid",
        "imei",
        "index",
        "ip_entry",
        "jitter",
        "mdn",
        "previous",
        "removed",
        "request",
        "static_ip",
        "status",
    )

    def __init__(
        self,
        item: ParsedItem,
        request: ActivationRequest,
        index: int,
        previous: Device | None,
    ) -> None:
        self.iccid, self.imei, self.ban, self.chars = item
        self.request = request
        self.index = index
        self.previous = previous
        self.attempt: int = previous.attempt + 1 if previous is not None else 1
        self.status = "pending"
        self.mdn: str | None = None
        self.error: str | None = None
        self.removed: list[str] | None = None
        self.static_ip: str | None = None
        self.ip_entry: IpEntry | None = None
        self.jitter = 0.0


class ActivationState:
    """The activation half of :class:`~telegence_simulator.state.Carrier` (its state is set there)."""

    clock: Clock
    seed: int
    rng: random.Random
    act: ActivationProgress
    outcomes: Outcomes
    mdn_start: int
    sequence: int
    devices: dict[str, Device]
    lines: dict[str, Device]
    requests: dict[str, ActivationRequest]
    open_requests: dict[str, ActivationRequest]

    def new_uuid(self) -> str:
        """A UUID4 drawn from the seeded generator (deterministic under a seed)."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # ---------------------------------------------------------------- activation
    def refresh(self, device: Device, now: float, force: bool = False) -> None:
        """Move a device forward to where the clock / poll count says it should be."""
        if device.status not in OPEN_STATUSES:
            return
        if not force:
            if self.outcomes.by_kind.get("stay_pending") and self.outcomes.first("stay_pending", device):
                device.status = "pending"
                return
            act = self.act
            if act.unit == "seconds":
                elapsed = now - device.request.accepted_at - device.jitter
            else:
                elapsed = device.request.polls - device.jitter
            if elapsed < act.done_after:
                if elapsed >= act.reserved_after:
                    device.status = "reserved"
                return
        reject = self.outcomes.first("reject_activation", device)
        if reject is not None:
            device.status = "rejected"
            device.error = reject.error or DEFAULT_REJECT_ERROR
        else:
            device.status = "active"
            device.mdn = str(self.mdn_start + device.index)
            self.lines[device.mdn] = device
        request = device.request
        request.open -= 1
        if request.open <= 0:
            self.open_requests.pop(request.id, None)

    def find_duplicates(self, items: list[ParsedItem]) -> list[dict[str, str]]:
        """ICCIDs of ``items`` that are already pending, reserved or active."""
        devices = self.devices
        now = self.clock.now()
        dups = []
        for item in items:
            existing = devices.get(item[0])
            if existing is None:
                continue
            self.refresh(existing, now)
            if existing.status != "rejected":
                dups.append({"sim": item[0], "existingRequestId": existing.request.id})
        return dups

    def activate(self, items: list[ParsedItem], app_id: str) -> ActivationRequest:
        """Record an accepted activation request (duplicates must be checked first)."""
        request = ActivationRequest(self.new_uuid(), self.clock.now(), app_id)
        devices = self.devices
        jitter = self.act.jitter
        polls = self.act.unit == "polls"
        sequence = self.sequence
        members = request.devices
        for item in items:
            sequence += 1
            device = Device(item, request, sequence, devices.get(item[0]))
            if jitter:
                fraction = attempt_fraction(self.seed, device.iccid, device.attempt, "act")
                device.jitter = float(int(fraction * (jitter + 1))) if polls else fraction * jitter
            devices[item[0]] = device
            members.append(device)
        self.sequence = sequence
        request.open = len(members)
        self.requests[request.id] = request
        self.open_requests[request.id] = request
        return request

    def encode_request(self, request: ActivationRequest, refresh: bool = True) -> bytes:
        """The activation array (POST answer and status GET) as JSON bytes."""
        if refresh and request.open:
            now = self.clock.now()
            for device in request.devices:
                self.refresh(device, now)
        interaction = "pending" if request.open else "completed"
        rid = request.id
        parts = [
            _DEVICE_TEMPLATE
            % (
                rid,
                interaction,
                _json_str(d.ban),
                d.status,
                "null" if d.mdn is None else '"' + d.mdn + '"',
                "null" if d.error is None else _json_str(d.error),
                d.iccid,
                d.imei,
            )
            for d in request.devices
        ]
        return ("[" + ",".join(parts) + "]").encode()

    def poll_request(self, request_id: str) -> bytes | None:
        """Answer an activation status GET (counts as one poll); None for an unknown id."""
        request = self.requests.get(request_id)
        if request is None:
            return None
        request.polls += 1
        return self.encode_request(request)

    def line(self, mdn: str) -> Device | None:
        """The active line with this subscriber number, if any."""
        device = self.lines.get(mdn)
        if device is None or device.status != "active":
            return None
        return device

    def service_details(self, device: Device) -> dict[str, Any]:
        """The lineconfig GET body for an active line."""
        removed = set(device.removed or ())
        chars = [
            {"name": name, "value": value}
            for name, value in device.chars
            if not (name.startswith("offeringCode") and value in removed)
        ]
        chars += [{"name": "IMEI", "value": device.imei}, {"name": "sim", "value": device.iccid}]
        return {
            "subscriberNumber": device.mdn,
            "status": device.status,
            "billingAccount": {"id": device.ban},
            "activationRequestId": device.request.id,
            "sim": device.iccid,
            "IMEI": device.imei,
            "serviceCharacteristic": chars,
            "removedOfferingCodes": list(device.removed or ()),
            "staticIpAddress": device.static_ip,
        }

    def remove_offering_codes(self, device: Device, codes: list[str]) -> list[str]:
        """Record removed offering codes on a line (idempotent); returns all removed so far."""
        if device.removed is None:
            device.removed = []
        for code in codes:
            if code not in device.removed:
                device.removed.append(code)
        return list(device.removed)
