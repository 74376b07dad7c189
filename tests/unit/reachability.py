"""The tests' own reachability oracle, independent of layouts.py's 1 m flood-fill grid."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from spacetime_rl.sim.collisions import PLAYER_RADIUS
from spacetime_rl.sim.scenarios import PLATFORM_HALF_SIZE
from spacetime_rl.sim.world import Layout

FINE: float = 0.25  # m, cell of the oracle's grid (finer than the world's 1 m)


def walkable(layout: Layout) -> np.ndarray:
    """(G, G) bool: grid points where the player's circle touches no solid and its centre is over
    floor, from exact distances to each shape at FINE resolution."""
    half = PLATFORM_HALF_SIZE
    axis = np.arange(-half + FINE / 2, half, FINE)
    x, z = np.meshgrid(axis, axis, indexing="ij")
    ok = np.ones(x.shape, bool)
    for x0, z0, x1, z1 in layout.boxes:
        dx = np.maximum(np.maximum(x0 - x, x - x1), 0.0)
        dz = np.maximum(np.maximum(z0 - z, z - z1), 0.0)
        ok &= np.hypot(dx, dz) >= PLAYER_RADIUS
    for px, pz, radius in layout.pillars:
        ok &= np.hypot(x - px, z - pz) >= radius + PLAYER_RADIUS
    for x0, z0, x1, z1 in layout.pits:
        ok &= ~((x >= x0) & (x <= x1) & (z >= z0) & (z <= z1))
    return ok


def grid_index(x: float, z: float) -> tuple[int, int]:
    return (int((x + PLATFORM_HALF_SIZE) // FINE), int((z + PLATFORM_HALF_SIZE) // FINE))


def reachable(layout: Layout, start: tuple[float, float]) -> bool:
    """True when a 4-connected path of walkable points joins `start` to the layout's goal."""
    labels, _ = ndimage.label(walkable(layout))
    here, goal = labels[grid_index(*start)], labels[grid_index(*layout.goal)]
    return bool(here > 0 and here == goal)
