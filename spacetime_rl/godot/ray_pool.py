"""`env.launcher=ray`: the servers as Ray actors spread over a Ray cluster's nodes.

`RayServerPool` reserves a placement group of one 1-CPU bundle per server (strategy SPREAD: a node
each while there are nodes), and starts a `ServerActor` in each bundle. The actor runs a one-server
local `ServerPool` on its node, listening on the address Ray knows the node by (a network
address, so never without a token: env.token, or one generated for the run). The trainer then checks
each server's `/health` itself, so a node it cannot reach fails at start, naming the node.

A fault restarts the server through its actor, or through a new actor in the same bundle when
the actor itself died; both count against env.max_restarts as a local restart does. `stop()`
(normal exit, the job's Ctrl-C path, and at interpreter exit after a crash) stops every server,
kills the actors, removes the placement group and ends the Ray connection it opened. Ray ends a
dead trainer's actors and placement group itself, and a simulator whose actor is gone stops by
itself (--parent-pid).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Final

from spacetime_rl.config import EnvConfig
from spacetime_rl.errors import ConfigError, GodotError
from spacetime_rl.godot.launcher import _STOP_GRACE_SECONDS, ServerPool

__all__ = ["ACTOR_NAMESPACE", "RayServerPool", "ServerActor"]

log = logging.getLogger(__name__)

#: The Ray namespace of the server actors; each is named `<role>-<index>-<pool id>` in it.
ACTOR_NAMESPACE: Final = "spacetime_rl"
_INSTALL_FIX: Final = (
    "pip install -c constraints.txt -e '.[ray]' on this machine and every node (make install does)"
)


class ServerActor:
    """One server on a Ray node: a one-server local `ServerPool` bound to the node's address."""

    def __init__(self, config: EnvConfig, agents: int, seed: int | None) -> None:
        import ray

        self.node_id = ray.get_runtime_context().get_node_id()
        # The address Ray knows this node by (--node-ip-address): one the other nodes reach it at
        self.node = next(node["NodeManagerAddress"] for node in ray.nodes() if node["NodeID"] == self.node_id)
        self._pool = ServerPool(config, count=1, agents=agents, seed=seed, host=self.node)

    def start(self) -> dict[str, Any]:
        """Start the server; its URL, process id and node (address and Ray's id)."""
        _check_node(self._pool.config, self.node)
        url = self._pool.start()[0]
        return {"url": url, "pid": self._pool.pids[0], "node": self.node, "node_id": self.node_id}

    def restart(self) -> dict[str, Any]:
        self._pool.stop()
        return self.start()

    def stop(self) -> None:
        self._pool.stop()


def _check_node(config: EnvConfig, node: str) -> None:
    """Godot's binary and project exist on this node (the trainer's paths mean nothing here)."""
    if config.kind != "godot":
        return
    assert config.executable and config.project
    if shutil.which(config.executable) is None:
        raise ConfigError(
            f"env.executable={config.executable!r} is not an executable file on Ray node {node}: install "
            "Godot at that path on every node the servers may run on, or set env.executable to where it is"
        )
    if not (Path(config.project) / "project.godot").is_file():
        raise ConfigError(
            f"env.project={config.project!r} has no project.godot on Ray node {node}: copy the project "
            "(with the addon) to that path on every node, or set env.project to where it is"
        )


