"""The carrier's state: activation requests, lines, static IP pools and provisioning batches.

State moves lazily: a device's status is recomputed only when something looks at it (a status
poll, a duplicate check, an admin read), from the simulated clock or the number of polls. That
keeps 100k devices cheap: nothing runs in the background.

Split by concern, one object at run time: :mod:`.activation_state` (activation requests, device
attempts, duplicates, lines, offering codes) and :mod:`.static_ip_state` (PDP pools, reservations,
provisioning) are the halves :class:`Carrier` inherits; here are its construction, the scenario it
applies and the admin views. The clock is :mod:`.clock`, the scripted outcomes :mod:`.outcomes`.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from .activation_state import OPEN_STATUSES, ActivationRequest, Device
from .clock import Clock
from .outcomes import Outcomes
from .scenario import Scenario
from .static_ip_state import Batch, IpEntry, Pool, StaticIpState

__all__ = ["ActivationRequest", "Batch", "Carrier", "Clock", "Device", "IpEntry", "Pool"]


class Carrier(StaticIpState):
    """All carrier-side state plus the rules (from the scenario) that move it forward."""

    def __init__(self, scenario: Scenario, seed: int, clock: Clock) -> None:
        self.clock = clock
        self.devices: dict[str, Device] = {}
        self.lines: dict[str, Device] = {}
        self.requests: dict[str, ActivationRequest] = {}
        self.open_requests: dict[str, ActivationRequest] = {}
        self.pools: dict[str, Pool] = {}
        self.batches: dict[str, Batch] = {}
        self.ip_by_subscriber: dict[str, IpEntry] = {}
        self.open_entries: dict[int, IpEntry] = {}
        self.sequence = 0
        self.seed = seed
        self.rng = random.Random(seed)
        self.configure(scenario, seed)

    # ---------------------------------------------------------------- configuration
    def configure(self, scenario: Scenario, seed: int) -> None:
        """Apply a (new) scenario, keeping existing state; pools are merged by PDP name and CIDR."""
        self.scenario = scenario
        self.seed = seed
        self.act = scenario.activation
        self.ipp = scenario.ip_provisioning
        self.outcomes = Outcomes(scenario.outcomes)
        self.mdn_start = scenario.mdn_start
        outside = ipaddress.ip_network(scenario.outside_range_cidr, strict=False)
        self.outside_first = int(outside.network_address) + (1 if outside.num_addresses > 2 else 0)
        self.outside_count = max(1, outside.num_addresses - (2 if outside.num_addresses > 2 else 0))
        for config in scenario.ip_pools:
            existing = self.pools.get(config.pdp_name)
            if existing is not None and existing.cidr == config.cidr:
                fresh = Pool(config)
                existing.capacity = max(existing.next, fresh.capacity)
            else:
                self.pools[config.pdp_name] = Pool(config)

    # ---------------------------------------------------------------- admin
    def complete_all(self) -> dict[str, int]:
        """Decide every open activation and provisioning entry now (ignores stay_pending)."""
        now = self.clock.now()
        activations = 0
        for request in list(self.open_requests.values()):
            for device in request.devices:
                if device.status in OPEN_STATUSES:
                    self.refresh(device, now, force=True)
                    activations += 1
        entries = 0
        for entry in list(self.open_entries.values()):
            self.refresh_entry(entry, now, force=True)
            entries += 1
        return {"activations_completed": activations, "ip_entries_completed": entries}

    def device_view(self, device: Device, history: bool = True) -> dict[str, Any]:
        """Admin view of one device attempt (refreshed first)."""
        self.refresh(device, self.clock.now())
        entry = device.ip_entry
        if entry is not None:
            self.refresh_entry(entry, self.clock.now())
        view: dict[str, Any] = {
            "iccid": device.iccid,
            "imei": device.imei,
            "billingAccount": device.ban,
            "status": device.status,
            "subscriberNumber": device.mdn,
            "error": device.error,
            "requestId": device.request.id,
            "accountAppId": device.request.app_id,
            "activationIndex": device.index,
            "attempt": device.attempt,
            "characteristics": [{"name": n, "value": v} for n, v in device.chars]
            + [{"name": "IMEI", "value": device.imei}, {"name": "sim", "value": device.iccid}],
            "removedOfferingCodes": list(device.removed or ()),
            "staticIp": device.static_ip,
            "ipProvisioning": self.render_entry(entry) if entry is not None else None,
        }
        if history:
            previous = []
            earlier = device.previous
            while earlier is not None:
                previous.append(self.device_view(earlier, history=False))
                earlier = earlier.previous
            view["previousAttempts"] = previous
        return view

    def summary(self) -> dict[str, Any]:
        """Counts of devices by status, lines, requests, batches and pools."""
        now = self.clock.now()
        by_status: dict[str, int] = {}
        for device in self.devices.values():
            self.refresh(device, now)
            by_status[device.status] = by_status.get(device.status, 0) + 1
        return {
            "devices": len(self.devices),
            "devicesByStatus": by_status,
            "lines": len(self.lines),
            "activationRequests": len(self.requests),
            "openActivationRequests": len(self.open_requests),
            "ipBatches": len(self.batches),
            "openIpEntries": len(self.open_entries),
            "ipPools": {
                name: {"capacity": p.capacity, "handedOut": p.next, "remaining": p.capacity - p.next}
                for name, p in self.pools.items()
            },
        }

    def activations_per_iccid(self) -> dict[str, int]:
        """How many times each ICCID was accepted into an activation request."""
        return {iccid: device.attempt for iccid, device in self.devices.items()}
