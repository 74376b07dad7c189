"""Scenario layouts: valid, reachable, reproducible; the open field unchanged (no sockets)."""

from __future__ import annotations

import numpy as np
import pytest
from reachability import reachable

from spacetime_rl.errors import ConfigError
from spacetime_rl.protocol import wire
from spacetime_rl.sim import scenarios
from spacetime_rl.sim.layouts import NUM_PILLARS
from spacetime_rl.sim.world import World, ignored_options

AGENTS = 40
SEEDS = (0, 1)  # 80 layouts per scenario


def episodes(scenario: str, seed: int, **options: float) -> tuple[World, np.ndarray]:
    world = World(AGENTS, seed=0)
    obs = world.reset(seed=seed, options={"scenario": scenario, **options})
    return world, obs


@pytest.mark.parametrize("scenario", wire.SCENARIOS)
def test_goal_is_reachable_from_the_start(scenario: str) -> None:
    for seed in SEEDS:
        world, _ = episodes(scenario, seed)
        for agent in range(AGENTS):
            layout = world.layout(agent)
            x, z, _ = world.position(agent)
            assert reachable(layout, (x, z)), f"{scenario} seed {seed} agent {agent}: goal unreachable"


@pytest.mark.parametrize("scenario", wire.SCENARIOS)
def test_layouts_fit_their_slots_and_goals_their_distance(scenario: str) -> None:
    world, obs = episodes(scenario, 5, min_goal_distance=4.0, max_goal_distance=12.0)
    distance = obs[:, wire.OBS["goal_distance"]][:, 0]
    if scenario == "maze":  # cell centres ± 0.25 m: the distance bounds hold to the jitter
        assert ((distance > 4.0 - 0.75) & (distance < 12.0 + 0.75)).all()
    else:
        assert ((distance >= 4.0 - 1e-4) & (distance <= 12.0 + 1e-4)).all()
    for agent in range(AGENTS):
        layout = world.layout(agent)
        assert len(layout.boxes) <= scenarios.MAX_BOXES and len(layout.pits) <= scenarios.MAX_PITS
        x, z, _ = world.position(agent)
        assert (x, z) != pytest.approx((-22.0, -22.0)), "the empty-arena fallback was used"


@pytest.mark.parametrize("scenario", wire.SCENARIOS)
def test_same_seed_same_layout_and_trajectory(scenario: str) -> None:
    actions = np.random.default_rng(3).uniform(-1, 1, (20, AGENTS, wire.ACTION_SIZE))
    runs = []
    for _ in range(2):
        world, obs = episodes(scenario, 11)
        runs.append([obs, *(world.step(a) and world.observe() for a in actions)])
        runs[-1].append(np.concatenate([world.layout(i).boxes for i in range(AGENTS)]))
    for first, second in zip(*runs, strict=True):
        np.testing.assert_array_equal(first, second)
    other, _ = episodes(scenario, 12)
    assert not np.array_equal(other.layout(0).goal, world.layout(0).goal)


def test_open_field_is_the_seed_world() -> None:
    # Goal vectors of World(4, seed=2024) before scenarios existed: the default world is unchanged.
    before = [
        [-0.59250, 0.0, 4.05562, 4.09867],
        [5.07793, 0.0, -0.80743, 5.14172],
        [-3.79274, 0.0, 10.10181, 10.79034],
        [2.05450, 0.0, -9.19473, 9.42147],
    ]
    world = World(4, seed=2024)
    np.testing.assert_allclose(world.observe()[:, 41:45], before, atol=1e-4)
    explicit = World(4, seed=0)
    np.testing.assert_array_equal(
        explicit.reset(seed=2024, options={"scenario": "open_field"}), world.observe()
    )


def test_maze_goal_is_usually_out_of_sight() -> None:
    world, _ = episodes("maze", 0)
    hidden = 0
    for agent in range(AGENTS):
        layout = world.layout(agent)
        x, z, _ = world.position(agent)
        t = np.linspace(0.0, 1.0, 200)[:, None]
        line = np.array([x, z]) + t * (layout.goal - np.array([x, z]))
        hidden += any(
            ((line[:, 0] >= x0) & (line[:, 0] <= x1) & (line[:, 1] >= z0) & (line[:, 1] <= z1)).any()
            for x0, z0, x1, z1 in layout.boxes
        )
    assert hidden / AGENTS > 0.6


def test_obstacle_course_packs_obstacles_near_the_line() -> None:
    counts = {}
    for scenario in ("open_field", "obstacle_course"):
        world, _ = episodes(scenario, 0, min_goal_distance=10.0, max_goal_distance=12.0)
        near = 0
        for agent in range(AGENTS):
            layout = world.layout(agent)
            start = complex(*world.position(agent)[:2])
            goal = complex(*layout.goal)
            centres = [complex((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in (*layout.boxes, *layout.pits)]
            centres += [complex(p[0], p[1]) for p in layout.pillars]
            for c in centres:  # distance from the segment start-goal
                t = np.clip(((c - start) * (goal - start).conjugate()).real / abs(goal - start) ** 2, 0, 1)
                near += abs(c - (start + t * (goal - start))) < 4.0
        counts[scenario] = near / AGENTS
    assert counts["obstacle_course"] > 10 and counts["obstacle_course"] > 5 * counts["open_field"]


def test_scenario_option_persists_and_null_restores_the_default() -> None:
    world = World(2, seed=0)
    world.reset(agents=[0], options={"scenario": "maze"})
    world.reset(seed=1)
    assert len(world.layout(0).pillars) == 0 and len(world.layout(1).pillars) == NUM_PILLARS
    world.reset(agents=[0], options={"scenario": None})
    assert len(world.layout(0).pillars) == NUM_PILLARS
    assert ignored_options({"scenario": "maze"}) == []


def test_unknown_scenario_names_the_option_and_the_choices() -> None:
    world = World(1, seed=0)
    with pytest.raises(ConfigError, match=r"'scenario' is 'mazes'.*'open_field', 'obstacle_course', 'maze'"):
        world.reset(options={"scenario": "mazes"})
    with pytest.raises(ConfigError, match="'scenario'"):
        world.reset(options={"scenario": 3})
