"""Fault-injection soak: a 30,000-step training run whose simulators are killed, frozen and made to
answer garbage. Training must finish; the faults and the agent-steps they cost are counted.

Every server is reached through a `CorruptingProxy`, which triggers the faults by the global count
of `/rl/step` requests (training and evaluation servers alike), so the run is reproducible.
Slow (about a minute on two busy cores): `make test-slow`.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from fault_injection import CorruptingProxy, server_process, stop_for

import spacetime_rl.envs.vec_env as vec_env
from spacetime_rl.config import EnvConfig, NetworkConfig, PPOConfig, TrainConfig, TrainingConfig
from spacetime_rl.training import train

REQUEST_TIMEOUT = 2.0
#: /rl/step request number -> fault. Kill and freeze the server; three kinds of garbage.
SCHEDULE = {
    300: "kill",
    700: "stop",
    1100: "not_json",
    1300: "nan",
    1500: "wrong_shape",
}


@pytest.mark.slow
def test_training_survives_killed_frozen_and_garbage_talking_servers(tmp_path: Path, monkeypatch):
    proxies: list[CorruptingProxy] = []
    steps = 0
    lock = threading.Lock()
    injected: list[str] = []
    timers: list[threading.Timer] = []

    def make_proxy(url: str) -> CorruptingProxy:
        proxy = CorruptingProxy(url)

        def before_step(_: int) -> None:
            nonlocal steps
            with lock:
                steps += 1
                fault = SCHEDULE.get(steps)
            if fault is None:
                return
            injected.append(fault)
            if fault == "kill":
                server_process(proxy.target).kill()
            elif fault == "stop":  # frozen for longer than the client waits
                timers.append(stop_for(server_process(proxy.target), REQUEST_TIMEOUT * 3))
            else:
                proxy.corrupt(fault)

        proxy.before_step = before_step
        proxies.append(proxy)
        return proxy

    real_make_clients = vec_env.make_clients
    monkeypatch.setattr(
        vec_env,
        "make_clients",
        lambda urls, config, name="env.url": real_make_clients(
            [make_proxy(u).url for u in urls], config, name
        ),
    )
    config = TrainConfig(
        env=EnvConfig(
            agents_per_environment=16, max_episode_steps=100, request_timeout=REQUEST_TIMEOUT, max_restarts=10
        ),
        network=NetworkConfig(net_arch=[32, 32]),
        ppo=PPOConfig(n_steps=64, batch_size=512, n_epochs=2),
        training=TrainingConfig(
            total_timesteps=30_000,
            save_freq=10_000,
            eval_freq=10_000,
            eval_episodes=16,
            progress_bar=False,
            torch_threads=1,
        ),
    )
    started = time.monotonic()
    try:
        objective = train(config, tmp_path)
    finally:
        for timer in timers:
            timer.cancel()
        for proxy in proxies:
            proxy.close()
    wall = time.monotonic() - started

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    faults = metrics["server_faults"]
    print(f"\nsoak: {wall:.0f} s, injected {injected}, {steps} steps proxied, faults {faults}")
    assert injected == list(SCHEDULE.values())
    assert faults["train"] + faults["eval"] == len(SCHEDULE)  # each fault seen once, each survived
    assert faults["restarts"] == len(SCHEDULE)
    assert metrics["num_timesteps"] >= config.training.total_timesteps
    assert faults["lost_agent_steps"] <= 16 * len(SCHEDULE)
    assert 0.0 <= objective <= 1.0
    assert (tmp_path / "final_model.zip").is_file()
