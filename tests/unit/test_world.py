"""World physics against geometry computed by hand (no sockets)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from reachability import reachable

from spacetime_rl.errors import ConfigError
from spacetime_rl.protocol import wire
from spacetime_rl.sim import world as w
from spacetime_rl.sim.collisions import PLAYER_RADIUS
from spacetime_rl.sim.layouts import NUM_BOXES, NUM_PITS
from spacetime_rl.sim.world import World, ignored_options

OBS = wire.OBS
FORWARD = np.array([[0.0, 1.0, 0.0]])
RAY_TOLERANCE = 1e-3  # documented in docs/simulator.md


def rays(obs: np.ndarray, agent: int = 0) -> np.ndarray:
    return obs[agent, OBS["ray_distances"]]


def empty_world(position: tuple[float, float] = (0.0, 0.0), yaw: float = 0.0, **layout) -> World:
    """One agent in a hand-made arena; the goal is far away unless given."""
    world = World(1, seed=0)
    layout.setdefault("goal", (20.0, 20.0))
    world.set_layout(0, **layout)
    world.set_pose(0, position, yaw=yaw)
    return world


def run(world: World, action: np.ndarray, steps: int) -> list[w.StepOutcome]:
    return [world.step(action) for _ in range(steps)]


class TestSensors:
    def test_rays_read_pillar_box_pit_and_platform_edge(self) -> None:
        # player at (-21, 0) facing -Z: ray 0 ahead (-Z), ray 4 right (+X), ray 8 behind (+Z), ray 12 left (-X)
        world = empty_world(
            (-21.0, 0.0),
            pillars=[(-21.0, -3.0, 0.5)],
            boxes=[(-19.0, -1.0, -18.0, 1.0)],
            pits=[(-22.0, 4.0, -20.0, 6.0)],
        )
        distances = rays(world.observe())
        assert distances[0] == pytest.approx(2.5, abs=RAY_TOLERANCE)  # pillar surface
        assert distances[4] == pytest.approx(2.0, abs=RAY_TOLERANCE)  # box face
        assert distances[8] == pytest.approx(4.0, abs=RAY_TOLERANCE)  # pit edge
        assert distances[12] == pytest.approx(3.0, abs=RAY_TOLERANCE)  # platform edge at x = -24

    def test_diagonal_ray_hits_box_face(self) -> None:
        # ray 2 points 45 degrees right of forward: (+X, -Z) / sqrt 2; the box face x = 2 is met at t = 2 sqrt 2
        world = empty_world(boxes=[(2.0, -4.0, 3.0, -1.0)])
        assert rays(world.observe())[2] == pytest.approx(2 * math.sqrt(2), abs=RAY_TOLERANCE)

    def test_nothing_in_range_reads_ray_range(self) -> None:
        world = empty_world(pillars=[(0.0, -5.6, 0.5)])  # surface 5.1 m ahead
        assert np.all(rays(world.observe()) == wire.RAY_RANGE)

    def test_rays_turn_with_the_player(self) -> None:
        # yaw -pi/2 faces +X (turned right), so ray 0 sees the box on +X and ray 12 the pillar ahead of -Z
        world = empty_world(yaw=-math.pi / 2, boxes=[(2.0, -1.0, 3.0, 1.0)], pillars=[(0.0, -3.0, 0.5)])
        distances = rays(world.observe())
        assert distances[0] == pytest.approx(2.0, abs=RAY_TOLERANCE)
        assert distances[12] == pytest.approx(2.5, abs=RAY_TOLERANCE)

    def test_goal_fields(self) -> None:
        world = empty_world((1.0, 1.0), goal=(4.0, 5.0))
        obs = world.observe()[0]
        np.testing.assert_allclose(obs[OBS["goal_relative_position"]], [3.0, 0.0, 4.0], atol=1e-5)
        assert obs[OBS["goal_distance"]][0] == pytest.approx(5.0, abs=1e-5)
        np.testing.assert_allclose(obs[OBS["goal_direction"]], [0.6, 0.0, 0.8], atol=1e-6)

    def test_camera_and_controllers_at_rest(self) -> None:
        obs = empty_world((2.0, -3.0)).observe()[0]
        np.testing.assert_allclose(obs[OBS["camera_position"]], [2.0, w.EYE_HEIGHT, -3.0], atol=1e-6)
        np.testing.assert_allclose(obs[OBS["camera_rotation"]], [0.0, 0.0, 0.0, 1.0], atol=1e-7)
        # hands in front of the player (-Z), left at -X, right at +X
        left, right = obs[OBS["left_controller_position"]], obs[OBS["right_controller_position"]]
        np.testing.assert_allclose(left, [2.0 - 0.2, 1.1, -3.35], atol=1e-5)
        np.testing.assert_allclose(right, [2.0 + 0.2, 1.1, -3.35], atol=1e-5)


class TestMotion:
    def test_forward_accelerates_at_the_documented_limit(self) -> None:
        world = empty_world()
        world.step(FORWARD)
        velocity = world.observe()[0, OBS["camera_velocity"]]
        assert velocity[0] == pytest.approx(0.0, abs=1e-6)
        assert velocity[2] == pytest.approx(
            -w.MAX_ACCELERATION * 9 / wire.PHYSICS_HZ, abs=1e-5
        )  # -Z is forward
        run(world, FORWARD, 10)
        assert world.observe()[0, OBS["camera_velocity"]][2] == pytest.approx(-2.0, abs=1e-5)

    def test_strafe_right_moves_plus_x(self) -> None:
        world = empty_world()
        run(world, np.array([[1.0, 0.0, 0.0]]), 5)
        x, z, _ = world.position(0)
        assert x > 0.5 and abs(z) < 1e-9

    def test_diagonal_stick_is_no_faster(self) -> None:
        world = empty_world()
        run(world, np.array([[1.0, 1.0, 0.0]]), 10)
        speed = np.linalg.norm(world.observe()[0, OBS["camera_velocity"]][[0, 2]])
        assert speed == pytest.approx(2.0, abs=1e-5)

    def test_smooth_turn_right_is_clockwise_from_above(self) -> None:
        world = empty_world()
        run(world, np.array([[0.0, 0.0, 1.0]]), 10)  # 1 s at 90 deg/s
        assert world.position(0)[2] == pytest.approx(-math.pi / 2, abs=1e-9)
        obs = world.observe()[0]
        assert obs[OBS["camera_angular_velocity"]][1] == pytest.approx(-math.pi / 2, abs=1e-6)
        # the head leans into the turn: the rotation is no longer a pure yaw
        assert abs(obs[OBS["camera_rotation"]][2]) > 1e-3

    def test_snap_turns_count_as_teleports_with_cooldown(self) -> None:
        world = empty_world()
        world.reset(options={"turn_mode": "snap", "snap_angle": 30})
        world.set_layout(0, goal=(20.0, 20.0))
        world.set_pose(0, (0.0, 0.0))
        teleports = [int(o.teleports[0]) for o in run(world, np.array([[0.0, 0.0, 0.8]]), 4)]
        assert teleports == [1, 0, 0, 1]  # cooldown 27 frames = 3 actions
        assert world.position(0)[2] == pytest.approx(-math.radians(60), abs=1e-9)

    def test_actions_are_clipped(self) -> None:
        a, b = empty_world(), empty_world()
        run(a, np.array([[0.0, 7.0, 0.0]]), 5)
        run(b, FORWARD, 5)
        np.testing.assert_array_equal(a.observe(), b.observe())

    def test_walking_bobs_the_head(self) -> None:
        world = empty_world()
        heights = []
        for _ in range(20):
            world.step(FORWARD)
            heights.append(world.observe()[0, OBS["camera_position"]][1])
        assert max(heights) - min(heights) > 0.01


class TestCollisions:
    def test_pushing_into_a_box_counts_one_collision_and_stops_at_the_face(self) -> None:
        world = empty_world(yaw=-math.pi / 2, boxes=[(1.0, -2.0, 3.0, 2.0)])  # facing +X, box face at x = 1
        outcomes = run(world, FORWARD, 30)
        assert sum(int(o.collisions[0]) for o in outcomes) == 1
        x, _, _ = world.position(0)
        assert x == pytest.approx(1.0 - PLAYER_RADIUS, abs=1e-9)
        assert not outcomes[-1].done[0]

    def test_sliding_along_a_wall_keeps_one_contact(self) -> None:
        # facing +X, stick forward-left: presses into the wall at x = 1 and slides towards -Z
        world = empty_world(yaw=-math.pi / 2, boxes=[(1.0, -10.0, 3.0, 10.0)])
        outcomes = run(world, np.array([[-0.5, 1.0, 0.0]]), 30)
        assert sum(int(o.collisions[0]) for o in outcomes) == 1
        x, z, _ = world.position(0)
        assert x == pytest.approx(1.0 - PLAYER_RADIUS, abs=1e-9) and z < -1.0

    def test_leaving_and_returning_counts_again(self) -> None:
        world = empty_world(yaw=-math.pi / 2, boxes=[(1.0, -2.0, 3.0, 2.0)])
        total = sum(int(o.collisions[0]) for o in run(world, FORWARD, 10))
        total += sum(int(o.collisions[0]) for o in run(world, -FORWARD, 5))
        total += sum(int(o.collisions[0]) for o in run(world, FORWARD, 10))
        assert total == 2

    def test_pillar_blocks_and_counts(self) -> None:
        world = empty_world(pillars=[(0.0, -2.0, 0.5)])
        outcomes = run(world, FORWARD, 20)
        assert sum(int(o.collisions[0]) for o in outcomes) == 1
        x, z, _ = world.position(0)
        assert math.hypot(x, z + 2.0) == pytest.approx(0.5 + PLAYER_RADIUS, abs=1e-9)

    def test_no_tunnelling_through_a_thin_wall_at_top_speed(self) -> None:
        world = empty_world()
        world.reset(options={"max_speed": w.MAX_SPEED_LIMIT})
        world.set_layout(0, goal=(20.0, 20.0), boxes=[(-5.0, -3.02, 5.0, -3.0)])  # 2 cm thick
        world.set_pose(0, (0.0, 0.0))
        run(world, FORWARD, 30)
        assert world.position(0)[1] == pytest.approx(-3.0 + PLAYER_RADIUS, abs=1e-9)


class TestEpisodeEnd:
    def test_walking_off_the_platform_falls_and_freezes(self) -> None:
        world = empty_world((23.0, 0.0), yaw=-math.pi / 2)  # facing +X, edge at x = 24
        outcomes = run(world, FORWARD, 15)
        fell_at = next(i for i, o in enumerate(outcomes) if o.fell[0])
        assert outcomes[fell_at].done[0] and not outcomes[fell_at].goal_reached[0]
        frozen = world.observe()
        after = world.step(FORWARD)
        assert after.done[0] and not after.fell[0] and after.collisions[0] == 0 and after.teleports[0] == 0
        np.testing.assert_array_equal(world.observe(), frozen)
        assert all(o.done[0] and not o.fell[0] for o in outcomes[fell_at + 1 :])
        assert world.position(0)[0] == pytest.approx(24.0, abs=0.03)

    def test_stepping_into_a_pit_falls(self) -> None:
        world = empty_world(pits=[(-1.0, -4.0, 1.0, -2.0)])
        outcomes = run(world, FORWARD, 20)
        assert any(o.fell[0] for o in outcomes)
        assert world.position(0)[1] == pytest.approx(-2.0, abs=0.03)  # stopped at the edge

    def test_reaching_the_goal(self) -> None:
        world = empty_world(goal=(0.0, -3.0))
        outcomes = run(world, FORWARD, 20)
        reached_at = next(i for i, o in enumerate(outcomes) if o.goal_reached[0])
        assert outcomes[reached_at].done[0] and not outcomes[reached_at].fell[0]
        assert world.observe()[0, OBS["goal_distance"]][0] < w.GOAL_RADIUS
        assert not any(o.goal_reached[0] for o in outcomes[reached_at + 1 :])

    def test_reset_unfreezes(self) -> None:
        world = empty_world(goal=(0.0, -1.0))
        run(world, FORWARD, 5)
        assert world.done[0]
        world.reset([0])
        assert not world.done[0]
        assert world.last_outcome.goal_reached[0] == np.False_


class TestResetAndSeeds:
    def test_same_seed_and_actions_give_identical_trajectories(self) -> None:
        actions = np.random.default_rng(3).uniform(-1.5, 1.5, (40, 8, 3))
        runs = []
        for _ in range(2):
            world = World(8, seed=11)
            trace = [world.observe()]
            for a in actions:
                outcome = world.step(a)
                trace += [world.observe(), outcome.done, outcome.collisions]
                if outcome.done.any():
                    trace.append(world.reset(np.flatnonzero(outcome.done)))
            runs.append(trace)
        for a, b in zip(*runs, strict=True):
            np.testing.assert_array_equal(a, b)

    def test_agent_episode_does_not_depend_on_who_else_is_reset(self) -> None:
        alone = World(4, seed=1).reset([2], seed=7)
        together = World(4, seed=5).reset([3, 0, 2], seed=7)
        np.testing.assert_array_equal(alone[0], together[2])

    def test_world_seed_equals_reset_seed(self) -> None:
        np.testing.assert_array_equal(World(3, seed=9).observe(), World(3, seed=1).reset(seed=9))

    def test_seeds_differ(self) -> None:
        assert not np.array_equal(World(2, seed=1).observe(), World(2, seed=2).observe())

    def test_null_seed_continues_the_stream(self) -> None:
        world = World(1, seed=4)
        first, second = world.reset(), world.reset()
        assert not np.array_equal(first, second)
        again = World(1, seed=4)
        again.reset()
        np.testing.assert_array_equal(again.reset(), second)

    def test_reset_returns_rows_in_the_order_given(self) -> None:
        world = World(4, seed=0)
        rows = world.reset([3, 1])
        np.testing.assert_array_equal(rows, world.observe()[[3, 1]])
        assert world.reset([]).shape == (0, wire.OBSERVATION_SIZE)

    def test_goal_distances_within_bounds(self) -> None:
        world = World(64, seed=0)
        for seed in range(3):
            obs = world.reset(seed=seed, options={"min_goal_distance": 5.0, "max_goal_distance": 6.0})
            distance = obs[:, OBS["goal_distance"]][:, 0]
            assert distance.min() >= 5.0 - 1e-4 and distance.max() <= 6.0 + 1e-4

    def test_long_goals_fit_the_platform(self) -> None:
        obs = World(16, seed=0).reset(options={"min_goal_distance": 30.0, "max_goal_distance": 30.0})
        np.testing.assert_allclose(obs[:, OBS["goal_distance"]][:, 0], 30.0, atol=1e-4)

    def test_default_goal_distances(self) -> None:
        distance = World(64, seed=0).observe()[:, OBS["goal_distance"]][:, 0]
        assert distance.min() >= w.DEFAULT_GOAL_DISTANCE[0] - 1e-4
        assert distance.max() <= w.DEFAULT_GOAL_DISTANCE[1] + 1e-4

    def test_start_is_clear_and_on_the_floor(self) -> None:
        world = World(64, seed=2)
        outcome = world.step(np.zeros((64, 3)))
        assert not outcome.done.any() and not outcome.collisions.any()


class TestOptions:
    def test_options_persist_per_agent(self) -> None:
        world = World(2, seed=0)
        world.reset([1], options={"max_speed": 0.5})
        world.reset()  # no options: agent 1 keeps its max_speed
        for agent in (0, 1):
            world.set_layout(agent, goal=(20.0, 20.0))
            world.set_pose(agent, (0.0, 0.0))
        run(world, np.tile(FORWARD, (2, 1)), 10)
        speeds = np.linalg.norm(world.observe()[:, OBS["camera_velocity"]][:, [0, 2]], axis=1)
        np.testing.assert_allclose(speeds, [2.0, 0.5], atol=1e-5)

    def test_null_restores_the_default(self) -> None:
        world = World(1, seed=0)
        world.reset(options={"max_speed": 0.5})
        world.reset(options={"max_speed": None})
        world.set_layout(0, goal=(20.0, 20.0))
        world.set_pose(0, (0.0, 0.0))
        run(world, FORWARD, 10)
        assert np.linalg.norm(world.observe()[0, OBS["camera_velocity"]][[0, 2]]) == pytest.approx(
            2.0, abs=1e-5
        )

    def test_max_rotation_speed(self) -> None:
        world = World(1, seed=0)
        world.reset(options={"max_rotation_speed": 45.0})
        yaw = world.position(0)[2]
        world.step(np.array([[0.0, 0.0, -1.0]]))  # left for 0.1 s
        assert world.position(0)[2] - yaw == pytest.approx(math.radians(4.5), abs=1e-9)

    def test_unknown_options_are_listed(self) -> None:
        assert ignored_options({"max_speed": 1, "zeta": 1, "alpha": None}) == ["alpha", "zeta"]

    @pytest.mark.parametrize(
        ("options", "named"),
        [
            ({"max_speed": -1.0}, "max_speed"),
            ({"max_speed": math.inf}, "max_speed"),
            ({"max_speed": "fast"}, "max_speed"),
            ({"max_speed": True}, "max_speed"),
            ({"max_rotation_speed": math.nan}, "max_rotation_speed"),
            ({"min_goal_distance": -2.0}, "min_goal_distance"),
            ({"max_goal_distance": 1000.0}, "max_goal_distance"),
            ({"min_goal_distance": 8.0, "max_goal_distance": 5.0}, "min_goal_distance"),
            ({"turn_mode": "teleport"}, "turn_mode"),
            ({"snap_angle": 0}, "snap_angle"),
        ],
    )
    def test_bad_option_values_name_the_option_and_change_nothing(self, options: dict, named: str) -> None:
        world = World(2, seed=0)
        before = world.observe()
        with pytest.raises(ConfigError, match=named):
            world.reset(options=options)
        np.testing.assert_array_equal(world.observe(), before)

    def test_min_above_a_persisted_max_is_refused(self) -> None:
        world = World(1, seed=0)
        world.reset(options={"max_goal_distance": 5.0})
        with pytest.raises(ConfigError, match="min_goal_distance"):
            world.reset(options={"min_goal_distance": 8.0})

    def test_bad_agents_and_seed(self) -> None:
        world = World(2, seed=0)
        for agents in ([2], [-1], [0, 0]):
            with pytest.raises(ConfigError, match="agents"):
                world.reset(agents)
        with pytest.raises(ConfigError, match="seed"):
            world.reset(seed=-1)

    def test_bad_actions(self) -> None:
        world = World(2, seed=0)
        with pytest.raises(ConfigError, match="shape"):
            world.step(np.zeros((3, 3)))
        with pytest.raises(ConfigError, match="finite"):
            world.step(np.array([[0.0, math.nan, 0.0], [0.0, 0.0, 0.0]]))


def test_goals_are_reachable_over_many_seeds() -> None:
    world = World(24, seed=0)
    for seed in range(2):
        world.reset(seed=seed, options={"max_goal_distance": 25.0})
        for agent in range(world.num_agents):
            x, z, _ = world.position(agent)
            layout = world.layout(agent)
            assert len(layout.boxes) == NUM_BOXES and len(layout.pits) == NUM_PITS
            assert reachable(layout, (x, z)), f"seed {seed} agent {agent}"


def test_layouts_are_moderately_dense() -> None:
    """Most short goals have a clear straight corridor: the task is learnable, obstacles still matter."""
    world = World(200, seed=3)
    world.reset(options={"max_goal_distance": 10.0})
    clear = 0
    for agent in range(world.num_agents):
        x, z, _ = world.position(agent)
        layout = world.layout(agent)
        goal = complex(*layout.goal)
        samples = complex(x, z) + (goal - complex(x, z)) * np.linspace(0, 1, 200)
        blocked = np.zeros(samples.size, bool)
        for x0, z0, x1, z1 in np.concatenate([layout.boxes, layout.pits]):
            dx = np.maximum(np.maximum(x0 - samples.real, samples.real - x1), 0)
            dz = np.maximum(np.maximum(z0 - samples.imag, samples.imag - z1), 0)
            blocked |= np.hypot(dx, dz) < PLAYER_RADIUS
        for px, pz, r in layout.pillars:
            blocked |= np.abs(samples - complex(px, pz)) < r + PLAYER_RADIUS
        clear += not blocked.any()
    assert 0.6 * world.num_agents < clear < world.num_agents
