"""`SpaceTimeVecEnv`: an SB3 VecEnv over N agents on one or more protocol v1 servers.

`step_async` sends one `/rl/step` per server and `step_wait` reads the answers (the transports'
blocking `send_step`/`receive_step`), so the servers step concurrently; resets and the rest run
concurrently on an event loop the VecEnv owns. `send_group`/`receive_group` do the same for a
contiguous group of servers (`server_groups`) and their agents alone, by the same code, so a
trainer can serve one group while another steps (`training/overlapped.py`); `receive_group` is
`observe_group` (what the policy needs to act again) then `score_group` (rewards, infos), which a
trainer may run after sending the group's next actions. Finished agents are
reset by the server (auto_reset); agents cut by the client-side time limit, and agents whose reset
options changed (the curriculum), are reset with one batched `/rl/reset` per server.

A server that faults (unreachable, timed out, an error status, an answer breaking the protocol) is
handed to the `recover` callback, which restarts it or waits for it
(`godot.launcher.ServerPool.recovery`) and returns a new transport; its agents' episodes are then
truncated, with the last good observation as `terminal_observation`, and every agent starts afresh.
Nothing from the faulty answer reaches the policy. Without `recover`, or once it gives up, the error
propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TypeGuard, TypeVar

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from spacetime_rl.config import EnvConfig, RewardConfig, TasksConfig
from spacetime_rl.envs.episodes import EpisodeTracker
from spacetime_rl.envs.preprocessing import preprocess_observations
from spacetime_rl.envs.tasks import TaskSchedule
from spacetime_rl.errors import ConfigError, GodotError, SpecMismatchError
from spacetime_rl.godot.launcher import ServerPool
from spacetime_rl.protocol import Events, ResetResult, RLSpec, StepResult, wire
from spacetime_rl.rewards import REWARD_TERMS

__all__ = [
    "AgentTransport",
    "GroupAnswer",
    "SpaceTimeVecEnv",
    "make_clients",
    "observation_space",
    "reset_options",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Recover-and-reconnect attempts for one fault; `recover` itself bounds restarts over time.
RECOVERY_ATTEMPTS = 3


class AgentTransport(Protocol):
    """The seam between the VecEnv and a server: `GodotClient` or an in-process adapter."""

    async def spec(self) -> RLSpec: ...

    async def reset(
        self,
        seed: int | None = None,
        agents: Sequence[int] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> ResetResult: ...

    def send_step(self, actions: np.ndarray, auto_reset: bool = False) -> None: ...

    def receive_step(self) -> StepResult: ...  # raises the send's GodotError too

    async def close(self) -> None: ...


#: Called with a server's index and its fault; returns a new transport to it, or raises to give up.
Recovery = Callable[[int, GodotError], Awaitable[AgentTransport]]


def observation_space(task_block: int = 0) -> spaces.Box:
    """The policy's observations: the 48 wire floats, then `task_block` task one-hot floats."""
    return spaces.Box(-np.inf, np.inf, shape=(wire.OBSERVATION_SIZE + task_block,), dtype=np.float32)


def action_space() -> spaces.Box:
    return spaces.Box(-1.0, 1.0, shape=(wire.ACTION_SIZE,), dtype=np.float32)


def reset_options(config: EnvConfig, max_goal_distance: float | None = None) -> dict[str, Any]:
    """The reset options every server understands, from the env config (and a curriculum stage)."""
    maximum = config.max_goal_distance if max_goal_distance is None else max_goal_distance
    return {
        "min_goal_distance": min(config.min_goal_distance, maximum),
        "max_goal_distance": maximum,
        "max_speed": config.max_speed,
        "max_rotation_speed": config.max_rotation_speed,
        "turn_mode": config.turn_mode,
    }


def make_clients(urls: Sequence[str], config: EnvConfig, name: str = "env.url") -> list[Any]:
    """One `GodotClient` per URL, with the env's token, timeouts and busy polling; `name` says in
    messages which server it is (a launcher's `describe(url)`, or the config key)."""
    from spacetime_rl.godot.client import GodotClient, Timeouts

    timeouts = Timeouts(connect=config.connect_timeout, request=config.request_timeout)
    return [
        GodotClient(
            url,
            token=config.token,
            timeouts=timeouts,
            name=name,
            binary_step=config.binary_step,
            busy_poll=config.client_busy_poll(),
        )
        for url in urls
    ]


