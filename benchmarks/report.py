"""What every benchmark writes: the machine it ran on, and its block of docs/benchmarks.md."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
from pathlib import Path
from typing import Final

from benchmarks.memory import ROOT

DOC: Final = ROOT / "docs" / "benchmarks.md"
PACKAGES: Final = ("numpy", "torch", "stable-baselines3", "aiohttp", "orjson", "godot-rl")


def machine() -> str:
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{datetime.date.today()}: {os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}; {', '.join(versions)}. Load average at start: {load}."
    )


def write_results(text: str, begin: str, end: str, path: Path = DOC) -> None:
    """Replace the block between `begin` and `end` of the page (or create the page around it)."""
    block = f"{begin}\n{text}\n{end}"
    page = path.read_text() if path.exists() else f"# Benchmarks\n\n{begin}\n{end}\n"
    if begin not in page:
        page = page.rstrip() + f"\n\n## Results\n\n{begin}\n{end}\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    path.write_text(pattern.sub(lambda _: block, page, count=1))
