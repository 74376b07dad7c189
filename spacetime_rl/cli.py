"""Console scripts (`pyproject.toml` `[project.scripts]`): the entry points under the names users expect.

`spacetime-train` and `spacetime-evaluate` run the checkout's `train.py` and `evaluate.py` themselves,
so Hydra finds `conf/` beside them exactly as `python train.py` does; they need the editable
install that `make install` makes (a wheel carries no `conf/`).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import Final

#: The checkout this package is installed from (editable): train.py, evaluate.py and conf/ live here.
ROOT: Final = Path(__file__).resolve().parents[1]


def train() -> None:
    """`spacetime-train ARGS` = `python train.py ARGS`."""
    _run_script("train.py")


def evaluate() -> None:
    """`spacetime-evaluate ARGS` = `python evaluate.py ARGS`."""
    _run_script("evaluate.py")


def _run_script(name: str) -> None:
    script = ROOT / name
    if not script.is_file():
        sys.exit(
            f"error: {script} is missing: the console scripts run the checkout's entry points, so install "
            "spacetime_rl from a source checkout with `make install` (pip install -e .)"
        )
    sys.argv[0] = str(script)
    runpy.run_path(str(script), run_name="__main__")
