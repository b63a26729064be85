"""The Bulk changes page: bulk changes and their devices inside the Airflow UI.

A small FastAPI app (``ui.app``), server-rendered HTML (Jinja2, every value escaped) with a little
vanilla JavaScript that refreshes a running bulk change's progress. The package's Airflow plugin
(``telegence_activation.plugin``) mounts it in the api-server under ``URL_PREFIX`` and adds it to
the UI: a "Bulk changes" entry in the navigation and a "Bulk change" tab on every DAG run's page.
It sits behind the api-server's own authentication (``ui.security``): nothing without a valid
Airflow login; actions (trigger, retry failed devices, cancel) only for users Airflow lets trigger
DAG runs.

The plugin is imported by every Airflow component (scheduler, dag-processor, task processes), so
the app is built on its first request in the api-server (``LazyApp``): importing the plugin stays
cheap and imports neither FastAPI nor Jinja2.
"""

from __future__ import annotations

import threading
from typing import Any

URL_PREFIX = "/telegence"


class LazyApp:
    """An ASGI app that builds the real one (``ui.app.create_app``) on its first request."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from telegence_activation.ui.app import create_app

                    self._app = create_app()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.get()(scope, receive, send)

    def __repr__(self) -> str:  # shown by Airflow's /api/v2/plugins
        return "telegence_activation.ui.app:create_app (built on first request)"
