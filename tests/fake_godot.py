"""A stand-in `godot` binary for launcher tests: the simulator behind Godot's command line."""

from __future__ import annotations

import sys
from pathlib import Path

from spacetime_rl.godot.launcher import ADDON_SCRIPT, CLASS_CACHE


def fake_godot(path: Path, *, imports: bool = True, stdout_to_stderr: bool = False) -> Path:
    """A stand-in `godot` binary. It appends its arguments to `path`.log, one invocation a line;
    `--path P --import` writes P's script class cache (without `imports`, nothing); anything else
    prints Godot's banner and runs the simulator with Godot's flags, whose stdout goes to stderr with
    `stdout_to_stderr` (a release export, where print() is never flushed, says its ready line there)."""
    cache = f'"$project/{CLASS_CACHE.parent}"'
    path.write_text(
        "#!/bin/sh\n"
        f'printf "%s " "$@" >> "{path}.log"; echo >> "{path}.log"\n'
        'project=""; previous=""\n'
        'for arg in "$@"; do\n'
        '  if [ "$previous" = "--path" ]; then project="$arg"; fi\n'
        '  if [ "$arg" = "--import" ]; then\n'
        + (
            f"    mkdir -p {cache}\n"
            f'    echo \'list=[{{"class": &"RLService", "path": "{ADDON_SCRIPT}"}}]\' > "$project/{CLASS_CACHE}"\n'
            if imports
            else ""
        )
        + "    exit 0\n"
        "  fi\n"
        '  previous="$arg"\n'
        "done\n"
        'echo "Godot Engine v4.5.1.stable.official - https://godotengine.org"\n'
        f'exec "{sys.executable}" -m spacetime_rl.sim "$@"{" 1>&2" if stdout_to_stderr else ""}\n'
    )
    path.chmod(0o755)
    return path
