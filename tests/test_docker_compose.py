"""docker-compose.yaml and the Dockerfile are validated statically (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_VERSION = "3.3.2"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "docker-compose.yaml").read_text()))


def test_pinned_airflow_version_matches_everywhere(compose: dict[str, Any]) -> None:
    requirements = (REPO / "requirements.txt").read_text()
    assert f"apache-airflow=={AIRFLOW_VERSION}" in requirements
    assert f"apache-airflow=={AIRFLOW_VERSION}" in (REPO / "constraints.txt").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(rf"^FROM apache/airflow:{re.escape(AIRFLOW_VERSION)}$", dockerfile, re.M)
    assert f'"apache-airflow=={AIRFLOW_VERSION}"' in dockerfile
    for name, service in compose["services"].items():
        image = service.get("image", "")
        if "airflow" in image:
            assert image.endswith(f":{AIRFLOW_VERSION}}}") or image.endswith(f":{AIRFLOW_VERSION}"), (
                name,
                image,
            )


def test_every_service_the_stack_needs_is_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {
        "postgres",
        "redis",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-worker",
        "airflow-triggerer",
        "airflow-init",
        "telegence-simulator",
    } <= set(services)
    commands = {name: service.get("command") for name, service in services.items()}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-worker"] == "celery worker"
    assert commands["airflow-triggerer"] == "triggerer"
    assert "telegence_simulator" in commands["telegence-simulator"]
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-worker", "airflow-triggerer"):
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_environment_configures_celery_connections_and_map_length(compose: dict[str, Any]) -> None:
    env = compose["services"]["airflow-apiserver"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    # The api-server enforces max_map_length when prepare pushes its batch list.
    assert int(env["AIRFLOW__CORE__MAX_MAP_LENGTH"]) >= 1024
    db = json.loads(env["AIRFLOW_CONN_ACTIVATION_DB"])
    assert db["conn_type"] == "postgres" and db["host"] == "postgres"
    telegence = json.loads(env["AIRFLOW_CONN_TELEGENCE_SP_1"])
    assert telegence["conn_type"] == "http"
    assert telegence["host"] == "http://telegence-simulator:8089"
    assert telegence["login"] and telegence["password"]
    assert telegence["extra"]["write_enabled"] is True
    # The worker keeps the common environment (connections included).
    worker_env = compose["services"]["airflow-worker"]["environment"]
    assert worker_env["AIRFLOW_CONN_TELEGENCE_SP_1"] == env["AIRFLOW_CONN_TELEGENCE_SP_1"]


def test_mounts_and_build_context_point_at_paths_that_exist(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["airflow-scheduler"]["volumes"]
    checked = 0
    for volume in volumes:
        source, target = volume.rsplit(":", 1)
        local = Path(source.replace("${AIRFLOW_PROJ_DIR:-.}", str(REPO)))
        assert local.parent == REPO, volume
        if target.endswith(("/dags", "/plugins", "/config")):
            assert local.is_dir(), volume
            checked += 1
    assert checked == 3
    assert compose["services"]["airflow-scheduler"]["build"] == "."
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY"):
            sources = [part for part in line.split()[1:-1] if not part.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), line
    assert (REPO / "dags" / "telegence_new_service_activation.py").is_file()


def test_simulator_scenario_named_in_compose_ships_with_the_package(compose: dict[str, Any]) -> None:
    command = compose["services"]["telegence-simulator"]["command"]
    scenario = command[command.index("--scenario") + 1]
    assert (REPO / "include" / "telegence_simulator" / "scenarios" / f"{scenario}.yaml").is_file()
