"""The jobs stand side by side: none imports another; what they share lives in modules below them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

PACKAGE: Final = Path(__file__).resolve().parents[2] / "spacetime_rl"
#: Each job: its module or package under spacetime_rl/.
JOBS: Final = ("training", "evaluation", "export", "compare", "sweeps")


def job_modules(job: str) -> list[Path]:
    path = PACKAGE / job
    return sorted(path.rglob("*.py")) if path.is_dir() else [PACKAGE / f"{job}.py"]


def project_imports(path: Path) -> set[str]:
    """Every `spacetime_rl...` module a file imports, wherever the import statement is."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("spacetime_rl")}


@pytest.mark.parametrize("job", JOBS)
def test_no_job_imports_another(job: str) -> None:
    others = [f"spacetime_rl.{other}" for other in JOBS if other != job]
    for path in job_modules(job):
        borrowed = sorted(
            name
            for name in project_imports(path)
            if any(name == o or name.startswith(f"{o}.") for o in others)
        )
        assert not borrowed, f"{path.relative_to(PACKAGE.parent)} imports {borrowed}"


def test_no_package_holds_a_cycle_open_with_a_lazy_getattr() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        functions = {n.name for n in ast.parse(init.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert "__getattr__" not in functions, init


def test_compare_and_the_metric_names_load_no_torch() -> None:
    for module in ("compare", "metrics", "artifacts"):
        imports = project_imports(PACKAGE / f"{module}.py")
        assert not any(
            name.startswith(("spacetime_rl.training", "spacetime_rl.evaluation.job")) for name in imports
        )
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        top = {
            alias.name.split(".")[0]
            for node in tree.body
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
        }
        assert not top & {"torch", "stable_baselines3"}, module


def test_a_single_training_run_loads_neither_optuna_nor_pandas() -> None:
    """train.py calls training directly; the sweeps job (Optuna, pandas) loads only for a sweep trial."""
    code = "import sys, spacetime_rl.training, spacetime_rl.app; print(sorted({'optuna', 'pandas'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
