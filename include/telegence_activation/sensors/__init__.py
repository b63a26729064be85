"""Sensors: reschedule-mode polls of the carrier's asynchronous work."""
