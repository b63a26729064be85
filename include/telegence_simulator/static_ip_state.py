"""Carrier state, static IP side: PDP address pools, reservations and provisioning batches."""

from __future__ import annotations

import ipaddress
from typing import Any

from .activation_state import ActivationState, Device
from .checks import is_mdn
from .outcomes import attempt_fraction
from .scenario import IpPool, IpProgress

DEFAULT_IP_FAIL_ERROR = "Static IP provisioning failed: profile update was rejected (simulated)"
IP_STAGES = ("profileCheck", "ipReservation", "profileUpdate")


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


class StaticIpState(ActivationState):
    """The static IP half of :class:`~telegence_simulator.state.Carrier` (its state is set there)."""

    ipp: IpProgress
    outside_first: int
    outside_count: int
    pools: dict[str, Pool]
    batches: dict[str, Batch]
    ip_by_subscriber: dict[str, IpEntry]
    open_entries: dict[int, IpEntry]

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
                fraction = attempt_fraction(self.seed, device.iccid, len(self.batches), "ip")
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
