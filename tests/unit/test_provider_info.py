"""The provider metadata Airflow reads: valid against Airflow's own schema, and true to the hook."""

from __future__ import annotations

import json
from pathlib import Path

import airflow
import jsonschema
import pytest

from telegence_activation.hooks.telegence import _OWN_EXTRAS, DEFAULT_PATHS, TelegenceHook
from telegence_activation.provider_info import get_provider_info


def test_the_provider_info_is_valid_against_airflows_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_the_connection_type_is_the_hooks_and_its_form_fields_are_extras_the_hook_reads() -> None:
    (connection,) = get_provider_info()["connection-types"]
    assert connection["connection-type"] == TelegenceHook.conn_type == "telegence"
    assert connection["hook-class-name"] == f"{TelegenceHook.__module__}.{TelegenceHook.__qualname__}"
    assert connection["ui-field-behaviour"]["relabeling"] == {
        "host": "Base URL",
        "login": "App ID",
        "password": "App secret",
    }
    fields = connection["conn-fields"]
    # Every form field is an extra the hook reads (so it is never sent to the carrier as a header).
    assert set(fields) <= _OWN_EXTRAS
    assert {name: fields[f"path_{name}"]["schema"]["default"] for name in DEFAULT_PATHS} == DEFAULT_PATHS


def test_a_path_form_field_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_TG_FORM",
        json.dumps(
            {
                "conn_type": "telegence",
                "host": "http://carrier.test",
                "login": "a",
                "password": "s",
                "extra": {"path_activate": "/v9/activate"},
            }
        ),
    )
    hook = TelegenceHook("tg_form")
    assert hook.path("activate") == "/v9/activate"
    assert hook.path("reserve_ips") == DEFAULT_PATHS["reserve_ips"]


def test_every_module_the_provider_names_imports() -> None:
    import importlib

    info = get_provider_info()
    for kind in ("operators", "sensors", "hooks"):
        for entry in info[kind]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