class RayServerPool(ServerPool):
    """`ServerPool`'s interface over Ray actors (module docstring). `config` carries the servers' token."""

    _connections = 0  # pools using the Ray connection this module opened
    _opened_ray = False

    def __init__(self, config: EnvConfig, **options: Any) -> None:
        super().__init__(config, **options)
        if config.token is None:  # the servers listen on the network: never without a token
            self.config = dataclasses.replace(config, token=secrets.token_urlsafe())
        self._id = uuid.uuid4().hex[:8]
        self._actors: list[Any] = []
        self._servers: list[dict[str, Any]] = []  # what each actor's start() said
        self._group: Any = None
        self._connected = False

    @property
    def name(self) -> str:
        what = "python -m spacetime_rl.sim" if self.config.kind == "sim" else str(self.config.executable)
        return f"{what} as a Ray actor"

    def describe(self, url: str) -> str:
        role = f"{self.role} " if self.role else ""
        if url not in self.urls:
            return f"{role}server {url} ({self.name})"
        index = self.urls.index(url)
        port = url.rsplit(":", 1)[-1]
        server = self._servers[index]
        return (
            f"{role}server {index} ({self.name} on node {server['node']}, port {port}, pid {server['pid']})"
        )

    @property
    def pids(self) -> list[int]:
        """The servers' process ids, each on its node (`record()` says which)."""
        return [server["pid"] for server in self._servers]

    def record(self) -> dict[str, Any]:
        return {
            "launcher": "ray",
            "ray_address": self.config.ray_address,
            "placement_group": self._group.id.hex() if self._group is not None else None,
            "servers": [
                server | {"actor": self._actor_name(index)} for index, server in enumerate(self._servers)
            ],
        }

    def start(self) -> list[str]:
        ray = _import_ray()
        atexit.register(self.stop)
        try:
            self._connect(ray)
            self._group = self._reserve(ray)
            self._actors = [self._new_actor(ray, index) for index in range(self.count)]
            self._servers = _unwrap(ray, lambda: ray.get([actor.start.remote() for actor in self._actors]))
            self.urls = [server["url"] for server in self._servers]
            asyncio.run(self._check_reachable())
        except BaseException:
            self.stop()
            raise
        nodes = collections.Counter(f"{server['node']} ({server['node_id'][:8]})" for server in self._servers)
        log.info(
            "started %d %sserver(s) x %d agents as Ray actors, per node: %s",
            self.count,
            f"{self.role} " if self.role else "",
            self.agents,
            ", ".join(f"{node} {count}" for node, count in nodes.items()),
        )
        return self.urls

    def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL after a grace period), kill the actors, remove
        the placement group and close the Ray connection if this module opened it."""
        atexit.unregister(self.stop)
        if not self._connected:
            return
        import ray

        with contextlib.suppress(Exception):  # a dead actor has nothing left to stop
            ray.wait(
                [actor.stop.remote() for actor in self._actors],
                num_returns=len(self._actors),
                timeout=_STOP_GRACE_SECONDS + 5,
            )
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        self._actors.clear()
        if self._group is not None:
            with contextlib.suppress(Exception):
                ray.util.remove_placement_group(self._group)
            self._group = None
        self._connected = False
        RayServerPool._connections -= 1
        if RayServerPool._connections == 0 and RayServerPool._opened_ray:
            ray.shutdown()
            RayServerPool._opened_ray = False

    async def restart(self, index: int, fault: GodotError | None = None) -> str:
        """Restart server `index` through its actor, or a new actor in its bundle if the actor died."""
        import ray

        self._count_restart(index, fault)
        try:
            started = await _awaited(ray, self._actors[index].restart.remote())
        except ray.exceptions.RayActorError as exc:
            log.warning(
                "the Ray actor of %s died (%s); starting a new one in its bundle",
                self.describe(self.urls[index]),
                str(exc).splitlines()[0],
            )
            with contextlib.suppress(Exception):
                ray.kill(self._actors[index])
            self._actors[index] = self._new_actor(ray, index)
            started = await _awaited(ray, self._actors[index].start.remote())
        self._servers[index] = started
        self.urls[index] = started["url"]
        await self._wait_healthy(index, self.urls[index], time.monotonic() + self.config.connect_timeout)
        log.warning(
            "restarted %s after a fault; its agents' episodes were truncated", self.describe(self.urls[index])
        )
        return self.urls[index]

    # ---------------------------------------------------------------- internals

    def _connect(self, ray: Any) -> None:
        """Join the cluster at env.ray_address (a Ray already joined, e.g. in a Ray task, is kept)."""
        if not ray.is_initialized():
            address = self.config.ray_address
            fix = (
                f"start the head there (ray start --head --port=PORT) or fix env.ray_address={address!r}; "
                "env.launcher=local runs the servers on this machine instead"
            )
            _check_head(address, self.config.connect_timeout, fix)
            handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError) as exc:
                raise ConfigError(f"env.launcher=ray could not join a Ray cluster ({exc}): {fix}") from exc
            RayServerPool._opened_ray = True
            # A Ray started here takes SIGTERM for itself; train.py's handler saves a checkpoint first
            # and stops this pool, which ends that Ray.
            if threading.current_thread() is threading.main_thread():
                for sig, handler in handlers.items():
                    if handler is not None:
                        signal.signal(sig, handler)
        RayServerPool._connections += 1
        self._connected = True

    def _reserve(self, ray: Any) -> Any:
        """A placement group of one 1-CPU bundle per server, ready; or a ConfigError with the numbers."""
        from ray.util.placement_group import placement_group

        total = int(ray.cluster_resources().get("CPU", 0))
        # Training starts one evaluation server after these: check for it now, before any starts.
        needed = self.count + (1 if self.role == "train" else 0)
        where = (
            f"the Ray cluster at {self.config.ray_address or os.environ.get('RAY_ADDRESS') or 'this machine'}"
        )
        fix = (
            "add nodes (ray start --address=<head> on each), start the head with more --num-cpus, or "
            "lower env.num_environments"
        )
        if total < needed:
            raise ConfigError(
                f"env.launcher=ray reserves one CPU per server, {needed} for {self.count} server(s) "
                f"(env.num_environments={self.config.num_environments})"
                f"{' and the evaluation server' if self.role == 'train' else ''}, but {where} has "
                f"{total} CPUs: {fix}"
            )
        group = placement_group([{"CPU": 1}] * self.count, strategy="SPREAD")
        try:
            ray.get(group.ready(), timeout=self.config.connect_timeout)
        except ray.exceptions.GetTimeoutError as exc:
            free = int(ray.available_resources().get("CPU", 0))
            ray.util.remove_placement_group(group)
            raise ConfigError(
                f"env.launcher=ray: {where} did not free {self.count} CPUs for the {self.role or 'launched'} "
                f"servers within env.connect_timeout={self.config.connect_timeout:g} s ({free} of {total} "
                f"free now; other jobs hold the rest): wait for them, or {fix}"
            ) from exc
        return group

    def _actor_name(self, index: int) -> str:
        return f"{self.role or 'server'}-{index}-{self._id}"

    def _new_actor(self, ray: Any, index: int) -> Any:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        seed = None if self.seed is None else self.seed + index
        actor = ray.remote(ServerActor).options(
            num_cpus=1,
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=self._group, placement_group_bundle_index=index
            ),
            name=self._actor_name(index),
            namespace=ACTOR_NAMESPACE,
            max_restarts=0,  # restarts are ours, counted against env.max_restarts
        )
        return actor.remote(self.config, self.agents, seed)

    async def _check_reachable(self) -> None:
        deadline = time.monotonic() + self.config.connect_timeout
        await asyncio.gather(*(self._wait_healthy(i, url, deadline) for i, url in enumerate(self.urls)))

    def _failure(self, index: int, kind: type[Exception], what: str) -> Exception:
        return kind(
            f"Server {index} ({self.name} on node {self._servers[index]['node']}) {what}. Check that this machine "
            f"reaches the node's address (a firewall, or a node address that only the node sees)"
        )


def _check_head(address: str | None, timeout: float, fix: str) -> None:
    """Fail at once when nothing listens at a `host:port` address: ray.init would retry for minutes."""
    host, colon, port = (address or "").removeprefix("ray://").rpartition(":")
    if not (colon and port.isdigit()):
        return  # null, auto or local: Ray finds or starts the cluster itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"env.launcher=ray: nothing answers at env.ray_address={address!r} ({exc}): {fix}"
        ) from exc


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"env.launcher=ray needs Ray, which is not installed: {_INSTALL_FIX}") from exc
    return ray


def _unwrap(ray: Any, call: Any) -> Any:
    """`call()`, with an error raised in an actor re-raised as itself (a ConfigError stays one)."""
    try:
        return call()
    except ray.exceptions.RayTaskError as exc:
        raise _cause(exc) from exc


async def _awaited(ray: Any, ref: Any) -> Any:
    try:
        return await ref
    except ray.exceptions.RayTaskError as exc:
        raise _cause(exc) from exc


def _cause(exc: Any) -> BaseException:
    cause = exc.cause
    return cause if isinstance(cause, BaseException) else exc
