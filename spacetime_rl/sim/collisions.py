"""Players against obstacles: the obstacle table, distances, sensor rays and per-frame contacts.

Pure NumPy, no I/O. Every agent's arena is one row of a table with a column per obstacle slot
(`BOX_COLUMNS`, `PILLAR_COLUMNS`, `PIT_COLUMNS`, then the four border "pits" that make the void
around the platform): rectangle planes x0, z0, x1, z1 of shape (4, N, K) and a radius of shape
(N, K). A pillar is a zero-size rectangle with a radius, so one "distance to the nearest point,
minus the radius" covers every kind. Positions are complex `x + 1j*z` as in `world.py`; only the
(agent, obstacle) pairs near enough to matter are tested.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from spacetime_rl.protocol import wire
from spacetime_rl.sim.scenarios import MAX_BOXES, MAX_PILLARS, MAX_PITS, PLATFORM_HALF_SIZE, UNUSED

__all__ = [
    "BOX_COLUMNS",
    "CONTACT_SLOP",
    "PILLAR_COLUMNS",
    "PIT_COLUMNS",
    "PLAYER_RADIUS",
    "SOLID_COLUMNS",
    "Neighbourhood",
    "gaps",
    "obstacle_table",
    "ray_distances",
]

PLAYER_RADIUS: Final = 0.3  # m, capsule radius
CONTACT_SLOP: Final = 1e-3  # m; within PLAYER_RADIUS + slop of an obstacle counts as touching it

BOX_COLUMNS: Final = slice(0, MAX_BOXES)
PILLAR_COLUMNS: Final = slice(MAX_BOXES, MAX_BOXES + MAX_PILLARS)
SOLID_COLUMNS: Final = slice(0, MAX_BOXES + MAX_PILLARS)
PIT_COLUMNS: Final = slice(SOLID_COLUMNS.stop, SOLID_COLUMNS.stop + MAX_PITS)
_DROP_COLUMNS: Final = slice(SOLID_COLUMNS.stop, None)  # pits, then the four border "pits"
_NUM_COLUMNS: Final = PIT_COLUMNS.stop + 4
_BORDER_WIDTH: Final = 100.0  # m; the void around the platform is four wide "pits"
_IS_RECT: Final = np.ones(_NUM_COLUMNS, bool)
_IS_RECT[PILLAR_COLUMNS] = False
_RECT_COLUMNS: Final = np.flatnonzero(_IS_RECT)
_RAY_ROTATIONS: Final = -1j * np.exp(1j * np.arange(wire.NUM_RAYS) * (2 * np.pi / wire.NUM_RAYS))


def obstacle_table(num_agents: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty arenas: rectangles (4, N, K) with every slot UNUSED but the border, radii (N, K) zero."""
    rects = np.full((4, num_agents, _NUM_COLUMNS), UNUSED)
    half, far = PLATFORM_HALF_SIZE, PLATFORM_HALF_SIZE + _BORDER_WIDTH
    border = np.array(
        [
            [-far, -far, -half, far],
            [half, -far, far, far],
            [-far, -far, far, -half],
            [-far, half, far, far],
        ]
    )
    rects[..., PIT_COLUMNS.stop :] = border.T[:, None]
    return rects, np.zeros((num_agents, _NUM_COLUMNS))


