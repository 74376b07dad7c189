"""The package's dependency direction, read from the sources with `ast` (no imports run): the
simulator knows only the protocol (it stands in for Godot), and the protocol knows nothing above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "spacetime_rl"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, absolute, at any depth (function-level imports count too)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            modules.add(module)
            # `from spacetime_rl import x` imports the module spacetime_rl.x
            modules.update(f"{module}.{alias.name}" for alias in node.names if module == "spacetime_rl")
    return modules


def within(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in allowed)


def project_imports(subpackage: str) -> list[tuple[str, str]]:
    files = sorted((PACKAGE / subpackage).glob("*.py"))
    assert files, f"no modules in spacetime_rl/{subpackage}"
    return [
        (path.name, module)
        for path in files
        for module in sorted(imported_modules(path))
        if within(module, ("spacetime_rl",)) and module != "spacetime_rl"
    ]


def test_simulator_imports_only_the_protocol_and_errors() -> None:
    allowed = ("spacetime_rl.protocol", "spacetime_rl.errors", "spacetime_rl.sim")
    bad = [(name, module) for name, module in project_imports("sim") if not within(module, allowed)]
    assert not bad, f"the simulator must import only {allowed} from the project: {bad}"


def test_protocol_imports_nothing_above_it() -> None:
    allowed = ("spacetime_rl.protocol", "spacetime_rl.errors")
    bad = [(name, module) for name, module in project_imports("protocol") if not within(module, allowed)]
    assert not bad, f"the protocol must import only {allowed} from the project: {bad}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "protocol").glob("*.py")), ids=lambda path: path.name)
def test_protocol_does_no_http(path: Path) -> None:
    assert not any(within(module, ("aiohttp",)) for module in imported_modules(path))


PLUGINS = PACKAGE.parent / "hydra_plugins"


def private_modules(modules: set[str]) -> list[str]:
    """Hydra's, its plugins' and Optuna's modules with a private part (hydra._internal, a plugin's _impl)."""
    return sorted(
        module
        for module in modules
        if module.split(".")[0] in ("hydra", "hydra_plugins", "optuna")
        and any(part.startswith("_") for part in module.split("."))
    )


@pytest.mark.parametrize(
    "path",
    sorted([*PACKAGE.rglob("*.py"), *PLUGINS.rglob("*.py")]),
    ids=lambda path: str(path.relative_to(PACKAGE.parent)),
)
def test_only_public_hydra_and_optuna_apis(path: Path) -> None:
    """Private modules change without notice (hydra-optuna-sweeper's _impl held Optuna below 3)."""
    private = private_modules(imported_modules(path))
    assert not private, f"{path.name} imports private modules: {private}"


def test_private_modules_are_recognised() -> None:
    modules = {
        "hydra._internal.core_plugins.file_config_source",
        "hydra_plugins.hydra_optuna_sweeper._impl",
        "optuna.storages._heartbeat",
        "hydra.core.override_parser.types",
        "optuna.storages.journal",
        "spacetime_rl.sweeps._x",
    }
    assert private_modules(modules) == [
        "hydra._internal.core_plugins.file_config_source",
        "hydra_plugins.hydra_optuna_sweeper._impl",
        "optuna.storages._heartbeat",
    ]
