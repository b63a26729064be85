"""Sensors: polls of the carrier's asynchronous work, rescheduled (default) or deferred to a time-only trigger."""
