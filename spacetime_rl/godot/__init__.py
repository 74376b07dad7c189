"""HTTP protocol v1: wire types and the async client for Godot (or the embedded simulator).

The client is imported on first use, so `spacetime_rl.godot.wire` stays importable without
aiohttp and the simulator, which knows only the wire types, never loads the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spacetime_rl.godot.client import Events, GodotClient, ResetResult, RLSpec, StepResult, Timeouts

__all__ = ["Events", "GodotClient", "RLSpec", "ResetResult", "StepResult", "Timeouts"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("spacetime_rl.godot.client"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
