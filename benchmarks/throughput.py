"""Environment throughput in agent-steps/s: the simulator in-process, over /rl/step (JSON and binary),
over the seed's three endpoints, and behind godot_rl_agents' TCP protocol.

Every transport is set up once; then each measurement runs for a fixed wall time, and the repeats
go round all of them in turn, so slow phases of a shared machine hit every transport alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from benchmarks.godot_rl_peer import FramedJSONClient
from spacetime_rl.config import BUSY_POLL_SECONDS, EnvConfig
from spacetime_rl.godot import GodotClient
from spacetime_rl.godot.launcher import launch_servers
from spacetime_rl.protocol import wire
from spacetime_rl.sim.world import World

AGENT_COUNTS: Final = (1, 16, 64, 256)
MAX_SERVERS: Final = 4
SEED_ENDPOINT_AGENTS: Final = (16, 64)
WARMUP_STEPS: Final = 3
_ACTION_BANK: Final = 64  # distinct random action arrays cycled through


@dataclass
class _Setup:
    """One agent count's transports: in-process worlds, JSON and binary clients to MAX_SERVERS
    simulators, a busy-polling client to one more, and godot_rl's env."""

    worlds: list[World]
    json_clients: list[GodotClient]
    binary_clients: list[GodotClient]
    polling_client: GodotClient
    godot_env: Any


@dataclass
class Samples:
    """agent-steps/s of each repeat, keyed by (section, agents, servers, transport)."""

    values: dict[tuple[str, int, int, str], list[float]] = field(default_factory=dict)

    def add(self, key: tuple[str, int, int, str], value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def median(self, key: tuple[str, int, int, str]) -> float:
        return float(np.median(self.values[key]))


def actions_bank(num_agents: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.uniform(-1, 1, (num_agents, wire.ACTION_SIZE)).astype(np.float32) for _ in range(_ACTION_BANK)
    ]


def step_world(world: World, actions: np.ndarray) -> np.ndarray:
    """What one /rl/step with auto_reset does to a world, without the server around it."""
    outcome = world.step(actions)
    observations = world.observe()
    finished = np.flatnonzero(outcome.done)
    if finished.size:
        observations[finished] = world.reset(finished)
    return observations


def rate(step: Callable[[int], object], agent_steps_per_call: int, seconds: float) -> float:
    """Calls `step(i)` for `seconds` (after a warm-up) and returns agent-steps per second."""
    for i in range(WARMUP_STEPS):
        step(i)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step(calls)
        calls += 1
    return calls * agent_steps_per_call / elapsed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((wire.DEFAULT_HOST, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def godot_rl_env(num_agents: int) -> Iterator[tuple[Any, str]]:
    """godot_rl's `GodotEnv` (or our stand-in without the package) connected to a peer subprocess."""
    port = _free_port()
    peer = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.godot_rl_peer", "--port", str(port), "--agents", str(num_agents)]
    )
    try:
        try:
            from godot_rl.core.godot_env import GodotEnv

            with contextlib.redirect_stdout(io.StringIO()):  # it prints its spaces
                env: Any = GodotEnv(port=port)
            client = "godot_rl.core.GodotEnv"
        except ImportError:
            env, client = FramedJSONClient(port), "stand-in client (godot-rl not installed)"
        env.reset()
        yield env, client
        with contextlib.redirect_stdout(io.StringIO()):
            env.close()
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            peer.wait(5)
        peer.kill()


class Throughput:
    """Holds every transport open while the repeats go round them."""

    def __init__(self, seconds: float, agent_counts: tuple[int, ...] = AGENT_COUNTS) -> None:
        self.seconds = seconds
        self.agent_counts = agent_counts
        self.samples = Samples()
        self.godot_rl_client = ""
        self.loop = asyncio.new_event_loop()

    def run(self, repeats: int) -> Samples:
        with contextlib.ExitStack() as stack:
            stack.callback(self.loop.close)
            setups = {n: self._open(n, stack) for n in self.agent_counts}
            for _ in range(repeats):
                for n, setup in setups.items():
                    self._round(n, setup)
        return self.samples

    def _open(self, n: int, stack: contextlib.ExitStack) -> _Setup:
        config = EnvConfig(num_environments=MAX_SERVERS, agents_per_environment=n, busy_poll="off")
        urls = stack.enter_context(launch_servers(config, seed=0))
        # one more server, busy polling as env.busy_poll=auto has it with one server on two cores
        (polling_url,) = stack.enter_context(
            launch_servers(EnvConfig(agents_per_environment=n, busy_poll="on"), seed=0)
        )
        godot_env, self.godot_rl_client = stack.enter_context(godot_rl_env(n))
        setup = _Setup(
            worlds=[World(n, seed=s) for s in range(MAX_SERVERS)],
            json_clients=[GodotClient(url, binary_step=False) for url in urls],
            binary_clients=[GodotClient(url, binary_step=True) for url in urls],
            polling_client=GodotClient(polling_url, busy_poll=BUSY_POLL_SECONDS),
            godot_env=godot_env,
        )
        for client in (*setup.json_clients, *setup.binary_clients, setup.polling_client):
            stack.callback(self.loop.run_until_complete, client.close())
            self.loop.run_until_complete(client.spec())
        return setup

    def _round(self, n: int, setup: _Setup) -> None:
        bank = actions_bank(n)
        worlds, json_clients, godot_env = setup.worlds, setup.json_clients, setup.godot_env
        for k in range(1, MAX_SERVERS + 1):

            def in_process(i: int, k: int = k) -> None:
                for world in worlds[:k]:
                    step_world(world, bank[i % _ACTION_BANK])

            self.samples.add(("env", n, k, "in-process"), rate(in_process, n * k, self.seconds))
            transports = [("json", json_clients), ("binary", setup.binary_clients)]
            if k == 1:
                transports.append(("binary, busy poll", [setup.polling_client]))
            for name, clients in transports:

                def over_http(i: int, k: int = k, clients: list[GodotClient] = clients) -> None:
                    # as the VecEnv steps: send to every server, then read each answer
                    for client in clients[:k]:
                        client.send_step(bank[i % _ACTION_BANK], auto_reset=True)
                    for client in clients[:k]:
                        client.receive_step()

                self.samples.add(("env", n, k, name), rate(over_http, n * k, self.seconds))
        if n in SEED_ENDPOINT_AGENTS:
            client = json_clients[0]

            def three_calls(i: int) -> None:
                async def calls() -> None:
                    await client.send_action(bank[i % _ACTION_BANK])
                    await client.get_observation()
                    await client.get_state()

                self.loop.run_until_complete(calls())

            self.samples.add(("seed", n, 1, "seed endpoints"), rate(three_calls, n, self.seconds))
            # the seed endpoints never reset: start every episode again before /rl/step takes over
            self.loop.run_until_complete(client.reset())

        def godot_rl_step(i: int) -> None:
            godot_env.step([bank[i % _ACTION_BANK]])

        self.samples.add(("godot_rl", n, 1, "godot_rl"), rate(godot_rl_step, n, self.seconds))
