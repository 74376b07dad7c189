"""The command of a `-m` sweep over `tests/integration/fake_train_app.py` (no training, real sweeper)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

FAKE_APP: Final = Path(__file__).parent / "integration" / "fake_train_app.py"


def fake_sweep_command(sweep_dir: Path, *overrides: str, sweep: str = "ppo") -> list[str]:
    """`python fake_train_app.py -m sweep=<sweep> hydra.sweep.dir=<sweep_dir> <overrides>`."""
    return [sys.executable, str(FAKE_APP), "-m", f"sweep={sweep}", f"hydra.sweep.dir={sweep_dir}", *overrides]
