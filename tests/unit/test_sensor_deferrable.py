"""The sensors' deferrable option: the rendered flag is parsed as a boolean (``"False"`` is false),
and a deferred check defers to a time-only trigger and comes back to ``execute_complete``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk import timezone
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, TaskDeferred

from telegence_activation.sensors.base import AIRFLOW_SENSOR_TIMEOUT, BulkChangeSensor, as_bool


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("True", True),
        ("true", True),
        (" TRUE ", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("False", False),
        ("false", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("", False),
        ("None", False),
        (None, False),
        (1, True),
        (0, False),
    ],
)
def test_as_bool_reads_rendered_booleans(value: Any, expected: bool) -> None:
    assert as_bool(value) is expected


@pytest.mark.parametrize("value", ["flase", "2", 2, 1.0, [], "defer"])
def test_as_bool_refuses_what_is_not_a_boolean(value: Any) -> None:
    with pytest.raises(ValueError, match="not a boolean"):
        as_bool(value)


class StubSensor(BulkChangeSensor):
    """A sensor whose checks answer from a list (no database, no carrier)."""

    def __init__(self, *, answers: list[bool], **kwargs: Any) -> None:
        super().__init__(task_id="stub", bulk_change_id=1, check_interval_seconds=7, **kwargs)
        self.answers = answers

    def poke(self, context: Any) -> bool:
        return self.answers.pop(0)


def test_a_deferrable_check_that_is_not_done_defers_to_a_time_only_trigger() -> None:
    sensor = StubSensor(answers=[False], deferrable="True")
    before = timezone.utcnow()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow.providers.standard.triggers.temporal.DateTimeTrigger"
    assert set(kwargs) == {"moment", "end_from_trigger"}
    assert before + timedelta(seconds=7) <= kwargs["moment"] <= timezone.utcnow() + timedelta(seconds=7)
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.kwargs is not None and deferred.value.kwargs["deferrals"] == 1
    assert deferred.value.timeout is not None and deferred.value.timeout > AIRFLOW_SENSOR_TIMEOUT


def test_resumed_it_checks_again_then_finishes_or_defers_again() -> None:
    sensor = StubSensor(answers=[False, True], deferrable=True)
    started = timezone.utcnow().isoformat()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute_complete({}, event=None, started_at=started, deferrals=1)
    assert deferred.value.kwargs == {"started_at": started, "deferrals": 2}
    assert sensor.execute_complete({}, event=None, started_at=started, deferrals=2) is None


def test_a_deferred_wait_beyond_airflows_sensor_timeout_fails_like_a_rescheduled_one() -> None:
    sensor = StubSensor(answers=[False], deferrable=True)
    long_ago = (timezone.utcnow() - AIRFLOW_SENSOR_TIMEOUT - timedelta(seconds=1)).isoformat()
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete({}, event=None, started_at=long_ago, deferrals=9)


def test_the_string_false_does_not_defer_and_nonsense_fails_without_retries() -> None:
    assert StubSensor(answers=[], deferrable="False").defers is False
    with pytest.raises(AirflowFailException, match="deferrable"):
        _ = StubSensor(answers=[], deferrable="sometimes").defers
