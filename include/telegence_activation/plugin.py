"""The package's Airflow plugin (entry point ``airflow.plugins``): the run-outcome listener."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from telegence_activation import listeners


class TelegenceActivationPlugin(AirflowPlugin):
    name = "telegence_activation"
    listeners = [listeners]
