"""Fixtures: one simulator process per session, reset to the base test scenario before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sim_testkit import BASE_SCENARIO, RO_APP_ID, RO_APP_SECRET, Tg

from telegence_simulator.launcher import AdminClient, RunningSimulator, start_simulator


@pytest.fixture(scope="session")
def sim() -> Iterator[RunningSimulator]:
    """A simulator child process on a free loopback port."""
    with start_simulator(BASE_SCENARIO, seed=1234, time_scale=1.0) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_state(request: pytest.FixtureRequest) -> None:
    """Reload the base scenario (which resets all state) before every test that uses the simulator."""
    if "sim" in request.fixturenames:
        simulator: RunningSimulator = request.getfixturevalue("sim")
        simulator.admin.load_scenario(BASE_SCENARIO)
        simulator.admin.set_time_scale(1.0)


@pytest.fixture
def admin(sim: RunningSimulator) -> AdminClient:
    """The admin client of the session simulator."""
    return sim.admin


@pytest.fixture
def tg(sim: RunningSimulator) -> Tg:
    """A Telegence client with the write-enabled account."""
    return Tg(sim.base_url)


@pytest.fixture
def tg_ro(sim: RunningSimulator) -> Tg:
    """A Telegence client with the read-only account."""
    return Tg(sim.base_url, RO_APP_ID, RO_APP_SECRET)
