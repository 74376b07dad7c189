"""docs/openapi.yaml is the contract: schemathesis, with every check, finds nothing against a simulator.

The run is bounded (a fixed number of examples per operation, a fixed seed) and covers a server with
a token and one without, each with the RL scene loaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from sim_process import AGENTS, TOKEN, SimProcess

from spacetime_rl.protocol import wire

SPEC: Final = Path(__file__).parents[2] / "docs" / "openapi.yaml"
EXAMPLES: Final = 30


def for_server(node: Any, num_agents: int) -> Any:
    """The spec with its per-server values (`x-count`, `x-below`; see its description) written in."""
    if isinstance(node, dict):
        if node.get("x-count") == "num_agents":
            node["minItems"] = node["maxItems"] = num_agents
        if node.get("x-below") == "num_agents":
            node["maximum"] = num_agents - 1
        for value in node.values():
            for_server(value, num_agents)
    elif isinstance(node, list):
        for value in node:
            for_server(value, num_agents)
    return node


def test_per_server_values_are_written_in() -> None:
    spec = for_server(yaml.safe_load(SPEC.read_text()), 7)
    schemas = spec["components"]["schemas"]
    for request in ("StepRequest", "ActionRequest"):
        actions = schemas[request]["properties"]["actions"]
        assert actions["minItems"] == actions["maxItems"] == 7
    assert schemas["ResetRequest"]["properties"]["agents"]["items"]["maximum"] == 6


@pytest.mark.parametrize("token", [TOKEN, None], ids=["token", "no-token"])
def test_schemathesis_finds_no_failure(tmp_path: Path, token: str | None) -> None:
    spec = tmp_path / "openapi.yaml"
    spec.write_text(yaml.safe_dump(for_server(yaml.safe_load(SPEC.read_text()), AGENTS)))
    server = SimProcess(
        *("--agents", str(AGENTS), "--scene", wire.DEFAULT_SCENE, "--seed", "0"),
        *(("--token", token) if token else ()),
    )
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", str(spec), "--url", server.url]
    command += ["--checks", "all", "--max-examples", str(EXAMPLES), "--seed", "1", "--workers", "1"]
    command += ["--continue-on-failure", "--report-junit-path", str(tmp_path / "junit.xml")]
    command += ["--header", f"Authorization: Bearer {token}"] if token else []
    try:
        run = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    report = (tmp_path / "junit.xml").read_text()
    assert 'failures="0"' in report and 'errors="0"' in report, report[:2000]
