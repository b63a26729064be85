"""Narrow exception classes of the activation tasks (Airflow exceptions, like the http provider's)."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class BulkChangeNotFound(AirflowFailException):
    """The bulk change named in the run's conf does not exist (no retry can fix it)."""


class BulkChangeNotOwned(AirflowFailException):
    """Another DAG run owns this bulk change, or it finished: this run changes nothing."""


class ConnectionMissing(AirflowFailException):
    """A connection the task is configured with does not exist (fails at once, no retry)."""


class CredentialsProblem(AirflowFailException):
    """The service provider has no usable Telegence credentials (missing, or writes disabled)."""


class CarrierUnavailable(AirflowException):
    """Devices could not be sent (or their outcome is unknown) because the carrier stayed unavailable;
    retried by Airflow: a retry sends exactly those devices again, reconciled first."""


class BulkChangeUnfinished(AirflowFailException):
    """Finalize found devices that are not terminal; the bulk change stays PROCESSING."""


class ConfigurationFailure(AirflowFailException):
    """Every device failed for a reason only a person can fix (credentials, a read-only account)."""


class OutcomeUnknown(AirflowFailException):
    """Devices ended with their carrier outcome unknown (recorded and reported); the run shows red."""
