"""The carrier's state: activation requests, lines, static IP pools and provisioning batches.

State moves lazily: a device's status is recomputed only when something looks at it (a status
poll, a duplicate check, an admin read), from the simulated clock or the number of polls. That
keeps 100k devices cheap: nothing runs in the background.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
import time
import uuid
import zlib
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from .checks import ParsedItem, is_mdn
from .scenario import ActivationProgress, IpPool, IpProgress, Outcome, Scenario

DEFAULT_REJECT_ERROR = "Activation rejected by carrier: SIM is not eligible for activation (simulated)"
DEFAULT_IP_FAIL_ERROR = "Static IP provisioning failed: profile update was rejected (simulated)"
OPEN_STATUSES = frozenset({"pending", "reserved"})
IP_STAGES = ("profileCheck", "ipReservation", "profileUpdate")

_json_str = lru_cache(maxsize=4096)(json.dumps)

_DEVICE_TEMPLATE = (
    '{"id":"%s","interactionStatus":"%s","billingAccount":{"id":%s},'
    '"service":{"status":"%s","subscriberNumber":%s,"error":%s,'
    '"serviceCharacteristic":[{"name":"sim","value":"%s"},{"name":"IMEI","value":"%s"}]}}'
)


class Clock:
    """Simulated time: real monotonic seconds times ``time_scale``, plus manual advances."""

    def __init__(self, time_scale: float = 1.0) -> None:
        self._scale = time_scale
        self._base_real = time.monotonic()
        self._base_sim = 0.0

    @property
    def time_scale(self) -> float:
        """Simulated seconds per real second."""
        return self._scale

    def now(self) -> float:
        """Current simulated time in seconds since start."""
        return self._base_sim + (time.monotonic() - self._base_real) * self._scale

    def set_time_scale(self, scale: float) -> None:
        """Change the speed without jumping."""
        self._base_sim = self.now()
        self._base_real = time.monotonic()
        self._scale = scale

    def advance(self, seconds: float) -> None:
        """Jump forward by ``seconds`` of simulated time."""
        self._base_sim += seconds


def _fraction(seed: int, iccid: str, attempt: int, salt: str) -> float:
    """A deterministic number in [0, 1) for one device attempt."""
    return zlib.crc32(f"{seed}:{salt}:{iccid}:{attempt}".encode()) / 4294967296.0


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


class CompiledOutcome:
    """An :class:`Outcome` with its selectors prepared for fast matching."""

    __slots__ = ("error", "every", "iccids", "kind", "max_attempt", "offset", "regex", "stage", "suffixes")

    def __init__(self, outcome: Outcome) -> None:
        self.kind = outcome.kind
        self.error = outcome.error
        self.stage = outcome.stage
        self.iccids = frozenset(outcome.iccids)
        self.every = outcome.every
        self.offset = outcome.offset
        self.suffixes = tuple(outcome.iccid_suffix)
        self.regex = re.compile(outcome.iccid_regex) if outcome.iccid_regex else None
        self.max_attempt = outcome.max_attempt

    def matches(self, device: Device) -> bool:
        """True when the device attempt is selected by this outcome."""
        if self.max_attempt is not None and device.attempt > self.max_attempt:
            return False
        iccid = device.iccid
        if iccid in self.iccids:
            return True
        if self.every is not None and device.index % self.every == self.offset:
            return True
        if self.suffixes and iccid.endswith(self.suffixes):
            return True
        return self.regex is not None and self.regex.search(iccid) is not None


class Outcomes:
    """Scripted outcomes grouped by kind."""

    def __init__(self, outcomes: Iterable[Outcome]) -> None:
        self.by_kind: dict[str, list[CompiledOutcome]] = {}
        for outcome in outcomes:
            self.by_kind.setdefault(outcome.kind, []).append(CompiledOutcome(outcome))

    def first(self, kind: str, device: Device) -> CompiledOutcome | None:
        """The first outcome of ``kind`` that selects ``device``, if any."""
        rules = self.by_kind.get(kind)
        if not rules:
            return None
        for rule in rules:
            if rule.matches(device):
                return rule
        return None


class Address:
    """A reserved static IP address and who it is provisioned for."""

    __slots__ = ("state", "subscriber")

    def __init__(self) -> None:
        self.state = "reserved"  # reserved | provisioning | assigned
        self.subscriber: str | None = None


class Pool:
    """A finite per-PDP pool of addresses handed out in order, never twice."""

    def __init__(self, config: IpPool) -> None:
        self.pdp_name = config.pdp_name
        self.cidr = config.cidr
        network = ipaddress.ip_network(config.cidr, strict=False)
        self.network = network
        skip = 1 if (network.version == 4 and network.prefixlen < 31) else 0
        self.first = int(network.network_address) + skip
        hosts = network.num_addresses - 2 * skip
        self.capacity = hosts if config.size is None else min(hosts, config.size)
        self.next = 0
        self.addresses: dict[str, Address] = {}

    def reserve(self, quantity: int) -> list[str]:
        """Hand out up to ``quantity`` fresh addresses."""
        count = max(0, min(quantity, self.capacity - self.next))
        out = []
        for offset in range(self.next, self.next + count):
            text = str(ipaddress.ip_address(self.first + offset))
            self.addresses[text] = Address()
            out.append(text)
        self.next += count
        return out

    def view(self) -> dict[str, Any]:
        """JSON view for the admin API."""
        by_state: dict[str, int] = {}
        for address in self.addresses.values():
            by_state[address.state] = by_state.get(address.state, 0) + 1
        return {
            "pdpName": self.pdp_name,
            "cidr": self.cidr,
            "capacity": self.capacity,
            "handedOut": self.next,
            "remaining": self.capacity - self.next,
            "byState": by_state,
            "addresses": {
                ip: {"state": a.state, "subscriber": a.subscriber} for ip, a in self.addresses.items()
            },
        }


class IpEntry:
    """One subscriber inside one static IP provisioning batch."""

    __slots__ = (
        "address",
        "apn",
        "assigned",
        "ban",
        "batch_id",
        "default_apn",
        "device",
        "effective_date",
        "fail_stage",
        "final",
        "jitter",
        "lte",
        "message",
        "pdp",
        "polls",
        "stage",
        "submitted_at",
        "subscriber",
    )

    def __init__(self, batch_id: str, device: Device, fields: dict[str, str], submitted_at: float) -> None:
        self.batch_id = batch_id
        self.device = device
        self.subscriber = fields["subscriberNumber"]
        self.address = fields["ipAddress"]
        self.pdp = fields["pdpName"]
        self.ban = fields["billingAccountNumber"]
        self.lte = fields["lteIndicator"]
        self.default_apn = fields["defaultAPNIndicator"]
        self.apn = fields["accessPointName"]
        self.effective_date = fields["effectiveDate"]
        self.submitted_at = submitted_at
        self.polls = 0
        self.stage = 0
        self.final: str | None = None  # complete | failed
        self.fail_stage: str | None = None
        self.message = ""
        self.assigned: str | None = None
        self.jitter = 0.0


class Batch:
    """A static IP provisioning batch."""

    __slots__ = ("app_id", "entries", "id", "submitted_at")

    def __init__(self, batch_id: str, submitted_at: float, app_id: str) -> None:
        self.id = batch_id
        self.submitted_at = submitted_at
        self.app_id = app_id
        self.entries: list[IpEntry] = []


class Carrier:
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
        self.act: ActivationProgress = scenario.activation
        self.ipp: IpProgress = scenario.ip_provisioning
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
                fraction = _fraction(self.seed, device.iccid, device.attempt, "act")
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

    # ---------------------------------------------------------------- static IP
    def reserve_ips(self, pdp_name: str, quantity: int) -> list[str] | None:
        """Reserve up to ``quantity`` addresses; None for an unknown PDP."""
        pool = self.pools.get(pdp_name)
        if pool is None:
            return None
        return pool.reserve(quantity)

    def provision(self, body: Any, app_id: str) -> tuple[str | None, list[str]]:
        """Validate and record a provisioning batch; returns (batch id, errors)."""
        if not isinstance(body, dict):
            return None, ["the request body must be a JSON object"]
        errors: list[str] = []
        pdp = body.get("pdpName")
        ban = body.get("billingAccountNumber")
        subscribers = body.get("subscriber")
        pool = self.pools.get(pdp) if isinstance(pdp, str) else None
        if pool is None:
            errors.append(f"unknown pdpName {pdp!r}")
        if not isinstance(ban, str) or not ban:
            errors.append("billingAccountNumber is required (non-empty string)")
        if not isinstance(subscribers, list) or not subscribers:
            errors.append("subscriber must be a non-empty array")
            return None, errors
        now = self.clock.now()
        seen_mdn: set[str] = set()
        seen_ip: set[str] = set()
        accepted: list[tuple[Device, dict[str, str]]] = []
        for index, sub in enumerate(subscribers):
            where = f"subscriber {index}"
            if not isinstance(sub, dict):
                errors.append(f"{where}: must be an object")
                continue
            mdn = sub.get("subscriberNumber")
            record = sub.get("ipAddressRecord")
            ip = record.get("ipAddress") if isinstance(record, dict) else None
            fields_ok = True
            if not is_mdn(mdn):
                errors.append(f"{where}: subscriberNumber must be a 10-digit string")
                fields_ok = False
            if not isinstance(ip, str) or not ip:
                errors.append(f"{where}: ipAddressRecord.ipAddress is required")
                fields_ok = False
            for key in ("lteIndicator", "defaultAPNIndicator"):
                if sub.get(key) not in ("Y", "N"):
                    errors.append(f"{where}: {key} must be 'Y' or 'N'")
                    fields_ok = False
            if not isinstance(sub.get("accessPointName"), str) or not sub.get("accessPointName"):
                errors.append(f"{where}: accessPointName is required")
                fields_ok = False
            if not isinstance(sub.get("effectiveDate"), str):
                errors.append(f"{where}: effectiveDate is required (string)")
                fields_ok = False
            if not fields_ok:
                continue
            assert isinstance(mdn, str) and isinstance(ip, str)
            if mdn in seen_mdn:
                errors.append(f"{where}: subscriberNumber {mdn} appears more than once in this batch")
                continue
            if ip in seen_ip:
                errors.append(f"{where}: ipAddress {ip} appears more than once in this batch")
                continue
            seen_mdn.add(mdn)
            seen_ip.add(ip)
            device = self.lines.get(mdn)
            if device is not None:
                self.refresh(device, now)
            if device is None or device.status != "active":
                errors.append(f"{where}: subscriberNumber {mdn} is not an active line")
                continue
            if isinstance(ban, str) and device.ban != ban:
                errors.append(f"{where}: line {mdn} belongs to billing account {device.ban}, not {ban}")
                continue
            if pool is not None:
                address = pool.addresses.get(ip)
                if address is None:
                    errors.append(f"{where}: ipAddress {ip} was not reserved from pool {pool.pdp_name}")
                    continue
                if address.state != "reserved" and address.subscriber != mdn:
                    errors.append(f"{where}: ipAddress {ip} is already provisioned for another subscriber")
                    continue
            accepted.append(
                (
                    device,
                    {
                        "subscriberNumber": mdn,
                        "ipAddress": ip,
                        "pdpName": str(pdp),
                        "billingAccountNumber": str(ban),
                        "lteIndicator": sub["lteIndicator"],
                        "defaultAPNIndicator": sub["defaultAPNIndicator"],
                        "accessPointName": sub["accessPointName"],
                        "effectiveDate": sub["effectiveDate"],
                    },
                )
            )
        if errors or pool is None:
            return None, errors
        batch = Batch(self.new_uuid(), now, app_id)
        for device, fields in accepted:
            entry = IpEntry(batch.id, device, fields, now)
            if self.ipp.jitter:
                fraction = _fraction(self.seed, device.iccid, len(self.batches), "ip")
                jitter = self.ipp.jitter
                entry.jitter = (
                    float(int(fraction * (jitter + 1))) if self.ipp.unit == "polls" else fraction * jitter
                )
            address = pool.addresses[entry.address]
            address.state = "provisioning"
            address.subscriber = entry.subscriber
            batch.entries.append(entry)
            device.ip_entry = entry
            self.ip_by_subscriber[entry.subscriber] = entry
            self.open_entries[id(entry)] = entry
        self.batches[batch.id] = batch
        return batch.id, []

    def refresh_entry(self, entry: IpEntry, now: float, force: bool = False) -> None:
        """Move a provisioning entry forward."""
        if entry.final is not None:
            return
        ipp = self.ipp
        if not force:
            if ipp.unit == "seconds":
                elapsed = now - entry.submitted_at - entry.jitter
            else:
                elapsed = entry.polls - entry.jitter
            if elapsed < ipp.done_after:
                entry.stage = 2 if elapsed >= ipp.reserve_after else 1 if elapsed >= ipp.check_after else 0
                return
        entry.stage = 3
        device = entry.device
        pool = self.pools.get(entry.pdp)
        address = pool.addresses.get(entry.address) if pool is not None else None
        fail = self.outcomes.first("ip_provision_fail", device)
        if fail is not None:
            entry.final = "failed"
            entry.fail_stage = fail.stage
            entry.message = fail.error or DEFAULT_IP_FAIL_ERROR
            if address is not None and address.subscriber == entry.subscriber:
                address.state = "reserved"
                address.subscriber = None
        else:
            entry.final = "complete"
            outside = self.outcomes.first("ip_outside_range", device)
            if outside is not None:
                offset = device.index % self.outside_count
                entry.assigned = str(ipaddress.ip_address(self.outside_first + offset))
            else:
                entry.assigned = entry.address
            device.static_ip = entry.assigned
            if address is not None:
                address.state = "assigned"
                address.subscriber = entry.subscriber
        self.open_entries.pop(id(entry), None)

    @staticmethod
    def render_entry(entry: IpEntry) -> dict[str, Any]:
        """One element of the provisioning status array."""
        if entry.final == "complete":
            values = ["Success", "Reserved", "Complete"]
        elif entry.final == "failed":
            done = {"profileCheck": "Success", "ipReservation": "Reserved", "profileUpdate": "Complete"}
            failed_at = IP_STAGES.index(entry.fail_stage or "profileUpdate")
            values = [
                done[name] if i < failed_at else "Failed" if i == failed_at else "Not Started"
                for i, name in enumerate(IP_STAGES)
            ]
        else:
            stage = entry.stage
            values = [
                ("Success", "Reserved", "Complete")[i]
                if i < stage
                else "In Progress"
                if i == stage
                else "Pending"
                for i in range(3)
            ]
        return {
            "subscriberNumber": entry.subscriber,
            "batchId": entry.batch_id,
            "profileCheck": values[0],
            "ipReservation": values[1],
            "profileUpdate": values[2],
            "ipAddressRecord": {"ipAddress": entry.assigned or entry.address},
            "message": entry.message,
        }

    def _status_reply(self, entries: list[IpEntry]) -> list[dict[str, Any]]:
        now = self.clock.now()
        out = []
        for entry in entries:
            entry.polls += 1
            self.refresh_entry(entry, now)
            if self.outcomes.first("missing_from_ip_status", entry.device) is None:
                out.append(self.render_entry(entry))
        return out

    def ip_status_by_batch(self, batch_id: str) -> list[dict[str, Any]] | None:
        """Status array for a batch id (each call is one poll); None when unknown."""
        batch = self.batches.get(batch_id)
        return None if batch is None else self._status_reply(batch.entries)

    def ip_status_by_subscriber(self, mdn: str) -> list[dict[str, Any]] | None:
        """Status array with the latest entry of one subscriber; None when unknown."""
        entry = self.ip_by_subscriber.get(mdn)
        return None if entry is None else self._status_reply([entry])

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
