"""Supervision of the local stack: restart what exits, end what it leaves, find its processes.

A thread restarts a component that exits (backoff 1 s doubling to 30 s, reset once it has stayed up
a minute; a log line names it and why) and the embedded PostgreSQL server if it dies. Before a
component is started again, every process left from its previous life is ended: found in the
process table by session or by the stack's id in its environment, never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telegence_activation.db.connection import embedded_running, restart_embedded

from .config import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    COMPONENT_ENV,
    STABLE_AFTER,
    STACK_ID_ENV,
    StackConfig,
)


class StackSupervision:
    """The supervising half of :class:`~telegence_local.stack.LiveStack` (its state is set there)."""

    config: StackConfig
    stack_id: str
    processes: dict[str, subprocess.Popen[bytes]]
    status: dict[str, str]
    restarts: dict[str, int]
    _backoff: dict[str, float]
    _next_start: dict[str, float]
    _started_at: dict[str, float]
    _db_hold_until: float
    _sessions: dict[int, str]
    _stop_supervisor: threading.Event
    _lock: threading.RLock

    if TYPE_CHECKING:

        @property
        def logs_dir(self) -> Path: ...

        def _spawn(self, component: str) -> None: ...

    def _say(self, text: str) -> None:
        print(f"stack: {text}", file=sys.stderr, flush=True)

    def _supervise(self) -> None:
        while not self._stop_supervisor.wait(1.0):
            try:
                with self._lock:
                    if self._stop_supervisor.is_set():
                        return
                    self._check_database()
                    for component in self.config.components:
                        self._check_component(component)
            except Exception as exc:  # the supervisor must outlive anything it watches
                self._say(f"supervisor error (carrying on): {exc!r}")

    def _check_database(self) -> None:
        if self.config.db_server_uri is not None or embedded_running(self.config.pgdata):
            if self.status.get("postgres", "up") != "up":
                self._say("embedded PostgreSQL is up again")
            self.status["postgres"] = "up"
            return
        now = time.monotonic()
        if now < self._db_hold_until:
            self.status["postgres"] = "down (held)"
            return
        self.status["postgres"] = "restarting (the server process is gone)"
        self._say("embedded PostgreSQL is down; starting it again")
        try:
            restart_embedded(self.config.pgdata)
        except Exception as exc:
            self._say(f"embedded PostgreSQL did not start yet: {exc!r}")
            return
        self.status["postgres"] = "up"
        self._say("embedded PostgreSQL restarted")

    def hold_database(self, seconds: float) -> None:
        """Leave the embedded PostgreSQL down for ``seconds`` if it dies (for fault injection)."""
        self._db_hold_until = time.monotonic() + seconds

    def _check_component(self, component: str) -> None:
        now = time.monotonic()
        process = self.processes.get(component)
        if process is not None and process.poll() is None:
            if now - self._started_at.get(component, now) > STABLE_AFTER:
                self._backoff[component] = BACKOFF_FIRST
            return
        if process is not None:  # it has just exited
            code = process.returncode
            self.processes.pop(component, None)
            ended = self._end_processes(component)
            delay = self._backoff.get(component, BACKOFF_FIRST)
            self._backoff[component] = min(delay * 2, BACKOFF_MAX)
            self._next_start[component] = now + delay
            why = f"exit code {code}" if code is None or code >= 0 else f"killed by signal {-code}"
            self.status[component] = f"restarting ({why})"
            self._say(
                f"airflow {component} exited ({why}); ended {ended} process(es) it left; restarting in "
                f"{delay:.0f} s (log: {self.logs_dir / (component + '.log')})"
            )
            return
        if now >= self._next_start.get(component, 0.0):
            self.restarts[component] = self.restarts.get(component, 0) + 1
            self._spawn(component)
            self._say(f"airflow {component} started again (restart {self.restarts[component]})")

    def restart(self, component: str) -> None:
        """End one component and everything it started, and start it again now."""
        with self._lock:
            process = self.processes.pop(component, None)
            if process is not None and process.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):
                    process.wait(20)
            self._end_processes(component)
            self._spawn(component)

    def stack_processes(self, component: str | None = None) -> list[Any]:
        """Every live process of this stack (of one component, if given), from the process table,
        whoever its parent is now: in the session of a component the stack started, or carrying the
        stack's id in its environment (which a process renaming itself with setproctitle may hide)."""
        import psutil

        sessions = {sid for sid, name in self._sessions.items() if component in (None, name)}
        found = []
        for proc in psutil.process_iter(["pid"]):
            if proc.pid == os.getpid():
                continue
            try:
                if os.getsid(proc.pid) in sessions:
                    found.append(proc)
                    continue
                environ = proc.environ()
            except (psutil.Error, OSError):
                continue
            if environ.get(STACK_ID_ENV) == self.stack_id and component in (None, environ.get(COMPONENT_ENV)):
                found.append(proc)
        return found

    def _end_processes(self, component: str | None = None, grace: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` s, every process of the stack (or of one component)."""
        import psutil

        procs = self.stack_processes(component)
        for proc in procs:
            with suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive:
            with suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=grace)
        return len(procs)
