"""Arenas before physics runs: the open field generator and the reachability check every scenario's
candidates pass. Pure NumPy, no I/O.

`draw_arenas` gives each agent, from its own random stream, an arena of its scenario whose goal is
reachable from the start on a 1 m grid (a flood fill over cells the player can stand in anywhere):
up to MAX_LAYOUT_ATTEMPTS layouts, then an empty arena. The open field is the seed's world; the
other scenarios' generators are in `scenarios.py`. docs/simulator.md describes them all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from spacetime_rl.protocol import wire
from spacetime_rl.sim import scenarios
from spacetime_rl.sim.collisions import PLAYER_RADIUS
from spacetime_rl.sim.scenarios import PLATFORM_HALF_SIZE, centred_rects, draw_slices, uniform

__all__ = ["GENERATORS", "NUM_BOXES", "NUM_PILLARS", "NUM_PITS", "Arena", "draw_arenas"]

# --- open field --------------------------------------------------------------------------------
NUM_BOXES: Final = 10  # axis-aligned boxes per open-field arena, 2.5 m tall
NUM_PILLARS: Final = 10  # round pillars per open-field arena, 2.5 m tall
NUM_PITS: Final = 4  # rectangular holes in the floor per open-field arena
BOX_HALF_EXTENT: Final = (0.25, 1.5)  # m, range of each half side
PILLAR_RADIUS: Final = (0.15, 0.5)  # m
PIT_HALF_EXTENT: Final = (0.75, 2.0)  # m

# --- layout sampling ---------------------------------------------------------------------------
GRID_CELL: Final = 1.0  # m, cell of the reachability grid
PIT_MARGIN: Final = 0.1  # m kept between walkable grid cells and pit edges
MAX_LAYOUT_ATTEMPTS: Final = 16  # then fall back to an empty arena (never needed in practice)
CANDIDATES: Final = 64  # start/goal pairs tried per layout attempt

_GRID_SIZE: Final = int(2 * PLATFORM_HALF_SIZE / GRID_CELL)
_DRAW: Final = draw_slices(
    {
        "boxes": NUM_BOXES * 4,
        "pillars": NUM_PILLARS * 3,
        "pits": NUM_PITS * 4,
        "start": CANDIDATES * 2,
        "jitter": CANDIDATES * 2,
        "distance": CANDIDATES,
        "angle": CANDIDATES,
        "yaw": 1,
    }
)


@dataclass(frozen=True)
class Arena:
    """One agent's arena in world metres, unused slots included: what `World` stores."""

    boxes: np.ndarray  # (k, 4) x_min, z_min, x_max, z_max
    pillars: np.ndarray  # (k, 3) x, z, radius
    pits: np.ndarray  # (k, 4) x_min, z_min, x_max, z_max
    start: complex  # x + 1j*z
    goal: complex
    yaw: float  # radians


def open_field(draws: np.ndarray, low: np.ndarray, high: np.ndarray) -> scenarios.Arenas:
    """The seed's arena for each row of uniform `draws`: scattered obstacles, CANDIDATES start/goal pairs.

    Rows are independent of each other, so an agent's arena depends only on its own draws.
    """
    k = draws.shape[0]
    half = PLATFORM_HALF_SIZE
    b = draws[:, _DRAW["boxes"]].reshape(k, NUM_BOXES, 4)
    bhx, bhz = uniform(b[..., 2], BOX_HALF_EXTENT), uniform(b[..., 3], BOX_HALF_EXTENT)
    boxes = centred_rects((2 * b[..., 0] - 1) * (half - bhx), (2 * b[..., 1] - 1) * (half - bhz), bhx, bhz)
    p = draws[:, _DRAW["pits"]].reshape(k, NUM_PITS, 4)
    phx, phz = uniform(p[..., 2], PIT_HALF_EXTENT), uniform(p[..., 3], PIT_HALF_EXTENT)
    pits = centred_rects((2 * p[..., 0] - 1) * (half - phx), (2 * p[..., 1] - 1) * (half - phz), phx, phz)
    c = draws[:, _DRAW["pillars"]].reshape(k, NUM_PILLARS, 3)
    radius = uniform(c[..., 2], PILLAR_RADIUS)
    pillars = np.stack(
        [(2 * c[..., 0] - 1) * (half - radius), (2 * c[..., 1] - 1) * (half - radius), radius], -1
    )
    g = _GRID_SIZE
    cell = np.minimum((draws[:, _DRAW["start"]].reshape(k, CANDIDATES, 2) * g).astype(np.int64), g - 1)
    jitter = (draws[:, _DRAW["jitter"]].reshape(k, CANDIDATES, 2) - 0.5) * 0.5
    start_xz = -half + (cell + 0.5 + jitter) * GRID_CELL
    start = start_xz[..., 0] + 1j * start_xz[..., 1]
    distance = low[:, None] + draws[:, _DRAW["distance"]] * (high - low)[:, None]
    angle = 2 * np.pi * draws[:, _DRAW["angle"]]
    goal = start + distance * (np.cos(angle) + 1j * np.sin(angle))
    yaw = 2 * np.pi * draws[:, _DRAW["yaw"]][:, 0] - np.pi
    return scenarios.Arenas(boxes, pillars, pits, start, goal, yaw)


#: Every scenario's generator, by its `scenario` reset option value.
GENERATORS: Final = {
    wire.DEFAULT_SCENARIO: scenarios.Generator(_DRAW["yaw"].stop, open_field),
    **scenarios.GENERATORS,
}
assert set(GENERATORS) == set(wire.SCENARIOS), "every scenario needs a generator"


