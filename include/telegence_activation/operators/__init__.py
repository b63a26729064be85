"""Operators: Airflow glue (templating, mapping, XCom) over the domain functions and hooks."""
