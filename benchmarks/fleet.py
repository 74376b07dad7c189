"""A fleet: N simulator servers that each wait a fixed physics time per step (`--step-delay-ms`, as
Godot's physics takes time), stepped at once as `SpaceTimeVecEnv` steps them; agent-steps/s for
1 to 8 servers, and PPO steps/s for 1 and 8.

The delay is waiting, not CPU, so on a small machine N servers should give nearly N times one
server's rate: what is lost is the client's and the servers' own CPU per step. Every server
sleeps while it waits for a request (`env.busy_poll=off`): eight spinning servers would fight
for two cores.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from benchmarks.throughput import actions_bank, rate
from benchmarks.training import TrainingRate, measure_training, train_config
from spacetime_rl.config import EnvConfig
from spacetime_rl.godot import GodotClient
from spacetime_rl.godot.launcher import launch_servers
from spacetime_rl.protocol import wire

FLEET_SIZES: Final = (1, 2, 4, 8)
PPO_FLEET_SIZES: Final = (1, 2, 8)
STEP_DELAY_MS: Final = 5.0
AGENTS: Final = wire.DEFAULT_AGENTS
#: Overrides of the PPO runs: servers as in the throughput runs (quick_test's hyperparameters).
PPO_OVERRIDES: Final = (
    "env.connect_timeout=60",  # a busy shared machine starts eight servers slowly
    f"env.agents_per_environment={AGENTS}",
    f"env.step_delay_ms={STEP_DELAY_MS:g}",
    "env.busy_poll=off",
)


@dataclass
class FleetSamples:
    """Per repeat: agent-steps/s by servers, and PPO rates by (servers, training.rollout)."""

    steps: dict[int, list[float]] = field(default_factory=dict)
    ppo: dict[tuple[int, str], list[TrainingRate]] = field(default_factory=dict)


def measure_fleet(
    seconds: float, repeats: int, rollouts: int, sizes: Sequence[int] = FLEET_SIZES
) -> FleetSamples:
    """Each repeat steps the first N of max(sizes) servers for every N, then trains PPO over 1, 2 and
    8 fresh servers, serially and (2 and 8) overlapped: all in one run, interleaved, so a busy phase
    of the machine hits every size."""
    samples = FleetSamples()
    config = EnvConfig(
        num_environments=max(sizes),
        agents_per_environment=AGENTS,
        step_delay_ms=STEP_DELAY_MS,
        busy_poll="off",
        connect_timeout=60,  # as PPO_OVERRIDES: eight servers started at load 9 missed the default 10 s
    )
    bank = actions_bank(AGENTS)
    for _ in range(repeats):
        with contextlib.ExitStack() as stack:
            urls = stack.enter_context(launch_servers(config, seed=0))
            loop = asyncio.new_event_loop()
            stack.callback(loop.close)
            clients = [GodotClient(url) for url in urls]
            for client in clients:
                stack.callback(loop.run_until_complete, client.close())
                loop.run_until_complete(client.spec())
            for n in sizes:

                def step(i: int, n: int = n, clients: list[GodotClient] = clients) -> None:
                    # as the VecEnv steps: send to every server, then read each answer
                    for client in clients[:n]:
                        client.send_step(bank[i % len(bank)], auto_reset=True)
                    for client in clients[:n]:
                        client.receive_step()

                samples.steps.setdefault(n, []).append(rate(step, AGENTS * n, seconds))
        for n in PPO_FLEET_SIZES:
            for mode in ("serial", "overlapped") if n > 1 else ("serial",):
                training = train_config(
                    [f"env.num_environments={n}", f"training.rollout={mode}", *PPO_OVERRIDES]
                )
                samples.ppo.setdefault((n, mode), []).append(measure_training(training, "http", rollouts))
    return samples
