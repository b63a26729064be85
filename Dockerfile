# The Airflow image with this project's package installed (used by docker-compose.yaml).
FROM apache/airflow:3.3.2

COPY --chown=airflow:0 constraints.txt pyproject.toml README.md /opt/telegence/
COPY --chown=airflow:0 include /opt/telegence/include

# Runtime dependencies at the project's pinned versions (constraints.txt is the full lock), then
# the package itself. Test tools and the embedded PostgreSQL wheel are not needed in the image.
RUN pip install --no-cache-dir -c /opt/telegence/constraints.txt \
        "apache-airflow==3.3.2" \
        apache-airflow-providers-http \
        apache-airflow-providers-postgres \
        apache-airflow-providers-standard \
        pydantic tenacity requests aiohttp pyyaml \
    && pip install --no-cache-dir --no-deps /opt/telegence
