"""A real one-node Ray cluster for tests: `ray start --head --block` on 127.0.0.1, in a short temp folder."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from postgres import free_port

RAY = Path(sys.executable).with_name("ray")
READY = "This command will now block"


@dataclass(frozen=True)
class RayHead:
    address: str  # 127.0.0.1:PORT
    pid: int  # of `ray start`, whose process group holds the raylet, the GCS and the workers
    node: str  # the node's address as Ray reports it: this machine's own, whatever --node-ip-address says


@contextmanager
def ray_head(num_cpus: int = 2) -> Iterator[RayHead]:
    """Start a head node; its whole process group is killed after."""
    port = free_port()
    # Ray's socket paths must fit in 107 bytes: a short folder, not pytest's tmp_path
    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    log = folder / "head.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            [
                str(RAY),
                "start",
                "--head",
                "--block",
                f"--port={port}",
                f"--num-cpus={num_cpus}",
                "--node-ip-address=127.0.0.1",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--temp-dir={folder / 'ray'}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the raylet, GCS and workers end with it
            # Without token authentication whatever ~/.ray holds: a token there (written by any
            # `ray.init()` that started a Ray of its own) turns it on, and clients given an address
            # would then be refused
            env=os.environ | {"RAY_AUTH_MODE": "disabled"},
        )
    try:
        while READY not in log.read_text():
            assert head.poll() is None, log.read_text()
            time.sleep(0.2)
        node = re.search(r"Local node IP: (\S+)", log.read_text())
        assert node, log.read_text()
        yield RayHead(f"127.0.0.1:{port}", head.pid, node.group(1))
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
