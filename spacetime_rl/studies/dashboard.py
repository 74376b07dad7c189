"""optuna-dashboard on a sweep's study: `python -m spacetime_rl.studies.dashboard <storage or sweep folder>`.

    python -m spacetime_rl.studies.dashboard multirun/sweeps/ppo            # the folder's study (multirun.yaml)
    python -m spacetime_rl.studies.dashboard journal:///shared/studies/ppo.log --port 8081

Takes every `sweep.storage` form (sqlite:///, postgresql://, journal:///) and opens it with the
sweeps' own storage code, so the dashboard reads a journal file under the same lock as the workers
(optuna-dashboard's own command takes the journal's bare path, not `journal:///`). Needs the
`dashboard` extra: pip install -e '.[dashboard]'.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Final

from spacetime_rl.errors import ConfigError, SpaceTimeError
from spacetime_rl.studies.report import sweep_storage
from spacetime_rl.studies.storage import open_storage, redact

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080


def storage_url(target: str) -> str:
    """`target` itself when it is a storage URL, else the storage of the sweep folder it names."""
    if "://" in target:
        return target
    folder = Path(target)
    if not (folder / "multirun.yaml").is_file():
        raise ConfigError(
            f"{target} is neither a storage URL nor a sweep folder (no multirun.yaml in it): give "
            "sweep.storage's value (sqlite:///<path>, postgresql://<user>@<host>/<db>, journal:///<path>) "
            "or a folder written by python train.py -m sweep=<name>"
        )
    return sweep_storage(folder)


def serve(target: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve the dashboard on http://host:port until interrupted."""
    try:
        from optuna_dashboard import run_server
    except ImportError as err:
        raise ConfigError(
            "optuna-dashboard is not installed: pip install -c constraints.txt -e '.[dashboard]'"
        ) from err
    url = storage_url(target)
    storage = open_storage(url)
    log.info("optuna-dashboard on %s: http://%s:%d/", redact(url), host, port)
    run_server(storage, host=host, port=port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="a sweep.storage value, or a sweep folder (multirun/sweeps/<study>)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s][%(levelname)s] - %(message)s")
    try:
        serve(args.target, args.host, args.port)
    except SpaceTimeError as err:
        log.error("%s", err)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
