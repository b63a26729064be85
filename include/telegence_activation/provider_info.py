"""Provider metadata: how Airflow finds this package's hooks, operators, sensors and connection type.

Registered through the ``apache_airflow_provider`` entry point (pyproject.toml), like the official
providers, so ``airflow providers list`` shows it and the UI offers a **Telegence** connection type
with its own form (app-id and app-secret labelled as such, the extras as fields, the API paths with
their defaults).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from telegence_activation.connection_spec import CONNECTION_FIELDS, DEFAULT_PATHS
from telegence_activation.domain.rate_limit import BURST_EXTRA, RATE_EXTRA

# The carrier rate limit's extras (read by the hook through domain.rate_limit).
RATE_LIMIT_FIELDS: dict[str, dict[str, Any]] = {
    RATE_EXTRA: {
        "label": "Max calls per second",
        "description": "Carrier calls per second for this account, shared by every task of every run "
        "(a token bucket in the activation database); empty or 0: no limit. Set it a little under "
        "the carrier's limit.",
        "schema": {"type": ["number", "null"], "minimum": 0},
    },
    BURST_EXTRA: {
        "label": "Burst (calls)",
        "description": "Calls allowed at once after a quiet time (the bucket's size); "
        "default: max(1, max calls per second).",
        "schema": {"type": ["number", "null"], "minimum": 1},
    },
}
PACKAGE = "telegence-activation"
INTEGRATION = "Telegence"


def _version() -> str:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "0.0.0"


def get_provider_info() -> dict[str, Any]:
    """The provider info Airflow's ProvidersManager reads (validated against its JSON schema)."""
    path_fields = {
        f"path_{name}": {
            "label": f"API path: {name.replace('_', ' ')}",
            "description": f"Default {path}",
            "schema": {"type": ["string", "null"], "default": path},
        }
        for name, path in DEFAULT_PATHS.items()
    }
    return {
        "package-name": PACKAGE,
        "name": "Telegence bulk SIM activation",
        "description": "Activate cellular SIM cards in bulk on AT&T's Telegence API, with static IP provisioning.",
        "versions": [_version()],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://github.com/telegence-activation/telegence-activation",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "telegence_activation.operators.plan",
                    "telegence_activation.operators.approval",
                    "telegence_activation.operators.prepare",
                    "telegence_activation.operators.activate",
                    "telegence_activation.operators.offering_codes",
                    "telegence_activation.operators.plan_static_ip",
                    "telegence_activation.operators.request_static_ips",
                    "telegence_activation.operators.finalize",
                    "telegence_activation.operators.billing_export",
                    "telegence_activation.operators.dispatch",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "telegence_activation.sensors.activation_status",
                    "telegence_activation.sensors.ip_provisioning_status",
                ],
            }
        ],
        "hooks": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "telegence_activation.hooks.telegence",
                    "telegence_activation.hooks.activation_db",
                ],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "telegence_activation.hooks.telegence.TelegenceHook",
                "hook-name": "Telegence",
                "connection-type": "telegence",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {"host": "Base URL", "login": "App ID", "password": "App secret"},
                    "placeholders": {"host": "https://telegence.example.com"},
                },
                "conn-fields": {**CONNECTION_FIELDS, **RATE_LIMIT_FIELDS, **path_fields},
            }
        ],
    }
