"""HTTP protocol v1 (docs/protocol.md), spoken by Godot's HTTP API, the embedded simulator and the client.

`wire` holds the constants and field layouts, `types` the decoded answers, `binary` the binary
`/rl/step` codec and `validation` the checks of an answer. No I/O and no aiohttp here: the
simulator imports this package and nothing of the client.
"""

from __future__ import annotations

from spacetime_rl.protocol import wire
from spacetime_rl.protocol.binary import decode_step, encode_step
from spacetime_rl.protocol.types import Events, ResetResult, RLSpec, StepResult
from spacetime_rl.protocol.validation import ResponseCheck

__all__ = [
    "Events",
    "RLSpec",
    "ResetResult",
    "ResponseCheck",
    "StepResult",
    "decode_step",
    "encode_step",
    "wire",
]
