"""What the simulator counts for the admin API: calls per endpoint and status, 429s, faults."""

from __future__ import annotations


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
