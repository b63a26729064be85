"""Triggers run by Airflow's triggerer (event-driven scheduling)."""
