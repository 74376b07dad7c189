"""The embedded simulator: a stand-in for Godot's `vr_locomotion_test` scene serving protocol v1.

`world` is the physics (pure NumPy, no I/O) over `collisions` (players against obstacles) and
`layouts` (arenas drawn per reset, with `scenarios`); `server` is its aiohttp app; `python -m
spacetime_rl.sim` runs it. It knows only `spacetime_rl.protocol` and `spacetime_rl.errors`.
"""

from __future__ import annotations

from spacetime_rl.sim.world import Layout, StepOutcome, World, ignored_options

__all__ = ["Layout", "StepOutcome", "World", "ignored_options"]