def gaps(pos: np.ndarray, rects: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """(k, K) horizontal distance from each player's centre `pos` (k,) to each obstacle (0 inside one)."""
    offset = _offsets(_xz(pos)[..., None], rects)
    distance = np.sqrt(_dot(offset, offset))
    return np.maximum(distance - radius, 0.0)


def ray_distances(
    pos: np.ndarray, u: np.ndarray, rects: np.ndarray, radius: np.ndarray, gap: np.ndarray
) -> np.ndarray:
    """(k, 16) distance along each horizontal ray to the first obstacle surface or drop-off edge.

    `u` (k,) are the headings, `gap` the players' `gaps`. A ray ends where it enters a box, pillar,
    pit or the void beyond the platform; rays start at the player's centre (so touching a wall reads
    PLAYER_RADIUS) and read RAY_RANGE on a miss. Only the (agent, obstacle) pairs closer than
    RAY_RANGE are traced.
    """
    out = np.full((len(pos), wire.NUM_RAYS), wire.RAY_RANGE)
    near = gap <= wire.RAY_RANGE
    if not np.count_nonzero(near):
        return out
    # Directions once per agent, not per pair; rectangles and circles are gathered separately
    # so no pair array is masked or scattered. Arrays run (x and z, ray, pair): each formula is
    # one NumPy call for both axes, over rows as long as the number of pairs.
    d = u * _RAY_ROTATIONS[:, None]  # (16, k) unit directions
    direction = np.array([d.real, d.imag])
    origin = _xz(pos)
    agent, column = np.nonzero(near[:, _RECT_COLUMNS])
    if agent.size:  # slab test against the rectangle
        step = np.where(np.abs(direction) < 1e-12, 1e-12, direction)[..., agent]
        corners = rects[:, agent, _RECT_COLUMNS[column]].reshape(2, 2, -1) - origin[:, agent]
        t = corners[:, :, None] / step  # (corner, axis, ray, pair)
        first, last = np.minimum(t[0], t[1]), np.maximum(t[0], t[1])
        enter = np.maximum(np.maximum(first[0], first[1]), 0.0)
        leave = np.minimum(last[0], last[1])
        _nearest_per_agent(out, agent, np.where(enter <= leave, enter, np.inf))
    agent, column = np.nonzero(near[:, PILLAR_COLUMNS])
    if agent.size:  # ray against the pillar's circle
        k = column + PILLAR_COLUMNS.start
        offset = rects[:2, agent, k] - origin[:, agent]  # (axis, pair) to the centre
        b = _dot(direction[..., agent], offset[:, None])  # along the ray to the closest approach
        disc = b * b - (_dot(offset, offset) - radius[agent, k] ** 2)
        root = np.sqrt(np.maximum(disc, 0.0))
        t = np.where((disc >= 0) & (b + root >= 0), np.maximum(b - root, 0.0), np.inf)
        _nearest_per_agent(out, agent, t)
    return out


class Neighbourhood:
    """The (agent, obstacle) pairs that can touch during an action, gathered once for per-frame tests.

    Any other obstacle stays farther than PLAYER_RADIUS + CONTACT_SLOP from its agent all action, so
    it can neither touch nor push it. Solid pairs come first, then drop pairs; each kind is sorted.
    """

    def __init__(
        self,
        near: np.ndarray,
        rects: np.ndarray,
        radius: np.ndarray,
        contact: np.ndarray,
        gap: np.ndarray,
        per_frame: np.ndarray,
    ):
        """`near` (N, K) the pairs, `contact` (N, solids) the touching ones, `gap` as of the last
        observation, `per_frame` (N,) the farthest each player moves in one physics frame."""
        self.solid_agent, self.solid = np.nonzero(near[:, SOLID_COLUMNS])
        drop_agent, drop = np.nonzero(near[:, _DROP_COLUMNS])
        self.agent = np.concatenate([self.solid_agent, drop_agent])
        column = np.concatenate([self.solid, drop + _DROP_COLUMNS.start])
        self.rects = rects[:, self.agent, column]
        self.radius = radius[self.solid_agent, self.solid]
        self.contact = contact[self.solid_agent, self.solid]
        self.new_contacts = np.zeros(self.solid.size, np.int64)  # rising edges of contact so far
        self.pushed = np.unique(self.solid_agent)  # the agents a solid can push
        self.row = np.searchsorted(self.pushed, self.solid_agent)
        # The first frames, before any pair can touch or reach its drop, need no tests (1e-9 m
        # covers rounding).
        room = gap[self.agent, column] - 1e-9
        room[: self.solid.size] -= PLAYER_RADIUS + CONTACT_SLOP
        self.quiet_frames = max(math.ceil(np.min(room / np.maximum(per_frame[self.agent], 1e-9))) - 1, 0)

    def collide(self, pos: np.ndarray, vel: np.ndarray) -> np.ndarray:
        """Push the players out of solids, slide their velocity and count new contacts; returns the
        agents whose centre is over a drop (inside a pit or the void, edge included)."""
        offset = _offsets(_xz(pos[self.agent]), self.rects)
        d2 = _dot(offset, offset)
        solids = self.solid.size
        gap = np.sqrt(d2[:solids]) - self.radius
        contact = gap < PLAYER_RADIUS + CONTACT_SLOP
        self.new_contacts += contact > self.contact
        self.contact = contact
        hit = gap < PLAYER_RADIUS
        if np.count_nonzero(hit):
            self._push_out(pos, vel, offset[:, :solids], gap, hit)
        over_drop = d2[solids:] == 0.0
        if np.count_nonzero(over_drop):
            return np.unique(self.agent[solids:][over_drop])
        return self.agent[:0]

    def _push_out(
        self, pos: np.ndarray, vel: np.ndarray, offset: np.ndarray, gap: np.ndarray, hit: np.ndarray
    ) -> None:
        """Push out along each obstacle's outward normal by the penetration depth, then slide.

        Each agent's sums run over a row of all its solids, zeros included, so they add up in one
        fixed order whichever pairs are near.
        """
        outward = offset[0] + 1j * offset[1]
        centre_gap = gap + self.radius
        normal = np.divide(outward, centre_gap, out=np.zeros_like(outward), where=centre_gap > 0)
        inward = np.minimum((normal.conjugate() * vel[self.solid_agent]).real, 0.0) * hit
        push, slide = np.zeros((2, self.pushed.size, SOLID_COLUMNS.stop), complex)
        push[self.row, self.solid] = normal * np.where(hit, PLAYER_RADIUS - gap, 0.0)
        slide[self.row, self.solid] = inward * normal
        pos[self.pushed] += push.sum(1)
        vel[self.pushed] -= slide.sum(1)


def _xz(points: np.ndarray) -> np.ndarray:
    """(2, k) x and z rows of the complex `points` (k,)."""
    return np.array([points.real, points.imag])


def _offsets(xz: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """x, z from the nearest point of each rectangle (x0, z0, x1, z1 first) to the point `xz`."""
    return xz - np.minimum(np.maximum(xz, rects[:2]), rects[2:])


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot products of vectors whose x and z lie along the first axis."""
    products = a * b
    return products[0] + products[1]


def _nearest_per_agent(out: np.ndarray, agent: np.ndarray, t: np.ndarray) -> None:
    """out[a, r] = min(out[a, r], t[r, p] of every pair p that belongs to agent a)."""
    # on flat indices: NumPy's fast path for ufunc.at is one-dimensional
    rays = out.shape[1]
    np.minimum.at(out.reshape(-1), (np.arange(rays)[:, None] + agent * rays).ravel(), t.ravel())
