"""The client's check of a server's /rl/spec: the documented layout, or the seed's names for it."""

from __future__ import annotations

from typing import Any

import pytest

from spacetime_rl.errors import SpecMismatchError
from spacetime_rl.protocol import ResponseCheck, wire


def spec_body(names: dict[str, str] | None = None) -> dict[str, Any]:
    renamed = names or {}
    return {
        "protocol": wire.PROTOCOL_VERSION,
        "num_agents": 4,
        "observation_size": wire.OBSERVATION_SIZE,
        "action_size": wire.ACTION_SIZE,
        "observation_fields": [{"name": renamed.get(n, n), "size": s} for n, s in wire.OBSERVATION_FIELDS],
        "physics_hz": wire.PHYSICS_HZ,
        "action_repeat": wire.DEFAULT_ACTION_REPEAT,
    }


def check(body: dict[str, Any]) -> Any:
    return ResponseCheck("http://127.0.0.1:8080", "/rl/spec").spec(body)


def test_a_scene_written_from_the_seed_readme_is_accepted() -> None:
    """The seed's get_rl_observation() says ray_sensors and goal_position for the same fields."""
    spec = check(spec_body({"ray_distances": "ray_sensors", "goal_relative_position": "goal_position"}))
    assert spec.observation_fields == wire.OBSERVATION_FIELDS  # recorded under the documented names
    assert spec.num_agents == 4


def test_another_layout_is_still_refused() -> None:
    body = spec_body({"ray_distances": "lidar"})
    with pytest.raises(SpecMismatchError, match="observation_fields"):
        check(body)
