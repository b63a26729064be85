# The Airflow image with this project's package installed (used by docker-compose.yaml).
#
# Python 3.11: the package requires it (pyproject.toml requires-python); the plain
# apache/airflow:3.3.2 tag is another Python version.

# Stage 1: the package's wheel, built from its sources only (.dockerignore keeps the context to them).
FROM apache/airflow:3.3.2-python3.11 AS wheel
COPY --chown=airflow:0 pyproject.toml README.md /tmp/telegence/
COPY --chown=airflow:0 include /tmp/telegence/include
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/telegence/dist /tmp/telegence

# Stage 2: the image. The package and its runtime dependencies (no [local]/[dev] extras: the
# embedded PostgreSQL and test tools are not needed here) under Airflow's own constraints for
# 3.3.2 / Python 3.11, the ones the image was built with, so the providers the image carries stay
# at their tested versions; apache-airflow==3.3.2 in the same command so Airflow is never up- or
# downgraded. `pip check` fails the build on any conflict left.
FROM apache/airflow:3.3.2-python3.11
ARG AIRFLOW_CONSTRAINTS_URL=https://raw.githubusercontent.com/apache/airflow/constraints-3.3.2/constraints-3.11.txt
COPY --from=wheel /tmp/telegence/dist/ /tmp/telegence-dist/
RUN pip install --no-cache-dir \
        --constraint "${AIRFLOW_CONSTRAINTS_URL}" \
        "apache-airflow==3.3.2" \
        /tmp/telegence-dist/telegence_activation-*.whl \
    && pip check
