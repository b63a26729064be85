"""docker-compose.yaml, the Dockerfile and .dockerignore, checked for what would break a start.

No Docker engine runs here, so the recipe is read side by side with what it relies on: the
package's ``requires-python``, Airflow 3.3.2 as installed in the venv (its API routes, its
scheduler health server, its CLI choices), the DAG module, the simulator's scenarios and the live
local stack's settings. The init script is run for real by bash, every external command stubbed.
"""

from __future__ import annotations

import ast
import asyncio
import json
import posixpath
import re
import subprocess
import threading
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
DAG_FILE = REPO / "dags" / "telegence_new_service_activation.py"
# What every Airflow component must hold identically (tokens, encrypted fields, log requests).
SHARED_SECRETS = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY")
CORE_COMPONENTS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
    "airflow-triggerer": "triggerer",
}
# One line of the shared env file: what Compose, the local stack and this test all read alike.
SIMPLE_ENV_LINE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=[^\s\"'$#\\]*")


# ------------------------------------------------------------------------------------ reading


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "docker-compose.yaml").read_text()))


def _airflow_version() -> str:
    match = re.search(r"^apache-airflow==(\S+)$", (REPO / "requirements.txt").read_text(), re.M)
    assert match, "requirements.txt pins apache-airflow"
    return match.group(1)


