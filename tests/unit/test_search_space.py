"""Hydra's sweep overrides as Optuna distributions (spacetime_rl/sweeps/search_space.py)."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from spacetime_rl.errors import ConfigError
from spacetime_rl.sweeps.search_space import SearchSpace


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("interval(0.1, 0.3)", FloatDistribution(0.1, 0.3)),
        ("tag(log, interval(1e-5, 3e-3))", FloatDistribution(1e-5, 3e-3, log=True)),
        ("int(interval(3, 10))", IntDistribution(3, 10)),
        ("tag(log, int(interval(1, 100)))", IntDistribution(1, 100, log=True)),
        ("choice(32, 64, 128)", CategoricalDistribution([32, 64, 128])),
        ("choice(tanh, relu)", CategoricalDistribution(["tanh", "relu"])),
        ("range(1, 5)", IntDistribution(1, 4)),  # Hydra's range leaves out its stop, as the basic sweeper
        ("range(0, 10, 3)", IntDistribution(0, 9, step=3)),
        ("range(5, 1, -2)", IntDistribution(3, 5, step=2)),
        ("range(0.0, 1.0, 0.25)", CategoricalDistribution([0.0, 0.25, 0.5, 0.75])),
    ],
)
def test_sweep_overrides_become_distributions(override: str, expected: object) -> None:
    assert SearchSpace.from_overrides([f"a.b={override}"]).distributions == {"a.b": expected}


def test_a_later_value_fixes_a_searched_key_and_deletions_pass_through() -> None:
    space = SearchSpace.from_overrides(["x=interval(0, 1)", "y=choice(a, b)", "x=0.5", "~z"])
    assert space.distributions == {"y": CategoricalDistribution(["a", "b"])}
    assert space.fixed == {"x": "0.5"}
    assert space.trial_overrides({"y": "b"}) == ["y=b", "x=0.5", "~z"]


def test_a_sampled_value_round_trips_through_an_override() -> None:
    space = SearchSpace.from_overrides(["lr=tag(log, interval(1e-5, 3e-3))"])
    assert space.trial_overrides({"lr": 1.5e-05}) == ["lr=1.5e-05"]


def test_a_sweep_the_sampler_cannot_draw_from_is_refused_with_its_key() -> None:
    with pytest.raises(ConfigError, match=r"a\.b sweep has no value"):
        SearchSpace.from_overrides(["a.b=range(3, 3)"])


def test_a_sweep_without_a_distribution_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"searches interval\(\), choice\(\) and range\(\).*give a one of"):
        SearchSpace.from_overrides(["a=glob(*)"])
