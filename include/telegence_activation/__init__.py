"""Bulk activation of cellular services on AT&T's Telegence API, orchestrated by Airflow."""

from __future__ import annotations

__version__ = "0.1.0"
