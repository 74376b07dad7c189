"""`Placement` (training.cpu_affinity): which rollouts run pinned, from the rollouts' own timings."""

from __future__ import annotations

import logging
import os

import pytest

from spacetime_rl.training.overlapped import CoreSplit, Placement

CORES = sorted(os.sched_getaffinity(0))
SPLIT = CoreSplit(frozenset(CORES[:1]), frozenset(CORES[1:] or CORES))


class Servers:
    """Stands in for `ServerPool.place`: where the servers were put, call by call."""

    def __init__(self) -> None:
        self.calls: list[frozenset[int] | None] = []

    def __call__(self, cores: frozenset[int] | None) -> None:
        self.calls.append(cores)


def run(placement: Placement, seconds: dict[bool, float], rollouts: int) -> list[bool]:
    """`rollouts` rollouts as OverlappedPPO runs them, each taking `seconds[pinned]`; which were pinned."""
    ways = []
    for _ in range(rollouts):
        pinned = placement.next()
        with placement.rollout(pinned):
            assert os.sched_getaffinity(0) == (SPLIT.trainer if pinned else frozenset(CORES))
        placement.record(pinned, seconds[pinned])
        ways.append(pinned)
    return ways


def test_the_first_rollouts_time_both_ways_then_the_faster_runs_and_the_other_is_retimed():
    placement = Placement(SPLIT, Servers())
    ways = run(placement, {True: 1.0, False: 2.0}, 3 * Placement.RETRY)
    assert ways[: Placement.TRIALS] == [True, False, True, False, True]
    later = ways[Placement.TRIALS :]
    retimed = [i for i, pinned in enumerate(ways) if i >= Placement.TRIALS and not pinned]
    assert retimed == [Placement.RETRY, 2 * Placement.RETRY]  # every RETRY-th rollout, the other way
    assert later.count(False) == 2
    assert os.sched_getaffinity(0) == frozenset(CORES)  # the thread's cores are back after each


def test_when_unpinned_turns_faster_the_rollouts_follow(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, "spacetime_rl.training.overlapped")
    placement = Placement(SPLIT, Servers())
    assert run(placement, {True: 1.0, False: 2.0}, 8)[5:] == [True, True, True]
    # The machine gets busy: pinned rollouts now take 3 s. Rollout 8 is the retimed unpinned one;
    # 9 and 10 still run pinned (the window's median is 1 s until two 3 s rollouts are in it),
    # then unpinned, but for rollout 16, pinned, retimed.
    ways = run(placement, {True: 3.0, False: 2.0}, 2 * Placement.RETRY)
    assert ways == [False, True, True, *[False] * 5, True, *[False] * 7]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("training.cpu_affinity: rollouts run pinned from now on (pinned 1.000 s")
    assert any(m.startswith("training.cpu_affinity: rollouts run unpinned from now on") for m in messages)


def test_the_warm_up_rollout_is_not_timed():
    placement = Placement(SPLIT, Servers())
    run(placement, {True: 100.0, False: 2.0}, 1)  # the first rollout: torch and the servers warm up
    assert run(placement, {True: 1.0, False: 2.0}, 2) == [False, True]
    assert placement.summary()["pinned"] == {"rollouts": 2, "median_seconds": 1.0}  # 100 s left out


def test_the_servers_move_only_when_the_way_changes():
    servers = Servers()
    placement = Placement(SPLIT, servers)
    run(placement, {True: 1.0, False: 2.0}, 7)  # T F T F T T T
    assert servers.calls == [None, SPLIT.servers, None, SPLIT.servers]


def test_always_pins_every_rollout_and_never_moves_the_servers():
    servers = Servers()
    placement = Placement(SPLIT, servers, always=True)
    assert run(placement, {True: 3.0, False: 1.0}, 12) == [True] * 12
    assert servers.calls == []
    assert placement.summary() == {
        "pinned": {"rollouts": 12, "median_seconds": 3.0},
        "unpinned": {"rollouts": 0, "median_seconds": None},
        "always_pinned": True,
    }