def _interpolate(text: str, host_env: Mapping[str, str]) -> str:
    """Compose's interpolation: ``$$`` is a literal ``$``; ``${VAR}``, ``${VAR:-default}``, ``$VAR``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        value = host_env.get(name, "")
        if match.group(2) is not None and (
            value == "" if match.group(2).startswith(":") else name not in host_env
        ):
            return match.group(3)
        return value

    return re.sub(r"\$\$|\$\{(\w+)(:?-([^}]*))?\}|\$(\w+)", replace, text)


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _env_files(service: Mapping[str, Any]) -> list[Path]:
    entries = service.get("env_file") or []
    if isinstance(entries, str | dict):
        entries = [entries]
    paths = [entry["path"] if isinstance(entry, dict) else entry for entry in entries]
    return [REPO / _interpolate(str(path), {}) for path in paths]


def _read_env_file(path: Path) -> dict[str, str]:
    assert path.is_file(), f"{path} does not exist"
    settings: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assert SIMPLE_ENV_LINE.fullmatch(line), (
            f"{path.name}:{number}: {raw!r} is not a plain KEY=VALUE line (quotes, spaces, $ or inline "
            "comments are read differently by Compose and by the local stack)"
        )
        key, value = line.split("=", 1)
        settings[key] = value
    return settings


def _effective_env(service: Mapping[str, Any]) -> dict[str, str]:
    """What the container gets: the env files, then ``environment`` (which wins)."""
    env: dict[str, str] = {}
    for path in _env_files(service):
        env.update(_read_env_file(path))
    env.update(_environment(service))
    return env


def _components(compose: Mapping[str, Any]) -> dict[str, Any]:
    """Every Airflow component (the core five, init, cli and any other airflow-* service)."""
    services = compose["services"]
    assert set(CORE_COMPONENTS) <= set(services)
    return {name: service for name, service in services.items() if name.startswith("airflow-")}


def _shared_env_file(compose: Mapping[str, Any]) -> Path:
    files = {name: _env_files(service) for name, service in _components(compose).items()}
    distinct = {tuple(paths) for paths in files.values()}
    assert len(distinct) == 1 and len(next(iter(distinct))) == 1, (
        f"every Airflow component must read the same single env file: {files}"
    )
    return files["airflow-apiserver"][0]


def _module_constant(path: Path, name: str) -> Any:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} is not a constant of {path.name}")


def _environ_reads(path: Path) -> set[str]:
    """Names a module reads with ``os.environ.get("NAME", ...)`` or ``os.environ["NAME"]``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "getenv")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            names.add(str(node.slice.value))
    return names


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [
        line for line in (REPO / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _healthcheck_command(service: Mapping[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test[1:]) if isinstance(test, list) else str(test)


def _healthcheck_url(service: Mapping[str, Any]) -> Any:
    match = re.search(r"curl\s+(?:--\S+\s+)*(http://\S+)", _healthcheck_command(service))
    assert match, f"no curl URL in {service['healthcheck']}"
    return urlsplit(match.group(1))


# ------------------------------------------------------------------------- the image and build


def test_image_python_satisfies_requires_python() -> None:
    requires = SpecifierSet(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    )
    froms = [args for keyword, args in _dockerfile_instructions() if keyword == "FROM"]
    assert froms
    for args in froms:
        image = args.split()[0]
        match = re.fullmatch(r"apache/airflow:(?P<airflow>[\d.]+)-python(?P<python>3\.\d+)", image)
        assert match, (
            f"FROM {image}: name the Python in the tag (apache/airflow:X.Y.Z-python3.N); the plain "
            f"tag is the image's default Python, not one {requires} allows"
        )
        assert match["airflow"] == _airflow_version(), image
        python = match["python"]
        assert Version(f"{python}.0") in requires and Version(f"{python}.99") in requires, (
            f"{image} runs Python {python}; the package requires {requires}"
        )


def test_dockerfile_installs_the_package_under_airflows_constraints_and_checks() -> None:
    instructions = _dockerfile_instructions()
    args = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value.strip('"')
    python = re.search(r"-python(3\.\d+)", instructions[0][1])
    assert python, instructions[0]
    version = _airflow_version()
    url = (
        f"https://raw.githubusercontent.com/apache/airflow/constraints-{version}/constraints-{python[1]}.txt"
    )
    runs = [_interpolate(rest, args) for keyword, rest in instructions if keyword == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert len(installs) == 1, installs
    install = installs[0]
    assert re.search(rf"(--constraint|-c)[ =]\"?{re.escape(url)}", install), (
        f"install under Airflow's constraints for {version} / Python {python[1]} ({url}): {install}"
    )
    assert f'"apache-airflow=={version}"' in install or f"apache-airflow=={version} " in install, (
        "name apache-airflow==X.Y.Z in the same pip install, so Airflow is never up- or downgraded"
    )
    assert "telegence_activation" in install, "the package itself is installed"
    assert "--no-deps" not in install, "the package's runtime dependencies are resolved with it"
    assert not re.search(r"\[(local|dev|statsd)\]", " ".join(runs)), "no extras in the image"
    assert re.search(r"&&\s*pip check\b", install) or any(
        re.match(r"pip check\b", run) for run in runs[runs.index(install) + 1 :]
    ), "pip check after the install"
    copied = [rest for keyword, rest in instructions if keyword == "COPY"]
    assert not [c for c in copied if re.search(r"(^|\s)constraints\.txt\b", c)], (
        "the project's lock (constraints.txt) is for the venv, not for an image with other providers"
    )


def _dockerignore_rules() -> list[tuple[re.Pattern[str], bool]]:
    path = REPO / ".dockerignore"
    assert path.is_file(), (
        ".dockerignore missing: the whole checkout (.venv, .data, .git) is the build context"
    )
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((re.compile(regex), negate))
    return rules


def _ignored(path: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Docker's rule: a pattern matching the path or one of its parents decides; the last one wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for regex, negate in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_build_context_to_what_the_image_needs() -> None:
    rules = _dockerignore_rules()
    for path in (
        ".venv/bin/python",
        ".data/pgdata/PG_VERSION",
        ".git/HEAD",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        "bench/out/run.json",
        "bench/results.md",
        "docs/screenshots/run.png",
        "tests/test_docker_compose.py",
        "logs/scheduler/x.log",
        "reports/1.html",
        "deploy/airflow.env",
        ".env",
        "include/telegence_activation/__pycache__/dag.cpython-311.pyc",
    ):
        assert _ignored(path, rules), f"{path} would be sent to the Docker daemon"
    sources = []
    for keyword, rest in _dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in rest:
            sources += [part for part in rest.split()[:-1] if not part.startswith("--")]
    assert sources
    for source in sources:
        local = REPO / source
        assert local.exists(), source
        files = [p for p in local.rglob("*.py")] if local.is_dir() else [local]
        assert files, source
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            if "__pycache__" not in relative:
                assert not _ignored(relative, rules), f"{relative} is copied by the Dockerfile but ignored"


# ----------------------------------------------------------------------- secrets and settings


def test_every_airflow_component_gets_the_same_secrets_from_one_env_file(compose: dict[str, Any]) -> None:
    shared = _shared_env_file(compose)
    settings = _read_env_file(shared)
    for key in SHARED_SECRETS:
        assert settings.get(key), f"{key} is not in {shared.name}: each component would make up its own"
        for name, service in _components(compose).items():
            assert key not in _environment(service), f"{name} overrides {key} from {shared.name}"
            assert _effective_env(service)[key] == settings[key], name
    from cryptography.fernet import Fernet

    try:
        Fernet(settings["AIRFLOW__CORE__FERNET_KEY"].encode())
    except ValueError as exc:  # binascii.Error included
        pytest.fail(f"AIRFLOW__CORE__FERNET_KEY is no Fernet key ({exc}): Airflow cannot encrypt with it")
    # HS512 (Airflow's choice for a shared secret): a shorter key is weaker than the hash.
    assert len(settings["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 64
    # The simulator is no Airflow component: none of Airflow's secrets or connections.
    simulator = compose["services"]["telegence-simulator"]
    assert not _env_files(simulator)
    assert not [k for k in _environment(simulator) if k.startswith("AIRFLOW")]


def test_local_stack_reads_the_shared_settings_file(compose: dict[str, Any]) -> None:
    from telegence_local import config

    shared = _shared_env_file(compose)
    assert config.project_root() / config.SHARED_ENV_FILE == shared, "the local stack reads another file"
    settings = _read_env_file(shared)
    assert config.shared_settings() == settings
    assert settings["TELEGENCE_POOL"] == config.POOL
    stack = config.StackConfig()
    assert stack.pool_slots == int(settings["TELEGENCE_POOL_SLOTS"])
    assert stack.parallelism == int(settings["AIRFLOW__CORE__PARALLELISM"])
    # The DAG's knobs: names the DAG module really reads, given to the stack's components.
    knobs = {key for key in settings if key.startswith("TELEGENCE_") and not key.startswith("TELEGENCE_POOL")}
    assert {"TELEGENCE_MAX_ACTIVE_BATCHES_PER_RUN", "TELEGENCE_TASK_RETRY_DELAY_SECONDS"} <= knobs
    assert knobs <= _environ_reads(DAG_FILE), (
        f"knobs the DAG does not read: {knobs - _environ_reads(DAG_FILE)}"
    )
    for key in (*knobs, "AIRFLOW__CORE__LAZY_LOAD_PLUGINS"):
        assert stack.extra_env[key] == settings[key], key
    # What a caller passes still wins (the live tests shorten the retry delay).
    assert (
        config.StackConfig(extra_env={"TELEGENCE_TASK_RETRY_DELAY_SECONDS": "2"}).extra_env[
            "TELEGENCE_TASK_RETRY_DELAY_SECONDS"
        ]
        == "2"
    )


# What makes a lost worker's tasks run again: read by compose (env file) and the local stack alike.
CELERY_SETTINGS = (
    "AIRFLOW__CELERY__WORKER_CONCURRENCY",
    "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER",
    "AIRFLOW__CELERY__TASK_ACKS_LATE",
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT",
)


def test_celery_recipe_runs_what_the_live_celery_stack_runs(compose: dict[str, Any]) -> None:
    from telegence_local import config

    settings = _read_env_file(_shared_env_file(compose))
    # Same broker kind (Redis), same result backend kind (the metadata PostgreSQL), same executor.
    for name, service in _components(compose).items():
        env = _effective_env(service)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql"), name
        # The Celery settings come from the shared file, never overridden per service.
        assert not set(CELERY_SETTINGS) & set(_environment(service)), name
    assert config.BROKER == "redis" and Path(config.REDIS_SERVER).name == "redis-server"
    redis = compose["services"]["redis"]
    assert str(redis["image"]).startswith("redis:")
    command = redis.get("command") or []
    # Like the stack's redis.conf: an append-only file (queued tasks outlive a restart), no RDB.
    assert command[:1] == ["redis-server"] and "--appendonly" in command
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--save") + 1] == ""
    assert any(str(v).endswith(":/data") for v in redis.get("volumes") or []), "the append-only file is kept"
    # The settings: in the file, read by the stack, and consistent with each other.
    assert set(CELERY_SETTINGS) <= set(settings)
    assert set(CELERY_SETTINGS) <= {*config.SHARED_ENV_KEYS, *config.SHARED_CELERY_ENV_KEYS}
    stack = config.StackConfig(executor="celery")
    for key in CELERY_SETTINGS:
        assert stack.extra_env[key] == settings[key], key
    assert stack.worker_concurrency == int(settings["AIRFLOW__CELERY__WORKER_CONCURRENCY"])
    assert settings["AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER"] == "1"
    assert settings["AIRFLOW__CELERY__TASK_ACKS_LATE"].lower() == "true"
    heartbeat = int(settings["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"])
    # Redis redelivers an unacknowledged message after the visibility timeout: it must outlast any
    # task (a running task would start twice); lost workers are handled by the heartbeat timeout.
    assert int(settings["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]) >= max(
        3600, 10 * heartbeat
    )
    assert 30 <= heartbeat <= 300
    # A queued task whose message a dead worker took is queued again after this; only with Celery.
    queued = int(settings["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"])
    assert heartbeat < queued <= 600
    assert (
        stack.extra_env["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"]
        == settings["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"]
    )
    assert "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT" not in config.StackConfig().extra_env
    with pytest.raises(ValueError, match="executor"):
        config.StackConfig(executor="kubernetes")


def test_carrier_credentials_are_an_account_of_the_simulated_scenario(compose: dict[str, Any]) -> None:
    from telegence_simulator.scenario import load_scenario

    simulator = compose["services"]["telegence-simulator"]
    command = simulator["command"]
    scenario = command[command.index("--scenario") + 1]
    port = command[command.index("--port") + 1]
    accounts = {account.app_id: account for account in load_scenario(scenario).effective_accounts()}
    for name, service in _components(compose).items():
        conn_json = _effective_env(service).get("AIRFLOW_CONN_TELEGENCE_SP_1")
        if conn_json is None:
            assert name not in ("airflow-worker",), f"{name} runs tasks and has no Telegence connection"
            continue
        conn = json.loads(conn_json)
        assert conn["host"] == f"http://telegence-simulator:{port}", name
        account = accounts.get(conn["login"])
        assert account is not None, (
            f"{conn['login']!r} is no account of scenario {scenario!r}: {sorted(accounts)}"
        )
        assert conn["password"] == account.app_secret.get_secret_value(), f"{name}: app secret differs"
        assert conn.get("extra", {}).get("write_enabled", True) == account.write_enabled, name


# ----------------------------------------------------------------------------- the init step


@contextmanager
def _stubbed_init(compose: Mapping[str, Any], tmp_path: Path) -> Iterator[Any]:
    """Run the init script with bash; every external command is a stub that logs its arguments."""
    init = compose["services"]["airflow-init"]
    entrypoint = init["entrypoint"]
    assert (entrypoint if isinstance(entrypoint, str) else " ".join(entrypoint)) in ("/bin/bash", "bash")
    assert init["command"][0] == "-c"
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "calls.log"
    stub = (
        "#!/bin/bash\n"
        'printf "%s\\037" "${0##*/}" "$@" >> "$STUB_LOG"; printf "\\036" >> "$STUB_LOG"\n'
        'if [[ -n "${STUB_FAIL:-}" && "${0##*/} $*" == "$STUB_FAIL"* ]]; then exit 3; fi\n'
    )
    for name in ("airflow", "psql", "python", "mkdir", "chown", "ls", "su", "grep", "id", "entrypoint"):
        (stubs / name).write_text(stub)
        (stubs / name).chmod(0o755)

    def run(
        host_env: Mapping[str, str], fail: str = ""
    ) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
        log.write_text("")
        env = {k: _interpolate(v, host_env) for k, v in _effective_env(init).items()}
        script = _interpolate(init["command"][1], host_env).replace("/entrypoint ", "entrypoint ")
        env.update({"PATH": str(stubs), "STUB_LOG": str(log), "STUB_FAIL": fail})
        done = subprocess.run(
            ["/bin/bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        calls = [record.split("\x1f")[:-1] for record in log.read_text().split("\x1e") if record]
        return done, calls

    yield run


def test_init_script_stops_at_the_first_failing_step(compose: dict[str, Any], tmp_path: Path) -> None:
    script = compose["services"]["airflow-init"]["command"][1]
    statements = [s.strip() for s in script.splitlines() if s.strip() and not s.strip().startswith("#")]
    assert re.fullmatch(r"set -[a-z]*e[a-z]*( -o pipefail)?|set -euo pipefail", statements[0]), statements[0]
    assert not re.search(r"\|\|\s*(true|:)\b", script), "a step's failure is hidden (|| true)"
    with _stubbed_init(compose, tmp_path) as run:
        done, all_calls = run({"AIRFLOW_UID": "1000"})
        assert done.returncode == 0, done.stderr
        steps = [
            "airflow db migrate",
            "airflow users create",
            "airflow pools set",
            "psql",
            "python -m telegence_activation db migrate",
        ]
        for step in steps:
            assert any(" ".join(call).startswith(step) for call in all_calls), f"the init never runs {step!r}"
            done, calls = run({"AIRFLOW_UID": "1000"}, fail=step)
            assert done.returncode != 0, f"the init succeeds although {step!r} failed"
            assert not [call for call in calls if call[0] == "chown"], (
                f"the init went on after {step!r} failed"
            )


def test_init_script_chowns_after_creating_and_handles_airflow_uid(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    with _stubbed_init(compose, tmp_path) as run:
        done, calls = run({})  # AIRFLOW_UID not set on the host
        assert done.returncode == 0, done.stderr
        assert "AIRFLOW_UID" in done.stdout and "WARNING" in done.stdout, (
            "no warning when AIRFLOW_UID is unset"
        )
        chowns = [n for n, call in enumerate(calls) if call[0] == "chown"]
        assert chowns, "the init hands no file to AIRFLOW_UID"
        assert "50000:0" in calls[chowns[0]], (
            f"AIRFLOW_UID unset: the official default is 50000: {calls[chowns[0]]}"
        )
        # Everything that creates files (folders, airflow.cfg, logs of the migrations) comes first.
        creators = [
            n
            for n, call in enumerate(calls)
            if call[0] in ("mkdir", "airflow", "python", "psql", "entrypoint")
        ]
        assert creators and max(creators) < min(chowns), (
            f"chown before files it must own are created: {calls}"
        )
        mkdir = next(call for call in calls if call[0] == "mkdir")
        for folder in ("logs", "dags", "plugins", "config", "reports"):
            assert f"/opt/airflow/{folder}" in mkdir, (folder, mkdir)
        config_list = [n for n, call in enumerate(calls) if call[:3] == ["airflow", "config", "list"]]
        assert config_list and config_list[0] < min(chowns), "airflow.cfg is created before the chown"
        chowned = {arg.rstrip("/") for n in chowns for arg in calls[n][1:]}
        assert "/opt/airflow" in chowned or {f"/opt/airflow/{f}" for f in ("logs", "config")} <= chowned
        done, calls = run({"AIRFLOW_UID": "1234"})
        assert done.returncode == 0, done.stderr
        assert "WARNING" not in done.stdout
        assert ["1234:0" in call for call in calls if call[0] == "chown"] == [True] * len(chowns)


def test_init_creates_the_dags_pool_from_the_shared_settings(compose: dict[str, Any], tmp_path: Path) -> None:
    carrier_pool = _module_constant(DAG_FILE, "CARRIER_POOL")
    settings = _read_env_file(_shared_env_file(compose))
    assert settings["TELEGENCE_POOL"] == carrier_pool, "the shared settings name another pool than the DAG's"
    with _stubbed_init(compose, tmp_path) as run:
        done, calls = run({"AIRFLOW_UID": "1000"})
    assert done.returncode == 0, done.stderr
    pools = [call for call in calls if call[:3] == ["airflow", "pools", "set"]]
    assert len(pools) == 1, f"the init creates no pool (or several): {calls}"
    name, slots = pools[0][3], pools[0][4]
    assert name == carrier_pool, f"pool {name!r}, the DAG's tasks run in {carrier_pool!r}"
    assert slots == settings["TELEGENCE_POOL_SLOTS"], "pool size not from the shared settings"
    users = [call for call in calls if call[:3] == ["airflow", "users", "create"]]
    assert users and "Admin" in users[0], "no admin user"


# -------------------------------------------------------------------- health checks and waits


def test_workers_wait_for_a_healthy_simulator_and_api_server(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker = services["airflow-worker"]["depends_on"]
    for needed in ("telegence-simulator", "airflow-apiserver"):
        assert worker.get(needed, {}).get("condition") == "service_healthy", (
            f"the workers do not wait for {needed}"
        )
    for name, service in services.items():
        for dependency, how in (service.get("depends_on") or {}).items():
            if how.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], (
                    f"{name} waits for {dependency}, which has no healthcheck"
                )
    for name in CORE_COMPONENTS:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_api_server_healthcheck_is_a_route_airflow_serves_without_login(compose: dict[str, Any]) -> None:
    from airflow.api_fastapi.core_api.routes.public import public_router
    from airflow.api_fastapi.core_api.security import get_user

    url = _healthcheck_url(compose["services"]["airflow-apiserver"])
    env = _effective_env(compose["services"]["airflow-apiserver"])
    assert url.port == int(env.get("AIRFLOW__API__PORT", "8080"))
    routes = {route.path: route for route in public_router.routes if "GET" in getattr(route, "methods", ())}
    # (Airflow 3 answers the Airflow 2 path /health with 404.)
    assert url.path in routes, f"Airflow 3.3 serves no GET {url.path}"
    assert not [d for d in routes[url.path].dependencies if d.dependency is get_user], (
        f"GET {url.path} needs a login: curl --fail gets 401 and the api-server never turns healthy"
    )


def test_scheduler_healthcheck_hits_airflows_health_check_server(compose: dict[str, Any]) -> None:
    from airflow.configuration import conf
    from airflow.utils.scheduler_health import HealthServer

    service = compose["services"]["airflow-scheduler"]
    env = _effective_env(service)
    assert env.get("AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK", "").lower() == "true", (
        "the health server is off"
    )
    url = _healthcheck_url(service)
    port = env.get("AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT") or conf.get_default_value(
        "scheduler", "scheduler_health_check_server_port"
    )
    assert url.port == int(port)
    server = HTTPServer(("127.0.0.1", 0), HealthServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:

        def status(path: str) -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}{path}", timeout=30) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        assert status("/no-such-path") == 404
        # 200 with a live scheduler, 503 without one (here): the route exists.
        assert status(url.path) in (200, 503), f"the scheduler's health server has no {url.path}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("service", "runner"),
    [
        ("airflow-dag-processor", "airflow.jobs.dag_processor_job_runner:DagProcessorJobRunner"),
        ("airflow-triggerer", "airflow.jobs.triggerer_job_runner:TriggererJobRunner"),
    ],
)
def test_job_healthchecks_name_job_types_airflow_knows(
    compose: dict[str, Any], service: str, runner: str
) -> None:
    import importlib

    from airflow.cli.cli_config import ARG_JOB_TYPE_FILTER

    module, name = runner.split(":")
    job_type = getattr(importlib.import_module(module), name).job_type
    match = re.search(
        r"airflow jobs check --job-type (\S+)", _healthcheck_command(compose["services"][service])
    )
    assert match, compose["services"][service]["healthcheck"]
    assert match[1] in ARG_JOB_TYPE_FILTER.kwargs["choices"]
    assert match[1] == job_type, f"{service} runs a {job_type}, its healthcheck checks {match[1]}"


def test_simulator_healthcheck_is_a_route_the_simulator_serves_openly(compose: dict[str, Any]) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from telegence_simulator.scenario import load_scenario
    from telegence_simulator.server import Simulator

    service = compose["services"]["telegence-simulator"]
    command = service["command"]
    url = _healthcheck_url(service)
    assert str(url.port) == command[command.index("--port") + 1]
    app = Simulator(load_scenario(command[command.index("--scenario") + 1])).build_app()

    async def probe() -> int:
        async with TestClient(TestServer(app)) as client:
            response = await client.get(url.path)  # no admin token
            return int(response.status)

    assert asyncio.run(probe()) == 200


# ------------------------------------------------------------------------ layout (carried over)


def test_services_commands_and_mounted_folders(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "airflow-init", "telegence-simulator"} <= set(services)
    for name, command in CORE_COMPONENTS.items():
        assert services[name]["command"] == command, name
    volumes = services["airflow-scheduler"]["volumes"]
    mounted = 0
    for volume in volumes:
        source, target = volume.rsplit(":", 1)
        local = REPO / _interpolate(source, {})
        assert local.resolve().parent == REPO, volume
        if target.endswith(("/dags", "/plugins", "/config")):
            assert local.is_dir(), volume
            mounted += 1
    assert mounted == 3
    assert services["airflow-scheduler"]["build"] == "."
    assert DAG_FILE.is_file()