def with_server_agents(config: EnvConfig) -> EnvConfig:
    """`config` with every server's agent count known: as given for launched servers; attached, each
    server's `/rl/spec` after loading `env.scene` as the VecEnv will (null: one count per server,
    a given count: checked against every server)."""
    if not config.attached:
        return config

    async def ask(index: int, url: str) -> int:
        async with make_clients([url], config, name=config.url_name(index))[0] as client:
            await client.load_scene(config.scene)
            return (await client.spec()).num_agents

    async def ask_all() -> list[int]:
        return list(await asyncio.gather(*(ask(i, url) for i, url in enumerate(config.urls))))

    counts = asyncio.run(ask_all())
    given = config.agents_per_environment
    if given is not None:
        for index, (url, wanted, count) in enumerate(
            zip(config.urls, config.server_agents, counts, strict=True)
        ):
            if count != wanted:
                raise ConfigError(
                    f"env.agents_per_environment={given!r} but server {index} at {url} "
                    f"({config.url_name(index)}) runs {count} agents: set env.agents_per_environment=null "
                    "to take each server's own count, or start that server with the count given"
                )
        return config
    for index, (url, count) in enumerate(zip(config.urls, counts, strict=True)):
        log.info(
            "env.agents_per_environment=null: server %d at %s (%s) runs %d agents",
            index,
            url,
            config.url_name(index),
            count,
        )
    return dataclasses.replace(config, agents_per_environment=counts)


def connector(pool: ServerPool) -> Callable[[str], Any]:
    """Makes the client of a pool's server by URL, named for messages (`train server 0 (..., pid N)`);
    what `SpaceTimeVecEnv` gets at start and, through `pool.recovery`, after a restart. The pool's
    config has the servers' token (a Ray pool may have generated it)."""
    config = pool.config

    def connect(url: str) -> Any:
        # attached: named by its config key, so the client's hints name env.token and the like
        name = pool.describe(url) if pool.launched else config.url_name(pool.urls.index(url))
        return make_clients([url], config, name=name)[0]

    return connect


async def _close_quietly(transport: AgentTransport) -> None:
    # Closing must release every transport even when one of them is already broken.
    with contextlib.suppress(Exception):
        await transport.close()


class GroupAnswer(NamedTuple):
    """A group's answer to a step as `SpaceTimeVecEnv.observe_group` leaves it for `score_group`;
    every array has a row per agent of the group (k)."""

    agents: slice  # the group's env indices
    raw: np.ndarray  # the next step's first raw observations (new episodes' after resets)
    final: np.ndarray  # the step's last raw observations (the terminal ones of ended episodes)
    applied: np.ndarray  # the step's actions as sent (smoothed)
    events: Events
    tasks: np.ndarray  # the task each agent ran the step under
    time_limit: np.ndarray  # cut by max_episode_steps without finishing
    faulted: np.ndarray  # truncated by a server fault
    ended: np.ndarray  # done, cut or faulted: a new episode starts


