"""ActivationCompleteNotifier: POST the bulk change's outcome to a customer webhook.

Configured by an http connection (default ``telegence_notify``): ``host`` = base URL, extra
``endpoint`` = path (default ``/``), any other extra is sent as a header (as HttpHook does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from airflow.sdk import Context

NOTIFY_CONN_ID = "telegence_notify"


class ActivationCompleteNotifier(BaseNotifier):
    """Send the completion payload (counts, status) of a bulk change to a webhook.

    :param payload: the JSON body (templated).
    :param http_conn_id: the webhook's http connection.
    """

    template_fields: Sequence[str] = ("payload", "http_conn_id")

    def __init__(self, *, payload: dict[str, Any], http_conn_id: str = NOTIFY_CONN_ID) -> None:
        super().__init__()
        self.payload = payload
        self.http_conn_id = http_conn_id

    def notify(self, context: Context) -> None:
        hook = HttpHook(method="POST", http_conn_id=self.http_conn_id)
        endpoint = hook.get_connection(self.http_conn_id).extra_dejson.get("endpoint", "/")
        hook.run(endpoint, json=self.payload, extra_options={"timeout": 30})
