"""Arena layouts of the scenarios beyond the open field: pure NumPy, no I/O.

A generator turns rows of uniform draws (one row per agent, from that agent's own random stream)
into candidate arenas: obstacle arrays in world metres, start and goal candidates, and a heading.
`layouts.draw_arenas` keeps a candidate only once its goal is reachable (a flood fill), so a
generator only has to make good layouts likely, not certain. The open field, the seed's world, is
generated in `layouts.py`; docs/simulator.md describes every scenario.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from spacetime_rl.protocol import wire

__all__ = ["GENERATORS", "MAX_BOXES", "MAX_PILLARS", "MAX_PITS", "PLATFORM_HALF_SIZE", "Arenas", "Generator"]

PLATFORM_HALF_SIZE: Final = 24.0  # m; the floor is the square |x|, |z| <= 24 at y = 0
#: Obstacle slots per arena, the most any scenario uses. Every slot costs the step hot path (it is
#: tested each frame, used or not), so the maze drops its shortest inner walls beyond MAX_BOXES.
MAX_BOXES: Final = 16
MAX_PILLARS: Final = 10
MAX_PITS: Final = 4
UNUSED: Final = 1e6  # an unused slot's coordinates: far from everything, never near

# --- obstacle course: a band of dense obstacles and pits across the straight line to the goal ----
COURSE_HALF_WIDTH: Final = 4.0  # m each side of the line
COURSE_CLEARANCE: Final = 1.5  # m kept free of obstacle centres around the start and the goal
COURSE_DENSITY: Final = {"boxes": 0.1, "pillars": 0.1, "pits": 0.04}  # per m^2 of band
COURSE_BOX_HALF_EXTENT: Final = (0.25, 1.0)  # m
COURSE_PILLAR_RADIUS: Final = (0.15, 0.4)  # m
COURSE_PIT_HALF_EXTENT: Final = (0.5, 1.25)  # m
COURSE_MARGIN: Final = 2.0  # m kept between the start or goal and the platform's edge

# --- maze: a perfect maze (one path between any two cells) walled in, placed anywhere -----------
MAZE_CELLS: Final = 5  # cells per side
MAZE_CELL: Final = 4.0  # m; corridors are MAZE_CELL - 2 * MAZE_WALL_HALF_THICKNESS wide
MAZE_WALL_HALF_THICKNESS: Final = 0.2  # m
MAZE_MIN_PATH: Final = 2  # cells the goal lies from the start along the maze, when the distance allows
_MAZE_EDGES: Final = np.array(  # (cell a, cell b, vertical wall?) between 4-neighbours, cell = i * n + j
    [
        (i * MAZE_CELLS + j, (i + 1) * MAZE_CELLS + j, 1)
        for i in range(MAZE_CELLS - 1)
        for j in range(MAZE_CELLS)
    ]
    + [
        (i * MAZE_CELLS + j, i * MAZE_CELLS + j + 1, 0)
        for i in range(MAZE_CELLS)
        for j in range(MAZE_CELLS - 1)
    ]
)


@dataclass(frozen=True)
class Arenas:
    """k candidate arenas in world metres; pad rows (unused slots) hold `UNUSED`."""

    boxes: np.ndarray  # (k, <= MAX_BOXES, 4) x_min, z_min, x_max, z_max
    pillars: np.ndarray  # (k, <= MAX_PILLARS, 3) x, z, radius
    pits: np.ndarray  # (k, <= MAX_PITS, 4)
    start: np.ndarray  # (k, C) complex x + 1j*z, candidates tried in order
    goal: np.ndarray  # (k, C) complex, the goal of each start candidate
    yaw: np.ndarray  # (k,) initial heading, radians


@dataclass(frozen=True)
class Generator:
    """A scenario: how many uniform draws one layout attempt takes, and the layouts they make.

    `generate(draws (k, draws), low (k,), high (k,))`: low and high bound the start-goal distance.
    """

    draws: int
    generate: Callable[[np.ndarray, np.ndarray, np.ndarray], Arenas]


def uniform(u: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Uniform draws `u` in [0, 1) mapped onto [low, high) `bounds`."""
    return bounds[0] + u * (bounds[1] - bounds[0])


def centred_rects(cx: np.ndarray, cz: np.ndarray, hx: np.ndarray, hz: np.ndarray) -> np.ndarray:
    """Rectangles x_min, z_min, x_max, z_max (last axis) from centres and half extents."""
    return np.stack([cx - hx, cz - hz, cx + hx, cz + hz], axis=-1)


def _course_counts(length: np.ndarray) -> dict[str, np.ndarray]:
    """Obstacles of each kind in a band along a start-goal line of `length` (k,) metres."""
    area = np.maximum(length - 2 * COURSE_CLEARANCE, 0.0) * 2 * COURSE_HALF_WIDTH
    limits = {"boxes": MAX_BOXES, "pillars": MAX_PILLARS, "pits": MAX_PITS}
    return {
        kind: np.minimum(np.round(density * area), limits[kind]).astype(np.int64)
        for kind, density in COURSE_DENSITY.items()
    }