class SpaceTimeVecEnv(VecEnv):
    """N = sum of the servers' agents; env index i is agent i - offset[s] of server s.

    Observations are preprocessed (`preprocessing.py`), rewards come from `rewards.py`, and at an
    episode's end `infos[i]` carries `terminal_observation`, `TimeLimit.truncated`, Monitor's
    `episode` {r, l}, `is_success` and `episode_stats` (collisions, falls, teleports, mean comfort,
    final goal distance, the sum of each reward term).

    `get_attr`, `set_attr` and `env_method` act on this object: every agent shares its settings.

    `faults` counts server faults recovered from, `lost_agent_steps` the agent-steps they cost
    (the step of every agent of a faulty server, which gets a zero-event stand-in transition).
    """

    render_mode = None

    def __init__(
        self,
        transports: Sequence[AgentTransport],
        env_config: EnvConfig,
        reward_config: RewardConfig,
        *,
        seed: int | None = None,
        recover: Recovery | None = None,
        tasks: TasksConfig | None = None,
    ) -> None:
        self.config = env_config
        self._transports = list(transports)
        self._recover = recover
        self.faults = 0
        self.lost_agent_steps = 0
        self._loop = asyncio.new_event_loop()
        self._closed = False
        try:
            specs = self._gather(self._prepare(t) for t in self._transports)
        except BaseException:
            self.close()
            raise
        counts = [spec.num_agents for spec in specs]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._slices = [
            slice(int(a), int(b)) for a, b in zip(self._offsets[:-1], self._offsets[1:], strict=True)
        ]
        num_agents = int(self._offsets[-1])
        tasks = tasks or TasksConfig()
        self._tasks = TaskSchedule(tasks, num_agents, seed)
        self._tasks.check_servers(specs)
        self._tracker = EpisodeTracker(num_agents, env_config, tasks.reward_configs(reward_config))
        self._server_options = reset_options(env_config)
        self._stale_options = np.zeros(num_agents, dtype=bool)
        self._seed = seed
        self._warned_ignored = False
        self._servers = range(len(self._transports))
        self._applied = np.zeros((num_agents, wire.ACTION_SIZE))  # smoothed, as sent
        self._last_raw = np.zeros((num_agents, wire.OBSERVATION_SIZE), dtype=np.float32)
        super().__init__(num_agents, observation_space(self._tasks.size), action_space())

    # ---------------------------------------------------------------- VecEnv API

    def reset(self) -> np.ndarray:
        seeds = [None if self._seed is None else self._seed + s for s in range(len(self._transports))]
        if self._seed is not None:
            self._tasks.reseed(self._seed)
        self._seed = None
        self._tasks.draw(np.ones(self.num_envs, dtype=bool))
        results, faults = self._settle(
            self._reset_server(s, t, seed=seed)
            for s, (t, seed) in enumerate(zip(self._transports, seeds, strict=True))
        )
        fresh = self._recover_all(faults)
        ignored = sorted({key for r in results if r is not None for key in r.ignored_options})
        if ignored and not self._warned_ignored:
            self._warned_ignored = True
            warnings.warn(
                f"the server ignores reset options {ignored}: episodes run with its defaults", stacklevel=2
            )
        raw = np.concatenate([fresh[s] if r is None else r.observations for s, r in enumerate(results)])
        self._stale_options[:] = False
        self._last_raw = raw
        self._tracker.start(raw)
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self._observe(raw, self._tasks.ids)

    def step_async(self, actions: np.ndarray) -> None:
        self.send_group(self._servers, actions)

    def step_wait(self) -> VecEnvStepReturn:
        return self.receive_group(self._servers)

    def server_groups(self, count: int) -> list[range]:
        """The servers in `count` contiguous groups of near-equal size (one per server if fewer)."""
        bounds = np.linspace(0, len(self._transports), min(count, len(self._transports)) + 1).round()
        return [range(int(a), int(b)) for a, b in itertools.pairwise(bounds)]

    def agents_of(self, servers: range) -> slice:
        """The env indices of the agents of `servers` (a contiguous range of them)."""
        return slice(int(self._offsets[servers.start]), int(self._offsets[servers.stop]))

    def send_group(self, servers: range, actions: np.ndarray) -> None:
        """Send one step of `actions` (k, 3), the policy's for the agents of `servers`, to them.

        `step_async` is this for every server; with a group at a time the other groups' servers can
        step while their next actions are computed (training.rollout=overlapped).
        """
        agents = self.agents_of(servers)
        raw = np.asarray(actions).reshape(agents.stop - agents.start, wire.ACTION_SIZE)
        self._applied[agents] = self._tracker.smooth(raw, agents)
        for server in servers:
            self._transports[server].send_step(self._applied[self._slices[server]], auto_reset=True)

    def receive_group(self, servers: range) -> VecEnvStepReturn:
        """Read the step `send_group(servers, ...)` sent: observations, rewards, dones and infos of
        their agents only (`agents_of(servers)`), computed as `step_wait` computes every agent's."""
        obs, answer = self.observe_group(servers)
        rewards, infos = self.score_group(answer)
        return obs, rewards, answer.ended, infos

    def observe_group(self, servers: range) -> tuple[np.ndarray, GroupAnswer]:
        """`receive_group` up to what the policy needs to act again: the group's answers read,
        faults recovered, time limits and task changes applied, and its agents' observations.

        Pass the answer to `score_group` exactly once, before this group's next `observe_group`; that
        may wait until the group's next actions are sent, so its servers step meanwhile
        (training.rollout=overlapped).
        """
        agents = self.agents_of(servers)
        base = agents.start
        outcomes: list[StepResult | BaseException] = []
        for server in servers:
            try:
                outcomes.append(self._transports[server].receive_step())
            except Exception as error:  # every server is read before any error is raised
                outcomes.append(error)
        results, group_faults = self._sort_faults(outcomes)
        faults = {servers[i]: fault for i, fault in group_faults.items()}
        fresh = self._recover_all(faults)
        # A faulty server's agents: their new episodes' first observations, no events, not done.
        pairs = list(zip(servers, results, strict=True))
        raw = np.concatenate([fresh[s] if r is None else r.observations for s, r in pairs])
        done = np.concatenate([np.zeros(len(fresh[s]), bool) if r is None else r.done for s, r in pairs])
        events = Events(
            *(
                np.concatenate(
                    [np.zeros(len(fresh[s]), int) if r is None else getattr(r.events, name) for s, r in pairs]
                )
                for name in wire.EVENT_FIELDS
            )
        )
        faulted = self._agents_of(faults)[agents]
        final = raw.copy()  # each agent's last observation of this step; `raw` gets the resets
        final[faulted] = self._last_raw[agents][faulted]
        for server, result in pairs:
            for agent, last in result.terminal_observations.items() if result is not None else ():
                final[self._offsets[server] - base + agent] = last
        time_limit = self._tracker.count(done, agents)
        tasks = self._tasks.ids[agents].copy()  # the step's; the draw below changes the ended agents'
        new_task = self._tasks.draw(self._spread(agents, (time_limit | done) & ~faulted))[agents]
        client_reset = (time_limit | (done & (self._stale_options[agents] | new_task))) & ~faulted
        faulted |= self._reset_agents(raw, client_reset, base) & ~done
        ended = done | time_limit | faulted
        if ended.any():
            self._tracker.restart_actions(self._spread(agents, ended))
        self._last_raw[agents] = raw
        obs = self._observe(raw, self._tasks.ids[agents])
        # the applied actions are copied: the group's next send_group overwrites them
        answer = GroupAnswer(
            agents, raw, final, self._applied[agents].copy(), events, tasks, time_limit, faulted, ended
        )
        return obs, answer

    def score_group(self, answer: GroupAnswer) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The rest of `receive_group` for an `observe_group` answer: its agents' rewards and infos,
        and their finished episodes' stats closed."""
        agents = answer.agents
        final, events, ended = answer.final, answer.events, answer.ended
        rewards = self._tracker.score(final, answer.applied, events, answer.time_limit, agents, answer.tasks)
        infos: list[dict[str, Any]] = [{} for _ in range(len(final))]
        if ended.any():
            rows = np.flatnonzero(ended)
            terminal = self._observe(final[rows], answer.tasks[rows])
            for index, row in enumerate(rows.tolist()):
                truncated = bool(answer.time_limit[row] or answer.faulted[row])
                info = self._tracker.episode_info(agents.start + row, final[row], events, truncated, row)
                info["terminal_observation"] = terminal[index]
                info["task"] = self._tasks.names[answer.tasks[row]]
                if answer.faulted[row]:
                    info["server_fault"] = True
                infos[row] = info
            self._tracker.restart_stats(answer.raw[ended], self._spread(agents, ended))
        return rewards, infos

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._gather(_close_quietly(t) for t in self._transports)
        finally:
            self._loop.close()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seed the next `reset()`: server s gets seed + s, and its agent i draws from (seed + s, i)."""
        if seed is None:
            seed = int(np.random.randint(0, np.iinfo(np.uint32).max, dtype=np.uint32))
        self._seed = seed
        return [seed + s for s in range(len(self._transports))]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if len(self._indices(indices)) != self.num_envs:
            raise ValueError(
                f"{type(self).__name__} agents share their attributes; set {attr_name!r} for all"
            )
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result] * len(self._indices(indices))

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    # ---------------------------------------------------------------- beyond SB3

    @property
    def max_goal_distance(self) -> float:
        return float(self._server_options["max_goal_distance"])

    def set_max_goal_distance(self, distance: float) -> None:
        """Goals of every episode that starts from now on lie at most `distance` metres away."""
        if not (math.isfinite(distance) and distance > 0):
            raise ConfigError(f"max_goal_distance={distance!r} is invalid: use a positive number of metres")
        self._server_options = reset_options(self.config, distance)
        self._stale_options[:] = True

    def set_task_max_goal_distances(self, distances: Mapping[str, float]) -> None:
        """Goals of the named tasks' episodes that start from now on lie at most so many metres away."""
        for name, distance in distances.items():
            if name not in self._tasks.names or not (math.isfinite(distance) and distance > 0):
                raise ConfigError(
                    f"task {name!r} max_goal_distance={distance!r} is invalid: use a task of "
                    f"{list(self._tasks.names)} and a positive number of metres"
                )
        self._stale_options |= self._tasks.set_max_goal_distances(distances)

    def settings(self) -> dict[str, Any]:
        """What this env runs with now, read from its working parts (metrics.json records it).

        Per task: its share of episodes, the reset options its episodes start with (goal
        distances, scenario, speeds) and the reward weights they are scored with.
        """
        weights = self._tracker.rewards.weights
        return {
            "agents": self.num_envs,
            "server_agents": [s.stop - s.start for s in self._slices],
            "observation_size": int(self.observation_space.shape[0]),  # type: ignore[index]
            "max_episode_steps": self._tracker.max_episode_steps,
            "action_smoothing": self._tracker.smoother.smoothing,
            "tasks": {
                name: {
                    "probability": float(probability),
                    "reset_options": self._tasks.options(index, self._server_options),
                    "reward": {
                        term: float(w) for term, w in zip(REWARD_TERMS, weights[:, index], strict=True)
                    },
                }
                for index, (name, probability) in enumerate(
                    zip(self._tasks.names, self._tasks.probabilities, strict=True)
                )
            },
        }

    def performance(self) -> list[dict[str, Any]]:
        """Each server's `/performance` answer (servers without the endpoint are skipped)."""
        calls = [
            t.get_performance_metrics() for t in self._transports if hasattr(t, "get_performance_metrics")
        ]
        # A fault here is left for the next step to find and recover from.
        results, _ = self._settle(calls)
        return [r for r in results if r is not None]

    # ---------------------------------------------------------------- internals

    def _gather(self, calls: Iterable[Awaitable[T]]) -> list[T]:
        """Run `calls` concurrently on this VecEnv's loop; results in order."""

        async def gather() -> list[T]:
            return await asyncio.gather(*calls)

        return self._loop.run_until_complete(gather())

    def _settle(self, calls: Iterable[Awaitable[T]]) -> tuple[list[T | None], dict[int, GodotError]]:
        """Run `calls` concurrently to the end; results in order, None where a recoverable fault was raised."""

        async def gather() -> list[T | BaseException]:
            return await asyncio.gather(*calls, return_exceptions=True)

        return self._sort_faults(self._loop.run_until_complete(gather()))

    def _sort_faults(
        self, outcomes: Iterable[T | BaseException]
    ) -> tuple[list[T | None], dict[int, GodotError]]:
        """Results in order, None where a recoverable fault was raised; other errors are raised."""
        results: list[T | None] = []
        faults: dict[int, GodotError] = {}
        for index, result in enumerate(outcomes):
            if isinstance(result, BaseException):
                if not self._recoverable(result):
                    raise result
                faults[index] = result
                results.append(None)
            else:
                results.append(result)
        return results, faults

    def _recoverable(self, error: BaseException) -> TypeGuard[GodotError]:
        # A spec mismatch will not go away by restarting the same server.
        return (
            self._recover is not None
            and isinstance(error, GodotError)
            and not isinstance(error, SpecMismatchError)
        )

    def _recover_all(self, faults: Mapping[int, GodotError]) -> dict[int, np.ndarray]:
        """Recover each faulty server; returns its agents' new first observations, raw (n_s, 48)."""
        return {
            s: self._loop.run_until_complete(self._recover_server(s, fault)) for s, fault in faults.items()
        }

    async def _recover_server(self, server: int, fault: GodotError) -> np.ndarray:
        assert self._recover is not None
        agents = self._slices[server].stop - self._slices[server].start
        self.faults += 1
        self.lost_agent_steps += agents
        name = self._server_name(server)
        log.warning("%s faulted, recovering (its %d episodes are truncated): %s", name, agents, fault)
        for _ in range(RECOVERY_ATTEMPTS):
            await _close_quietly(self._transports[server])
            self._transports[server] = transport = await self._recover(server, fault)
            try:
                spec = await self._prepare(transport)
                if spec.num_agents != agents:
                    raise ConfigError(
                        f"{name} came back with {spec.num_agents} agents instead of {agents}: "
                        "restart training with env.agents_per_environment matching the server"
                    )
                result = await self._reset_server(server, transport)
            except GodotError as error:
                if not self._recoverable(error):
                    raise
                fault = error
                log.warning("%s failed again while recovering: %s", name, fault)
                continue
            self._stale_options[self._slices[server]] = False
            observations: np.ndarray = result.observations
            return observations
        raise fault

    def _server_name(self, server: int) -> str:
        transport = self._transports[server]
        name = str(getattr(transport, "name", f"server {server}"))
        # An attached server's client is named by its config key (env.url[1]), which lacks the URL.
        return f"{name} at {transport.url}" if name.startswith("env.url") else name  # type: ignore[attr-defined]

    def _spread(self, agents: slice, values: np.ndarray) -> np.ndarray:
        """An (N,) mask: `values` (k,) at `agents`, False elsewhere."""
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[agents] = values
        return mask

    def _agents_of(self, servers: Iterable[int]) -> np.ndarray:
        mask = np.zeros(self.num_envs, dtype=bool)
        for server in servers:
            mask[self._slices[server]] = True
        return mask

    async def _prepare(self, transport: AgentTransport) -> RLSpec:
        if self.config.kind == "godot":
            await transport.load_scene(self.config.scene)  # type: ignore[attr-defined]
        return await transport.spec()

    def _reset_agents(self, raw: np.ndarray, client_reset: np.ndarray, base: int = 0) -> np.ndarray:
        """`/rl/reset` the agents flagged in `client_reset` (k,), writing their rows of `raw` (k, 48):
        env indices `base` to `base + k`.

        Returns those of them on servers that faulted meanwhile: recovered, all their agents restarted.
        """
        agents = np.flatnonzero(client_reset) + base
        rows = slice(base, base + len(raw))
        if not agents.size:
            return np.zeros(len(raw), dtype=bool)
        servers = np.searchsorted(self._offsets, agents, side="right") - 1
        batches = [(s, agents[servers == s]) for s in np.unique(servers).tolist()]
        results, faults = self._settle(
            self._reset_server(s, self._transports[s], agents=batch - self._offsets[s])
            for s, batch in batches
        )
        for (_, batch), result in zip(batches, results, strict=True):
            if result is not None:
                raw[batch - base] = result.observations
        self._stale_options[agents] = False
        faulted_servers = {batches[i][0]: fault for i, fault in faults.items()}
        for server, observations in self._recover_all(faulted_servers).items():
            raw[self._slices[server].start - base : self._slices[server].stop - base] = observations
        return self._agents_of(faulted_servers)[rows]

    async def _reset_server(
        self,
        server: int,
        transport: AgentTransport,
        seed: int | None = None,
        agents: np.ndarray | None = None,
    ) -> ResetResult:
        """`/rl/reset` a server's `agents` (its own indices; all when None) with their tasks' options:
        one call per task among them, in the agents' order (a seed applies per agent, so the split
        changes nothing)."""
        size = self._slices[server].stop - self._slices[server].start
        local = np.arange(size) if agents is None else agents
        tasks = self._tasks.ids[self._offsets[server] + local]
        groups = np.unique(tasks).tolist()
        if len(groups) <= 1:  # one call, exactly as without tasks
            options = self._tasks.options(groups[0] if groups else 0, self._server_options)
            return await transport.reset(
                seed=seed, agents=None if agents is None else local.tolist(), options=options
            )
        observations = np.empty((local.size, wire.OBSERVATION_SIZE), dtype=np.float32)
        ignored: set[str] = set()
        for task in groups:
            rows = np.flatnonzero(tasks == task)
            options = self._tasks.options(task, self._server_options)
            result = await transport.reset(seed=seed, agents=local[rows].tolist(), options=options)
            observations[rows] = result.observations
            ignored.update(result.ignored_options)
        return ResetResult(observations, tuple(sorted(ignored)))

    def _observe(self, raw: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        """Policy observations of raw rows: preprocessed, then the task block of `tasks` (rows')."""
        obs = preprocess_observations(raw, heading_frame=self.config.heading_frame)
        return np.concatenate([obs, self._tasks.one_hot(tasks)], axis=1) if self._tasks.size else obs

    def _indices(self, indices: VecEnvIndices) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return list(indices)
