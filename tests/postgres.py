"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, pg_ctl on a free port.

Debian's `postgresql` package provides the binaries (/usr/lib/postgresql/<version>/bin); .ci/run installs
it when missing. PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVER_USER = "postgres"


def binaries() -> Path:
    """The newest installed PostgreSQL's bin folder."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql (as .ci/run does)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server and yield its URL (database `postgres`, trust authentication on 127.0.0.1)."""
    bin_dir = binaries()
    folder = Path(tempfile.mkdtemp(prefix="spacetime_rl-postgres-"))
    data, socket_dir = folder / "data", folder / "socket"
    socket_dir.mkdir()
    prefix: list[str] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() == 0:
        account = pwd.getpwnam(SERVER_USER)
        for path in (folder, socket_dir):
            os.chown(path, account.pw_uid, account.pw_gid)
        prefix, user = ["runuser", "-u", SERVER_USER, "--"], SERVER_USER
    port = free_port()

    def run(*command: str) -> None:
        subprocess.run([*prefix, *command], check=True, capture_output=True, text=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "--no-sync")
    options = f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(folder / "server.log"),
        "-w",
        "start",
    )
    try:
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
