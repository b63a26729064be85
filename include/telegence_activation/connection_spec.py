"""The Telegence connection's shape: API paths and the extras of the connection form.

Plain data with no Airflow import, shared by the hook and by ``provider_info`` (which Airflow
imports in every process that discovers providers, so it must stay light).
"""

from __future__ import annotations

from typing import Any

DEFAULT_PATHS: dict[str, str] = {
    "activate": "/sp/mobility/serviceactivation/api/v1/service",
    "activation_status": "/sp/mobility/serviceactivation/api/v1/service/{request_id}",
    "service": "/sp/mobility/lineconfig/api/v1/service/{subscriber_number}",
    "reserve_ips": "/sp/mobility/staticip/api/v1/ipaddresses",
    "provisioning": "/sp/mobility/staticip/api/v1/provisioning",
    "provisioning_status": "/sp/mobility/staticip/api/v1/provisioning/status",
}
# The connection's extras, as fields of the Telegence connection form (see provider_info.py).
CONNECTION_FIELDS: dict[str, dict[str, Any]] = {
    "write_enabled": {
        "label": "Write enabled",
        "description": "Off for a read-only account: activation and provisioning are refused.",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "timeout": {"label": "Timeout (s)", "schema": {"type": ["number", "null"], "default": 30}},
    "max_attempts": {"label": "Attempts per call", "schema": {"type": ["integer", "null"], "default": 5}},
    "backoff_initial": {"label": "First backoff (s)", "schema": {"type": ["number", "null"], "default": 1}},
    "backoff_max": {"label": "Longest backoff (s)", "schema": {"type": ["number", "null"], "default": 60}},
    "retry_after_max": {
        "label": "Longest Retry-After (s)",
        "schema": {"type": ["number", "null"], "default": 120},
    },
}
