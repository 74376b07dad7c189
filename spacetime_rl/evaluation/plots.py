"""Top-down pictures of evaluation episodes: one panel per episode.

Drawn on a bare `Figure` (Agg canvas, no pyplot state), so it works headless and in threads.

Each panel shows the episode's arena when the server gave it (`/debug/layout`: boxes, pillars,
pits, the platform edge and the goal radius), then the start, the goal, the path and the collisions.
Axes are world x and z with -Z (Godot's forward) pointing up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Rectangle

from spacetime_rl.metrics import EpisodeResult

__all__ = ["plot_episodes"]

MARGIN: Final = 2.5  # m shown around the path and the goal
PANEL_INCHES: Final = 4.0


def plot_episodes(results: Sequence[EpisodeResult], path: Path, title: str) -> Path:
    """Draw `results` (with paths) into a PNG at `path`; return it."""
    shown = [r for r in results if r.path is not None]
    columns = min(3, max(len(shown), 1))
    rows = max(math.ceil(len(shown) / columns), 1)
    figure = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(shown) :]:
        ax.axis("off")
    for ax, result in zip(axes.flat, shown, strict=False):
        _draw(ax, result)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no recorded paths", ha="center", va="center")
    handles = [
        Line2D([], [], color="tab:green", marker="o", linestyle="", label="start"),
        Line2D([], [], color="gold", marker="*", markersize=12, linestyle="", label="goal"),
        Line2D([], [], color="tab:red", marker="x", linestyle="", label="collision"),
        Rectangle((0, 0), 1, 1, color="dimgray", label="box / pillar"),
        Rectangle((0, 0), 1, 1, color="black", alpha=0.8, label="pit / edge"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.05, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    return path


def _draw(ax: Axes, result: EpisodeResult) -> None:
    assert result.path is not None
    episode = result.path
    points, goal = episode.points, episode.goal
    low = points.min(axis=0).clip(max=goal) - MARGIN
    high = points.max(axis=0).clip(min=goal) + MARGIN
    if episode.layout is not None:
        _draw_layout(ax, episode.layout)
    ax.plot(points[:, 0], points[:, 1], color=_outcome_color(result), linewidth=1.8)
    ax.plot(*points[0], "o", color="tab:green", markersize=7)
    ax.plot(*goal, "*", color="gold", markersize=14, markeredgecolor="black")
    if len(episode.collisions):
        ax.plot(episode.collisions[:, 0], episode.collisions[:, 1], "x", color="tab:red", markersize=8)
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(high[1], low[1])  # -Z (forward) up
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    ax.set_title(
        f"agent {result.agent} episode {result.index}: {_outcome(result)}, R={result.reward:.1f}", fontsize=9
    )


def _draw_layout(ax: Axes, layout: dict[str, Any]) -> None:
    half = float(layout["platform_half_size"])
    # The void beyond the platform: a thick dark frame just outside the edge.
    ax.add_patch(
        Rectangle(
            (-half - 50, -half - 50), 2 * half + 100, 2 * half + 100, color="black", alpha=0.8, zorder=0
        )
    )
    ax.add_patch(Rectangle((-half, -half), 2 * half, 2 * half, color="whitesmoke", zorder=0))
    for x0, z0, x1, z1 in layout["pits"]:
        ax.add_patch(Rectangle((x0, z0), x1 - x0, z1 - z0, color="black", alpha=0.8, zorder=1))
    for x0, z0, x1, z1 in layout["boxes"]:
        ax.add_patch(Rectangle((x0, z0), x1 - x0, z1 - z0, color="dimgray", zorder=1))
    for x, z, radius in layout["pillars"]:
        ax.add_patch(Circle((x, z), radius, color="dimgray", zorder=1))
    ax.add_patch(Circle(tuple(layout["goal"]), layout["goal_radius"], color="gold", alpha=0.35, zorder=1))


def _outcome(result: EpisodeResult) -> str:
    if result.success:
        return "goal"
    if result.info["episode_stats"]["falls"]:
        return "fell"
    return "timeout" if result.info["TimeLimit.truncated"] else "ended"


def _outcome_color(result: EpisodeResult) -> str:
    return {"goal": "tab:blue", "fell": "tab:purple"}.get(_outcome(result), "tab:orange")