def draw_arenas(
    rngs: Sequence[np.random.Generator], scenario: np.ndarray, low: np.ndarray, high: np.ndarray
) -> list[Arena]:
    """An arena with a reachable goal for each agent: its random stream, its scenario (an index into
    wire.SCENARIOS) and its goal distance bounds [low, high] in metres, all (k,)."""
    found: dict[int, Arena] = {}
    pending = np.arange(len(rngs))
    for _ in range(MAX_LAYOUT_ATTEMPTS):
        if not pending.size:
            break
        solved = np.zeros(pending.size, bool)
        for kind in np.unique(scenario[pending]):  # one batch per scenario
            rows = np.flatnonzero(scenario[pending] == kind)
            batch = pending[rows]
            generator = GENERATORS[wire.SCENARIOS[kind]]
            draws = np.stack([rngs[i].random(generator.draws) for i in batch])
            ok, picked = _pick_reachable(generator.generate(draws, low[batch], high[batch]))
            for j in np.flatnonzero(ok):
                found[int(batch[j])] = Arena(
                    picked.boxes[j],
                    picked.pillars[j],
                    picked.pits[j],
                    picked.start[j],
                    picked.goal[j],
                    picked.yaw[j],
                )
            solved[rows] = ok
        pending = pending[~solved]
    return [found[i] if i in found else _empty_arena(low[i], high[i]) for i in range(len(rngs))]


def _empty_arena(low: float, high: float) -> Arena:
    """The fallback: no obstacles, start and goal along the diagonal."""
    start = -(PLATFORM_HALF_SIZE - 2.0) * (1 + 1j)
    goal = start + float(low + high) / 2 * (1 + 1j) / math.sqrt(2)
    return Arena(np.zeros((0, 4)), np.zeros((0, 3)), np.zeros((0, 4)), start, goal, 0.0)


def _pick_reachable(arenas: scenarios.Arenas) -> tuple[np.ndarray, scenarios.Arenas]:
    """Each arena's first start/goal candidate in walkable cells: (ok, arenas with that one candidate),
    ok False where that candidate's goal is not reachable or no candidate lies in walkable cells."""
    boxes, pillars, pits = arenas.boxes, arenas.pillars, arenas.pits
    k = boxes.shape[0]
    free = _free_cells(boxes, pillars, pits)
    g = _GRID_SIZE

    def cells(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xz = np.stack([points.real, points.imag], -1)
        cell = np.floor((xz + PLATFORM_HALF_SIZE) / GRID_CELL).astype(np.int64)
        return np.clip(cell, 0, g - 1), np.all((cell >= 0) & (cell < g), axis=-1)

    (start_cell, start_on), (goal_cell, goal_on) = cells(arenas.start), cells(arenas.goal)
    rows = np.arange(k)[:, None]
    valid = (
        start_on
        & goal_on
        & free[rows, start_cell[..., 0], start_cell[..., 1]]
        & free[rows, goal_cell[..., 0], goal_cell[..., 1]]
    )
    pick = valid.argmax(1)
    ok = valid[np.arange(k), pick]
    ok &= _reachable(free, start_cell[np.arange(k), pick], goal_cell[np.arange(k), pick])
    start, goal = arenas.start[np.arange(k), pick], arenas.goal[np.arange(k), pick]
    return ok, scenarios.Arenas(boxes, pillars, pits, start, goal, arenas.yaw)


def _free_cells(boxes: np.ndarray, pillars: np.ndarray, pits: np.ndarray) -> np.ndarray:
    """(k, G, G) bool: grid cells where the player can stand anywhere without touching a solid or a drop.

    Conservative: boxes grown by the player radius as squares, pits grown by PIT_MARGIN, the outer
    ring of cells blocked. Cell (i, j) spans x in [-24 + i, -23 + i], z likewise with j.
    """
    lo = -PLATFORM_HALF_SIZE + np.arange(_GRID_SIZE) * GRID_CELL
    hi = lo + GRID_CELL

    def overlap(rects: np.ndarray, grow: float) -> np.ndarray:
        ox = (lo < rects[..., 2:3] + grow) & (hi > rects[..., 0:1] - grow)  # (k, K, G)
        oz = (lo < rects[..., 3:4] + grow) & (hi > rects[..., 1:2] - grow)
        return np.any(ox[..., :, None] & oz[..., None, :], axis=1)

    blocked = overlap(boxes, PLAYER_RADIUS) | overlap(pits, PIT_MARGIN)
    cx, cz, r = pillars[..., 0:1], pillars[..., 1:2], pillars[..., 2:3]
    gx = np.maximum(np.maximum(lo - cx, cx - hi), 0.0)  # (k, K, G) gap from the centre to the cell
    gz = np.maximum(np.maximum(lo - cz, cz - hi), 0.0)
    blocked |= (gx[..., :, None] ** 2 + gz[..., None, :] ** 2 < (r[..., None] + PLAYER_RADIUS) ** 2).any(1)
    blocked[:, [0, -1], :] = True
    blocked[:, :, [0, -1]] = True
    return ~blocked


def _reachable(free: np.ndarray, start: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """(k,) bool: a 4-connected path of free cells joins each start cell to its goal cell (flood fill)."""
    k = free.shape[0]
    rows = np.arange(k)
    reached = np.zeros_like(free)
    reached[rows, start[:, 0], start[:, 1]] = free[rows, start[:, 0], start[:, 1]]
    while True:
        grown = reached.copy()
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown[:, :, 1:] |= reached[:, :, :-1]
        grown[:, :, :-1] |= reached[:, :, 1:]
        grown &= free
        at_goal = grown[rows, goal[:, 0], goal[:, 1]]
        if at_goal.all() or np.array_equal(grown, reached):
            return np.asarray(at_goal, dtype=bool)
        reached = grown
