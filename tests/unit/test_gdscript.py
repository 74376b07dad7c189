"""The Godot addon under godot/: GDScript parses and lints clean, its config files are valid, and the
facts it copies (protocol constants, simulator constants, the route table) still match their sources.

Godot itself is not needed: gdtoolkit's gdparse/gdlint/gdformat check the scripts, and the copied
facts are read from the .gd sources with regular expressions.
"""

from __future__ import annotations

import ast
import configparser
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spacetime_rl.envs import preprocessing
from spacetime_rl.protocol import access, wire
from spacetime_rl.sim import collisions, layouts, world

ROOT = Path(__file__).parents[2]
GODOT = ROOT / "godot"
ADDON = GODOT / "addons" / "spacetime_rl"
OPENAPI = Path(__file__).parents[2] / "docs" / "openapi.yaml"
GD_FILES = sorted(GODOT.rglob("*.gd"))
#: Statuses any route may answer besides its own: 405 for a known path asked with another method.
TRANSPORT_STATUSES = {405}
#: Statuses of the web-page guard, answered before routing on every path (protocol/access.py).
GUARD_STATUSES = {403, 415}
#: The simulator modules whose constants the addon copies, each before the ones that import from it.
SIMULATOR = (collisions, layouts, world)


def gdtool(name: str) -> Path:
    tool = Path(sys.executable).parent / name
    if not tool.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable}; install the dev extras (gdtoolkit)")
    return tool


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=GODOT, capture_output=True, text=True, check=False)


def gd_constant(source: str, name: str) -> str:
    match = re.search(rf"^const {name} := (.+)$", source, re.MULTILINE)
    assert match, f"const {name} not found"
    return match.group(1).strip()


def gd_value(literal: str) -> object:
    """A GDScript literal (number, string, VectorN(...), [...] of strings, or arithmetic over numbers
    and RLProtocol constants) as a Python value."""
    literal = re.sub(r"RLProtocol\.(\w+)", lambda m: repr(getattr(wire, m.group(1))), literal)
    if re.fullmatch(r"[\d.]+(\s*[-+*/]\s*[\d.]+)+", literal):
        return eval(literal, {"__builtins__": {}})
    vector = re.fullmatch(r"Vector[23]\((.*)\)", literal)
    if vector:
        return tuple(float(part) for part in vector.group(1).split(","))
    if literal.startswith("["):
        return tuple(json.loads(literal))
    return json.loads(literal)


def test_there_are_scripts() -> None:
    names = {path.name for path in GD_FILES}
    for expected in ("plugin.gd", "rl_service.gd", "rl_api.gd", "rl_http_server.gd", "rl_agent.gd"):
        assert expected in names


