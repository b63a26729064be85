"""Simulated time: what "now" is for the carrier (compressible, and movable from the admin API)."""

from __future__ import annotations

import time


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
