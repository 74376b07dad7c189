"""JSON configs in the format of the seed's `rl_config.py`, so existing users can train with them as is.

`python train.py config_file=my.json` turns the file into Hydra overrides placed before the
command line's (`expand_config_file`), so Hydra composes them like typed ones: preset < file <
command line, and `.hydra/config.yaml`, `.hydra/overrides.yaml` and `--cfg job` show the file's values.
`python -m spacetime_rl.seed_config [path]` writes an example file, as `python rl_config.py` did.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spacetime_rl.errors import ConfigError

log = logging.getLogger(__name__)

#: Seed section -> config group. Keys inside a section keep their names unless aliased below.
SECTIONS = {
    "network": "network",
    "ppo": "ppo",
    "rewards": "reward",
    "training": "training",
    "environment": "env",
}

#: Seed keys that live elsewhere (or under another name) in this framework.
ALIASES = {
    ("training", "use_curriculum"): "curriculum.enabled",
    ("training", "curriculum_stages"): "curriculum.stages",
    ("training", "num_workers"): None,  # servers are stepped concurrently: no worker processes to size
}

EXAMPLE: dict[str, dict[str, Any]] = {
    "network": {"policy": "MlpPolicy", "net_arch": [256, 256], "activation_fn": "relu"},
    "ppo": {"learning_rate": 0.0003, "batch_size": 64, "n_epochs": 10, "gamma": 0.99},
    "rewards": {"goal_reached": 100.0, "collision_penalty": -10.0, "comfort_bonus": 2.0},
    "training": {"total_timesteps": 1000000, "save_freq": 10000},
    "environment": {"num_environments": 1, "max_episode_steps": 1000, "action_smoothing": 0.2},
}


def load_seed_config(path: str | Path) -> dict[str, Any]:
    """Read a seed-format JSON file and return it as dotted config keys -> values.

    Unknown sections are an error naming the section; unknown keys inside a section are left for the
    schema to reject with the full key name.
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"config_file={str(path)!r} does not exist: give the path of a JSON config"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config_file={str(path)!r} is not valid JSON ({exc}): fix the file") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"config_file={str(path)!r} must hold a JSON object with sections {sorted(SECTIONS)}"
        )
    overrides: dict[str, Any] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"config_file={str(path)!r}: unknown section {section!r}; use the sections {sorted(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"config_file={str(path)!r}: section {section!r} must be a JSON object")
        for key, value in values.items():
            target = ALIASES.get((section, key), f"{SECTIONS[section]}.{key}")
            if target is None:
                log.warning("config_file: %s.%s=%r has no effect here and is ignored", section, key, value)
            else:
                overrides[target] = value
    return overrides


CONFIG_FILE_KEY = "config_file"
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


def expand_config_file(overrides: Sequence[str]) -> list[str]:
    """`overrides` with a `config_file=PATH` among them followed by the file's values as overrides.

    A key the command line also sets keeps the command line's value (its override is not added).
    """
    files = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{CONFIG_FILE_KEY}=")]
    if not files:
        return list(overrides)
    if len(files) > 1 or "," in files[0]:
        raise ConfigError(
            f"{CONFIG_FILE_KEY}={','.join(files)!r} is invalid: give one JSON file per run (to compare "
            "several, run train.py once per file)"
        )
    typed = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    from_file = [
        f"{key}={hydra_value(value)}" for key, value in load_seed_config(files[0]).items() if key not in typed
    ]
    return [*overrides, *from_file]


def hydra_value(value: Any) -> str:
    """`value` (from JSON) written in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in ("null", "true", "false"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_example(path: str | Path = "example_config.json") -> Path:
    file = Path(path)
    file.write_text(json.dumps(EXAMPLE, indent=2) + "\n")
    return file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spacetime_rl.seed_config",
        description="Write an example JSON config in the format of the original rl_config.py.",
    )
    parser.add_argument(
        "path", nargs="?", default="example_config.json", help="the file to write (default %(default)s)"
    )
    args = parser.parse_args(argv)
    written = write_example(args.path)
    print(f"Wrote {written}. Edit it, then train with: python train.py config_file={written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