@pytest.mark.parametrize("path", GD_FILES, ids=[p.name for p in GD_FILES])
def test_gdscript_parses(path: Path) -> None:
    result = run(gdtool("gdparse"), path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gdscript_lints_clean() -> None:
    result = run(gdtool("gdlint"), *GD_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gdscript_is_formatted() -> None:
    result = run(gdtool("gdformat"), "--check", *GD_FILES)
    assert result.returncode == 0, f"run `gdformat godot/`:\n{result.stdout}{result.stderr}"


def test_plugin_cfg_is_valid() -> None:
    config = configparser.ConfigParser()
    config.read(ADDON / "plugin.cfg")
    plugin = config["plugin"]
    for key in ("name", "description", "author", "version", "script"):
        assert plugin.get(key, "").strip('"'), f"plugin.cfg lacks {key}"
    assert (ADDON / plugin["script"].strip('"')).is_file()


def test_whitelist_parses_and_names_the_rl_scene() -> None:
    data = json.loads((GODOT / "config" / "scene_whitelist.json").read_text())
    scenes = data["scenes"] if isinstance(data, dict) else data
    assert all(isinstance(scene, str) and scene.startswith("res://") for scene in scenes)
    assert wire.DEFAULT_SCENE in scenes


def test_access_rules_match_the_simulator() -> None:
    """rl_access.gd refuses what spacetime_rl/protocol/access.py refuses (Godot cannot run here)."""
    source = (ADDON / "rl_access.gd").read_text()
    assert frozenset(gd_value(gd_constant(source, "LOOPBACK_NAMES"))) == access.LOOPBACK_NAMES  # type: ignore[arg-type]
    assert frozenset(gd_value(gd_constant(source, "BODY_TYPES"))) == access.BODY_TYPES  # type: ignore[arg-type]
    assert gd_value(gd_constant(source, "ANY_HOST")) == access.ANY_HOST
    api = (ADDON / "rl_api.gd").read_text()
    handle = api.split("func handle(")[1].split("\nfunc ")[0]
    assert handle.index("RLAccess.refusal(") < handle.index("_authorized(headers)")  # before the token


def test_protocol_constants_match_wire() -> None:
    source = (ADDON / "rl_protocol.gd").read_text()
    fields = tuple(
        (name, int(size))
        for name, size in re.findall(r'\["(\w+)", (\d+)\]', source.split("const OBSERVATION_SIZE")[0])
    )
    assert fields == wire.OBSERVATION_FIELDS
    copied = [name for name in re.findall(r"^const (\w+) :=", source, re.MULTILINE) if hasattr(wire, name)]
    copied.remove("OBSERVATION_FIELDS")
    assert len(copied) >= 11
    for name in copied:
        assert gd_value(gd_constant(source, name)) == getattr(wire, name), name
    assert gd_value(gd_constant(source, "DEFAULT_MAX_SPEED")) == wire.RESET_OPTION_DEFAULTS["max_speed"]
    rotation = wire.RESET_OPTION_DEFAULTS["max_rotation_speed"]
    assert gd_value(gd_constant(source, "DEFAULT_MAX_ROTATION_SPEED")) == rotation


def test_ready_line_and_token_variable_are_the_ones_the_launcher_uses() -> None:
    source = (ADDON / "rl_service.gd").read_text()
    assert gd_value(gd_constant(source, "READY_LINE")) == wire.GODOT_READY_PREFIX + "http://%s:%d"
    assert gd_value(gd_constant(source, "TOKEN_VARIABLE")) == wire.TOKEN_VARIABLE


@pytest.mark.parametrize("script", ["rl_agent.gd", "rl_environment.gd"])
def test_constants_shared_with_the_simulator_match(script: str) -> None:
    source = (ADDON / script).read_text()
    names = re.findall(r"^const (\w+) :=", source, re.MULTILINE)
    owners = {name: [module for module in SIMULATOR if hasattr(module, name)] for name in names}
    shared = {name: found[0] for name, found in owners.items() if found}
    assert shared, f"{script} shares no constant with the simulator (spacetime_rl/sim)"
    for name, module in shared.items():
        expected = getattr(module, name)
        expected = tuple(expected) if isinstance(expected, tuple | list) else expected
        assert gd_value(gd_constant(source, name)) == expected, (
            f"{script} {name} differs from {module.__name__}"
        )


def test_world_axis_vectors_match_preprocessing_and_wire() -> None:
    """rl_policy.gd rotates the same world-axis 3-vectors into the heading frame as preprocessing.py,
    and every observation field the addon names is one of wire.OBSERVATION_FIELDS with that size."""
    source = (ADDON / "rl_policy.gd").read_text()
    block = source.split("const WORLD_VECTORS := [")[1].split("]")[0]
    vectors = tuple(re.findall(r'"(\w+)"', block))
    assert vectors == preprocessing._WORLD_VECTORS
    sizes = dict(wire.OBSERVATION_FIELDS)
    assert all(sizes.get(name) == 3 for name in vectors), f"WORLD_VECTORS {vectors} are not all 3-vectors"
    named = {
        name
        for path in ADDON.glob("*.gd")
        for name in re.findall(r'(?:offset_of|_vector)\((?:obs, )?"(\w+)"', path.read_text())
    }
    assert named, "no observation field named through offset_of() or _vector() any more"
    assert named <= set(sizes), f"the addon names fields wire.py does not have: {sorted(named - set(sizes))}"


def test_known_reset_options_match_the_simulator() -> None:
    source = (ADDON / "rl_environment.gd").read_text()
    block = source.split("const KNOWN_OPTIONS := [")[1].split("]")[0]
    assert tuple(re.findall(r'"(\w+)"', block)) == world._KNOWN_OPTIONS


def test_route_table_matches_openapi() -> None:
    source = (ADDON / "rl_api.gd").read_text()
    routes = {
        (path, method.lower()): {int(s) for s in statuses.split(",")}
        for path, method, statuses in re.findall(
            r'"(/[\w/]*)": \{"(GET|POST)": \["\w+", \[([\d, ]+)\]\]\}', source
        )
    }
    open_paths = set(re.findall(r'"(/[\w/]*)"', gd_constant(source, "OPEN_PATHS")))
    paths = yaml.safe_load(OPENAPI.read_text())["paths"]
    documented = {
        (path, method): {int(status) for status in operation["responses"]}
        for path, operations in paths.items()
        for method, operation in operations.items()
    }
    assert set(routes) == set(documented)
    for route, statuses in routes.items():
        optional = GUARD_STATUSES | ({401} if route[0] in open_paths else set())
        assert statuses <= documented[route], f"{route} answers statuses docs/openapi.yaml does not list"
        assert documented[route] - statuses <= optional, f"{route} lacks statuses docs/openapi.yaml lists"
    emitted = {int(s) for s in re.findall(r"_error\((\d{3}),", source)}
    every = set().union(*documented.values()) | TRANSPORT_STATUSES
    assert emitted <= every, (
        f"rl_api.gd answers {sorted(emitted - every)}, which docs/openapi.yaml never lists"
    )


def test_the_policy_feeds_the_input_the_exporter_names() -> None:
    """rl_policy.gd passes {OBS_INPUT: values} to godot_rl_agents' run_inference, whose C# feeds each
    key as the ONNX input of that name: it must be the exporter's observation input."""
    tree = ast.parse((ROOT / "spacetime_rl" / "export.py").read_text())
    constants = {
        node.target.id: ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign) and node.value and isinstance(node.target, ast.Name)
        if node.target.id in ("INPUT_NAMES", "MEMORY_INPUT")
    }
    source = (ADDON / "rl_policy.gd").read_text()
    assert gd_value(gd_constant(source, "OBS_INPUT")) == constants["INPUT_NAMES"][0]
    assert "{OBS_INPUT: values}" in source
    # an LSTM model's state goes in under the exporter's name and starts from zeros each episode
    assert gd_value(gd_constant(source, "MEMORY_INPUT")) == constants["MEMORY_INPUT"]
    assert "inputs[MEMORY_INPUT] = Array(_memory)" in source
    restart = source.split("func restart(")[1].split("\nfunc ")[0]
    assert "_memory.fill(0.0)" in restart


def test_http_server_bounds_hold_together() -> None:
    """rl_http_server.gd (issue 15): an idle kept-alive connection outlives any PPO update while an
    incomplete request is on a short clock; every status it answers has a reason phrase; a NUL byte
    is refused before the head is decoded (get_string_from_ascii stops at NUL)."""
    source = (ADDON / "rl_http_server.gd").read_text()
    value = {name: int(gd_constant(source, name)) for name in re.findall(r"^const (\w+_MS) :=", source, re.M)}
    assert value["HEAD_DEADLINE_MS"] < value["REQUEST_DEADLINE_MS"] < value["IDLE_TIMEOUT_MS"]
    assert value["IDLE_TIMEOUT_MS"] >= 30 * 60 * 1000, "the trainer is silent for minutes during PPO updates"
    block = source.split("const REASONS := {")[1].split("}")[0]
    reasons = {int(status) for status in re.findall(r"^\t(\d{3}):", block, re.M)}
    emitted = {int(s) for s in re.findall(r"_queue_(?:error|response)\(connection, (\d{3}),", source)}
    assert {400, 408, 503} <= emitted <= reasons
    read_head = source.split("func _read_head(")[1].split("\nfunc ")[0]
    assert read_head.index("has(0)") < read_head.index("get_string_from_ascii")
    for name in ("READ_BYTES_PER_POLL", "REQUESTS_PER_POLL", "OUTBOX_HIGH_WATER_BYTES", "MAX_CONNECTIONS"):
        assert int(gd_constant(source, name)) > 0
    # the simulator's limits are the same (protocol/wire.py)
    assert int(gd_constant(source, "MAX_CONNECTIONS")) == wire.MAX_CONNECTIONS
    assert value["HEAD_DEADLINE_MS"] == wire.HEADER_TIMEOUT * 1000
    assert value["REQUEST_DEADLINE_MS"] == wire.BODY_TIMEOUT * 1000
    assert value["IDLE_TIMEOUT_MS"] == wire.IDLE_TIMEOUT * 1000


def test_scene_root_is_found_without_current_scene() -> None:
    """While /scene/load swaps scenes SceneTree.current_scene is null; the environment must not fall
    back to its parent, and the service applies --rl-* overrides before the scene enters the tree."""
    environment = (ADDON / "rl_environment.gd").read_text()
    assert "current_scene" not in environment.split("func scene_root(")[1]
    service = (ADDON / "rl_service.gd").read_text()
    load = service.split("func load_scene(")[1].split("\nfunc ")[0]
    assert load.index("_apply_overrides(environment)") < load.index("tree.root.add_child(scene)")
