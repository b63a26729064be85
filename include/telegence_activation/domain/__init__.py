"""Pure domain code: no Airflow import, no I/O. Unit-tested directly."""
