"""The async client for HTTP protocol v1, spoken by Godot (or the embedded simulator), and the
launcher that starts those servers (`godot.launcher`: `ServerPool`, `launch_servers`).

The launcher is not imported here, so the client loads without the config schemas (Hydra). The
protocol itself (constants, result types, codecs, checks) is `spacetime_rl.protocol`.
"""

from __future__ import annotations

from spacetime_rl.godot.client import GodotClient, Timeouts

__all__ = ["GodotClient", "Timeouts"]
