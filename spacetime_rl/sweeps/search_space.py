"""A sweep's search space: Hydra's sweep overrides as Optuna distributions, through Hydra's public parser.

interval(a, b)                 FloatDistribution(a, b); IntDistribution with int(...) or int ends
tag(log, interval(a, b))       the same, log-scaled
choice(x, y, ...)              CategoricalDistribution (values encoded as the override would write them)
range(a, b, step)              Hydra's range: b excluded; IntDistribution over ints, else the values
                               as a CategoricalDistribution (also for shuffle(range(...)))
key=value, ~key                fixed: passed to every trial as written, and out of the search
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from spacetime_rl.errors import ConfigError

LOG_TAG = "log"


@dataclass
class SearchSpace:
    """The searched parameters and the overrides every trial gets unchanged."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # key -> the value as written
    deletions: list[str] = field(default_factory=list)  # `~key` overrides

    @classmethod
    def from_overrides(cls, overrides: list[str]) -> SearchSpace:
        """Later overrides win: the command line (after hydra.sweeper.params) fixes a searched key."""
        space = cls()
        for override in OverridesParser.create().parse_overrides(overrides):
            if override.is_delete():
                assert override.input_line is not None
                space.deletions.append(override.input_line)
                continue
            key = override.get_key_element()
            space.distributions.pop(key, None)
            space.fixed.pop(key, None)
            if override.is_sweep_override():
                space.distributions[key] = distribution(override)
            else:
                space.fixed[key] = override.get_value_element_as_str()
        return space

    def trial_overrides(self, params: dict[str, Any]) -> list[str]:
        """One trial's overrides: its sampled `params` (with any custom_search_space suggestions), then
        the fixed values and deletions."""
        values = params | self.fixed
        return [f"{key}={value}" for key, value in values.items()] + self.deletions


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (interval, choice or range)."""
    sweep = override.value()
    key = override.get_key_element()
    if isinstance(sweep, IntervalSweep):
        assert sweep.start is not None and sweep.end is not None
        log = LOG_TAG in sweep.tags
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return IntDistribution(sweep.start, sweep.end, log=log)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log)
    if isinstance(sweep, ChoiceSweep | RangeSweep):
        values: list[Any] = list(override.sweep_iterator(transformer=Transformer.encode))
        if not values:
            raise ConfigError(f"{override.input_line}: the {key} sweep has no value; give it at least one")
        if isinstance(sweep, RangeSweep) and not sweep.shuffle and all(type(v) is int for v in values):
            assert sweep.step is not None
            return IntDistribution(min(values), max(values), step=abs(int(sweep.step)))
        return CategoricalDistribution(values)
    raise ConfigError(
        f"{override.input_line}: the spacetime_optuna sweeper searches interval(), choice() and range() "
        f"(optionally tag(log, ...)); give {key} one of those, or a single value to fix it"
    )
