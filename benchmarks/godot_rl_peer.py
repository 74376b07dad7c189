"""The embedded simulator behind godot_rl_agents' TCP protocol, for comparing transports.

    python -m benchmarks.godot_rl_peer --port PORT --agents N

In godot_rl_agents the Python side (`godot_rl.core.godot_env.GodotEnv`) listens and the game
connects. Every message is a 4-byte little-endian length, then that many bytes of JSON. This peer
plays the game's part (their `sync.gd`) over a `World`: it answers `env_info` with one continuous
3-value action `move` and one 48-value box observation `obs`, `reset` with every agent's
observation, and each `action` with `{"type": "step", "obs", "reward", "done"}` after one action
(`action_repeat` physics frames), resetting finished agents at once as their plugin does. It
encodes with orjson, as our simulator does, so the two servers differ only in the protocol.
`FramedJSONClient` is a faithful stand-in for `GodotEnv` where godot-rl is not installed.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import time
from typing import Any, Final

import numpy as np
import orjson

from spacetime_rl.protocol import wire
from spacetime_rl.sim.world import World

__all__ = ["FramedJSONClient", "env_info", "serve"]

_LENGTH: Final = struct.Struct("<I")


def env_info(num_agents: int) -> dict[str, Any]:
    """godot_rl_agents' `env_info` answer for N agents of the wire layout."""
    return {
        "type": "env_info",
        "observation_space": {"obs": {"size": [wire.OBSERVATION_SIZE], "space": "box"}},
        "action_space": {"move": {"size": wire.ACTION_SIZE, "action_type": "continuous"}},
        "n_agents": num_agents,
    }


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, received = [], 0
    while received < size:
        chunk = sock.recv(size - received)
        if not chunk:
            raise ConnectionError("peer closed the connection")
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


def receive(sock: socket.socket) -> bytes:
    (length,) = _LENGTH.unpack(_receive_exactly(sock, _LENGTH.size))
    return _receive_exactly(sock, length)


def send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def serve(port: int, num_agents: int, seed: int = 0) -> None:
    """Connect to a listening godot_rl `GodotEnv` on `port` and serve it until it sends `close`."""
    deadline = time.monotonic() + 30
    while True:
        try:
            sock = socket.create_connection((wire.DEFAULT_HOST, port))
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    world = World(num_agents, seed=seed)
    distance = world.observe()[:, wire.OBS["goal_distance"]][:, 0]
    dumps = orjson.dumps
    option = orjson.OPT_SERIALIZE_NUMPY
    with sock:
        while True:
            message = orjson.loads(receive(sock))
            kind = message["type"]
            if kind == "handshake":
                continue
            if kind == "env_info":
                send(sock, dumps(env_info(num_agents)))
            elif kind == "reset":
                observations = world.reset()
                distance = observations[:, wire.OBS["goal_distance"]][:, 0]
                send(
                    sock,
                    dumps({"type": "reset", "obs": [{"obs": row} for row in observations]}, option=option),
                )
            elif kind == "action":
                actions = np.array([agent["move"] for agent in message["action"]], dtype=np.float64)
                outcome = world.step(actions)
                observations = world.observe()
                new_distance = observations[:, wire.OBS["goal_distance"]][:, 0]
                reward = (distance - new_distance) + 10.0 * outcome.goal_reached - 10.0 * outcome.fell
                finished = np.flatnonzero(outcome.done)
                if finished.size:
                    observations[finished] = world.reset(finished)
                    new_distance = observations[:, wire.OBS["goal_distance"]][:, 0]
                distance = new_distance
                answer = {
                    "type": "step",
                    "obs": [{"obs": row} for row in observations],
                    "reward": reward,
                    "done": outcome.done,
                }
                send(sock, dumps(answer, option=option))
            elif kind == "close":
                return


class FramedJSONClient:
    """godot_rl's `GodotEnv` wire behaviour without the package: it listens, the game connects.

    Messages and encoding (stdlib `json`, actions as one `{"move": [h, v, r]}` dict per agent) are
    theirs; only the gymnasium space bookkeeping is left out.
    """

    def __init__(self, port: int) -> None:
        with socket.create_server((wire.DEFAULT_HOST, port)) as server:
            server.settimeout(60)
            self.connection, _ = server.accept()
        self._send({"type": "handshake", "major_version": "0", "minor_version": "7"})
        self._send({"type": "env_info"})
        self.num_envs = json.loads(receive(self.connection))["n_agents"]

    def _send(self, message: dict[str, Any]) -> None:
        send(self.connection, json.dumps(message).encode())

    def reset(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        self._send({"type": "reset"})
        return json.loads(receive(self.connection))["obs"], [{}] * self.num_envs

    def step(self, action: list[np.ndarray]) -> tuple[Any, ...]:
        self._send({"type": "action", "action": [{"move": row.tolist()} for row in action[0]]})
        response = json.loads(receive(self.connection))
        done = np.array(response["done"]).tolist()
        return response["obs"], response["reward"], done, done, [{}] * len(done)

    def close(self) -> None:
        self._send({"type": "close"})
        self.connection.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    serve(args.port, args.agents, args.seed)


if __name__ == "__main__":
    main()
