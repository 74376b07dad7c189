"""Attaching to a fleet: two simulator processes with different agent counts, as two Godot hosts."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import numpy as np
import pytest
from sim_process import SimProcess

from spacetime_rl.config import EnvConfig, RewardConfig
from spacetime_rl.envs import SpaceTimeVecEnv, connector, with_server_agents
from spacetime_rl.errors import ConfigError, GodotConnectionError
from spacetime_rl.godot.launcher import ServerPool
from spacetime_rl.protocol import wire

TOKEN = "fleet-token"
COUNTS = (4, 6)


@pytest.fixture(scope="module")
def fleet() -> Iterator[list[SimProcess]]:
    servers = [SimProcess("--agents", str(count), "--token", TOKEN) for count in COUNTS]
    yield servers
    for server in servers:
        if server.process.poll() is None:
            server.stop()


def attached(servers: list[SimProcess], **changes: object) -> EnvConfig:
    return EnvConfig(
        kind="godot",
        url=[server.url for server in servers],
        token=TOKEN,
        agents_per_environment=None,
        **changes,  # type: ignore[arg-type]
    )


def test_each_server_tells_its_own_count_and_the_total_is_their_sum(fleet: list[SimProcess]) -> None:
    config = with_server_agents(attached(fleet))
    assert config.server_agents == [4, 6] and config.num_agents == 10 and config.servers == 2


def test_a_given_count_that_a_server_does_not_run_names_that_server(fleet: list[SimProcess]) -> None:
    with pytest.raises(ConfigError) as info:
        with_server_agents(dataclasses.replace(attached(fleet), agents_per_environment=4))
    assert str(info.value).startswith(
        f"env.agents_per_environment=4 but server 1 at {fleet[1].url} (env.url[1]) runs 6 agents"
    )
    assert "env.agents_per_environment=null" in str(info.value)


def test_a_server_that_dies_mid_run_is_named_when_training_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    servers = [SimProcess("--agents", str(count), "--token", TOKEN) for count in COUNTS]
    try:
        config = with_server_agents(
            attached(servers, retries=2, retry_backoff=0.01, request_timeout=2.0, max_episode_steps=1000)
        )
        pool = ServerPool(config, role="train")
        urls = pool.start()
        venv = SpaceTimeVecEnv(
            [connector(pool)(url) for url in urls],
            config,
            RewardConfig(),
            recover=pool.recovery(connector(pool)),
        )
        try:
            venv.reset()
            actions = np.zeros((10, wire.ACTION_SIZE), dtype=np.float32)
            venv.step(actions)
            servers[1].process.kill()
            servers[1].process.wait()
            with caplog.at_level(logging.WARNING), pytest.raises(GodotConnectionError) as failure:
                venv.step(actions)
        finally:
            venv.close()
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.stop()
    name = f"train server 1 at {servers[1].url} (env.url[1])"
    assert str(failure.value).startswith(f"{name} did not recover")
    assert f"curl {servers[1].url}/health" in str(failure.value)
    assert f"env.url[1] at {servers[1].url} faulted, recovering (its 6 episodes are truncated)" in caplog.text
    assert f"{name} faulted" in caplog.text and "retry 2/2" in caplog.text
    assert servers[0].url not in str(failure.value)
