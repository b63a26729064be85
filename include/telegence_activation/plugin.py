"""The package's Airflow plugin (entry point ``airflow.plugins``): the run-outcome listener and the
Bulk changes page.

- ``listeners``: the DAG-run listener that writes the bulk change's outcome into the run's note.
- ``fastapi_apps``: the Bulk changes app (``telegence_activation.ui``), mounted in the api-server
  under ``/telegence`` behind the api-server's own authentication; built on its first request, so
  importing this plugin (every Airflow component does) imports neither FastAPI nor Jinja2.
- ``external_views``: "Bulk changes" in the UI's navigation, and a "Bulk change" tab on every DAG
  run's page (the UI fills in ``{RUN_ID}`` and ``{DAG_ID}``; a run of another DAG, or one owning no
  bulk change, says so).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from telegence_activation import listeners
from telegence_activation.ui import URL_PREFIX, LazyApp

# The UI shows external views in a frame of its own pages: their addresses include the api-server's
# path prefix when ``[api] base_url`` has one (e.g. https://host/airflow/).
_ROOT = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/") + URL_PREFIX


class TelegenceActivationPlugin(AirflowPlugin):
    name = "telegence_activation"
    listeners = [listeners]
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "Telegence bulk changes"}]
    external_views = [
        {
            "name": "Bulk changes",
            "href": f"{_ROOT}/bulk-changes",
            "icon": f"{_ROOT}/static/icon.svg",
            "url_route": "bulk-changes",
            "destination": "nav",
            "nav_top_level": True,
        },
        {
            "name": "Bulk change",
            "href": f"{_ROOT}/runs/{{RUN_ID}}?dag_id={{DAG_ID}}",
            "icon": f"{_ROOT}/static/icon.svg",
            "url_route": "bulk-change",
            "destination": "dag_run",
        },
    ]