def obstacle_course(draws: np.ndarray, low: np.ndarray, high: np.ndarray) -> Arenas:
    """Start and goal on a straight line, the band between them packed with boxes, pillars and pits.

    Obstacle centres keep COURSE_CLEARANCE from the start and the goal; counts grow with the band's
    area (COURSE_DENSITY), so a 3 m course is clear and a 15 m one holds ~17 solids and ~2 pits.
    """
    k = draws.shape[0]
    slices = _course_slices()
    length = low + draws[:, slices["distance"]][:, 0] * (high - low)
    angle = 2 * np.pi * draws[:, slices["angle"]][:, 0]
    direction = np.exp(1j * angle)
    room = np.maximum(PLATFORM_HALF_SIZE - COURSE_MARGIN - length / 2, 0.0)
    mid = (2 * draws[:, slices["middle"]] - 1) * room[:, None]
    middle = mid[:, 0] + 1j * mid[:, 1]
    start = middle - direction * length / 2
    goal = middle + direction * length / 2
    counts = _course_counts(length)

    def place(kind: str, per: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(k, slots, per) draws for `kind`, the centres of its used slots, and which slots are used."""
        d = draws[:, slices[kind]].reshape(k, -1, per)
        along = COURSE_CLEARANCE + d[..., 0] * np.maximum(length - 2 * COURSE_CLEARANCE, 0.0)[:, None]
        across = (2 * d[..., 1] - 1) * COURSE_HALF_WIDTH
        centre = start[:, None] + direction[:, None] * (along + 1j * across)
        used = np.arange(d.shape[1]) < counts[kind][:, None]
        return d, np.where(used, centre, UNUSED * (1 + 1j)), used

    d, centre, used = place("boxes", 4)
    hx, hz = uniform(d[..., 2], COURSE_BOX_HALF_EXTENT), uniform(d[..., 3], COURSE_BOX_HALF_EXTENT)
    boxes = np.where(used[..., None], centred_rects(centre.real, centre.imag, hx, hz), UNUSED)
    d, centre, used = place("pillars", 3)
    radius = np.where(used, uniform(d[..., 2], COURSE_PILLAR_RADIUS), 0.0)
    pillars = np.stack([centre.real, centre.imag, radius], axis=-1)
    d, centre, used = place("pits", 4)
    hx, hz = uniform(d[..., 2], COURSE_PIT_HALF_EXTENT), uniform(d[..., 3], COURSE_PIT_HALF_EXTENT)
    pits = np.where(used[..., None], centred_rects(centre.real, centre.imag, hx, hz), UNUSED)
    yaw = 2 * np.pi * draws[:, slices["yaw"]][:, 0] - np.pi
    return Arenas(boxes, pillars, pits, start[:, None], goal[:, None], yaw)


def _course_slices() -> dict[str, slice]:
    sizes = {
        "distance": 1,
        "angle": 1,
        "middle": 2,
        "boxes": MAX_BOXES * 4,
        "pillars": MAX_PILLARS * 3,
        "pits": MAX_PITS * 4,
        "yaw": 1,
    }
    return draw_slices(sizes)


def draw_slices(sizes: dict[str, int]) -> dict[str, slice]:
    """Consecutive slices of one row of draws, one per name, `sizes[name]` long, in order."""
    slices, start = {}, 0
    for name, size in sizes.items():
        slices[name] = slice(start, start + size)
        start += size
    return slices


def _spanning_tree(weights: np.ndarray) -> np.ndarray:
    """(E,) bool: the edges of `_MAZE_EDGES` in the minimum spanning tree for `weights` (Kruskal)."""
    parent = list(range(MAZE_CELLS * MAZE_CELLS))

    def root(cell: int) -> int:
        while parent[cell] != cell:
            parent[cell] = parent[parent[cell]]
            cell = parent[cell]
        return cell

    tree = np.zeros(len(_MAZE_EDGES), bool)
    for e in np.argsort(weights, kind="stable"):
        a, b = root(int(_MAZE_EDGES[e, 0])), root(int(_MAZE_EDGES[e, 1]))
        if a != b:
            parent[a] = b
            tree[e] = True
    return tree


def _path_lengths(tree: np.ndarray, source: int) -> np.ndarray:
    """(cells,) steps from `source` to every cell along the tree's edges (breadth-first)."""
    cells = MAZE_CELLS * MAZE_CELLS
    adjacent = np.zeros((cells, cells), bool)
    a, b = _MAZE_EDGES[tree, 0], _MAZE_EDGES[tree, 1]
    adjacent[a, b] = adjacent[b, a] = True
    steps = np.full(cells, -1)
    steps[source] = 0
    frontier, n = np.zeros(cells, bool), 0
    frontier[source] = True
    while frontier.any():
        n += 1
        frontier = adjacent[frontier].any(0) & (steps < 0)
        steps[frontier] = n
    return steps


def _maze_walls(tree: np.ndarray, origin: complex) -> np.ndarray:
    """(MAX_BOXES, 4) wall boxes of one maze: the four outer walls, then the walls the tree does not
    cross, merged where collinear and touching; pad rows hold UNUSED.

    About a quarter of 5 x 5 mazes have more inner walls than slots: their shortest inner walls
    are left out, which opens a loop or two but leaves a maze.
    """
    n, c, t = MAZE_CELLS, MAZE_CELL, MAZE_WALL_HALF_THICKNESS
    # wall[i, j] of a kind: the wall between cell (i, j) and its +x (vertical) or +z neighbour
    vertical = np.zeros((n - 1, n), bool)
    horizontal = np.zeros((n, n - 1), bool)
    for (a, _, is_vertical), crossed in zip(_MAZE_EDGES, tree, strict=True):
        if not crossed:
            i, j = divmod(int(a), n)
            (vertical if is_vertical else horizontal)[i, j] = True
    size = n * c
    rows = [(-t, -t, t, size + t), (size - t, -t, size + t, size + t), (-t, -t, size + t, t)]
    rows.append((-t, size - t, size + t, size + t))
    inner = []
    for line in range(n - 1):  # vertical walls lie on x = (line + 1) * c, runs along z
        for run_start, run_end in _runs(vertical[line]):
            inner.append(((line + 1) * c - t, run_start * c - t, (line + 1) * c + t, run_end * c + t))
    for line in range(n - 1):  # horizontal walls lie on z = (line + 1) * c, runs along x
        for run_start, run_end in _runs(horizontal[:, line]):
            inner.append((run_start * c - t, (line + 1) * c - t, run_end * c + t, (line + 1) * c + t))
    longest_first = sorted(inner, key=lambda r: -(r[2] - r[0] + r[3] - r[1]))  # stable: ties keep order
    rows += longest_first[: MAX_BOXES - len(rows)]
    walls = np.full((MAX_BOXES, 4), UNUSED)
    walls[: len(rows)] = np.array(rows) + np.array([origin.real, origin.imag] * 2)
    return walls


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[(start, end)) index ranges of the runs of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


_MAZE_DRAW: Final = draw_slices(
    {"walls": len(_MAZE_EDGES), "origin": 2, "start": 1, "goal": 1, "jitter": 4, "yaw": 1}
)


def maze(draws: np.ndarray, low: np.ndarray, high: np.ndarray) -> Arenas:
    """A MAZE_CELLS x MAZE_CELLS perfect maze of MAZE_CELL corridors, walled in, somewhere on the floor.

    Start and goal are cell centres (± 0.25 m). The goal is drawn among the cells whose straight
    distance from the start lies in [low, high] and that are at least MAZE_MIN_PATH cells away
    along the maze, so it is usually behind a wall; without such a cell the distance bound wins,
    and without that the cell nearest the range is taken.
    """
    k = draws.shape[0]
    size = MAZE_CELLS * MAZE_CELL
    room = PLATFORM_HALF_SIZE - 1.0 - size / 2
    cells = MAZE_CELLS * MAZE_CELLS
    i, j = np.divmod(np.arange(cells), MAZE_CELLS)
    centres = ((i + 0.5) + 1j * (j + 0.5)) * MAZE_CELL
    boxes = np.empty((k, MAX_BOXES, 4))
    start = np.empty(k, complex)
    goal = np.empty(k, complex)
    for row in range(k):
        d = draws[row]
        tree = _spanning_tree(d[_MAZE_DRAW["walls"]])
        o = (2 * d[_MAZE_DRAW["origin"]] - 1) * room - size / 2
        origin = complex(o[0], o[1])
        boxes[row] = _maze_walls(tree, origin)
        s = min(int(d[_MAZE_DRAW["start"]][0] * cells), cells - 1)
        distance = np.abs(centres - centres[s])
        in_range = (distance >= low[row]) & (distance <= high[row])
        hidden = in_range & (_path_lengths(tree, s) >= MAZE_MIN_PATH)
        choices = np.flatnonzero(hidden if hidden.any() else in_range)
        if not choices.size:
            gap = np.maximum(low[row] - distance, distance - high[row])
            gap[s] = np.inf
            choices = np.flatnonzero(gap == gap.min())
        g = choices[min(int(d[_MAZE_DRAW["goal"]][0] * choices.size), choices.size - 1)]
        jitter = (d[_MAZE_DRAW["jitter"]] - 0.5) * 0.5
        start[row] = origin + centres[s] + complex(jitter[0], jitter[1])
        goal[row] = origin + centres[g] + complex(jitter[2], jitter[3])
    yaw = 2 * np.pi * draws[:, _MAZE_DRAW["yaw"]][:, 0] - np.pi
    return Arenas(boxes, np.zeros((k, 0, 3)), np.zeros((k, 0, 4)), start[:, None], goal[:, None], yaw)


#: The scenarios beyond the open field, by their `scenario` reset option value.
GENERATORS: Final[dict[str, Generator]] = {
    "obstacle_course": Generator(sum(s.stop - s.start for s in _course_slices().values()), obstacle_course),
    "maze": Generator(_MAZE_DRAW["yaw"].stop, maze),
}
assert set(GENERATORS) == set(wire.SCENARIOS) - {wire.DEFAULT_SCENARIO}, "every scenario needs a generator"
