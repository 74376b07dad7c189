"""The `sweep` config group: the YAML files of the `sweeps/` folder next to the app's `conf/`.

The folder's name is not the group's (one file per search, `python train.py -m sweep=ppo`), so a small
config source maps the group `sweep` onto the folder; the search path plugin finds the folder from the
primary config directory, which is why `sweep=<name>` works from any working directory.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "sweep"
FOLDER = "sweeps"
SCHEME = "spacetime-sweeps"


class SweepsConfigSource(ConfigSource):
    """Serves `<folder>/<name>.yaml` as `sweep/<name>` and nothing else."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    @staticmethod
    def _in_folder(config_path: str) -> str | None:
        """The path inside the folder of `sweep` or `sweep/<name>`; None for anything else."""
        if config_path == GROUP:
            return ""
        if config_path.startswith(f"{GROUP}/"):
            return config_path[len(GROUP) + 1 :]
        return None

    def _file(self, inner: str) -> Path:
        return Path(self.path) / inner

    def load_config(self, config_path: str) -> ConfigResult:
        inner = self._in_folder(config_path)
        path = self._file(self._normalize_file_name(inner)) if inner else None
        if path is None or not path.is_file():
            raise ConfigLoadError(f"Config not found: {config_path}")
        text = path.read_text(encoding="utf-8")
        return ConfigResult(
            config=OmegaConf.create(text),
            path=f"{self.scheme()}://{self.path}",
            provider=self.provider,
            header=ConfigSource._get_header_dict(text[:512]),
        )

    def available(self) -> bool:
        return Path(self.path).is_dir()

    def is_group(self, config_path: str) -> bool:
        if config_path == "":
            return True
        inner = self._in_folder(config_path)
        return inner is not None and self._file(inner).is_dir()

    def is_config(self, config_path: str) -> bool:
        inner = self._in_folder(config_path)
        return bool(inner) and self._file(self._normalize_file_name(inner)).is_file()  # type: ignore[arg-type]

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if config_path == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        inner = self._in_folder(config_path)
        if inner is None or not self._file(inner).is_dir():
            return []
        files: list[str] = []
        for child in self._file(inner).iterdir():
            self._list_add_result(
                files=files,
                file_path=f"{config_path}/{child.name}",
                file_name=child.name,
                results_filter=results_filter,
            )
        return sorted(set(files))


class SweepsSearchPathPlugin(SearchPathPlugin):
    """Adds the `sweeps/` folder beside the primary config directory (train.py's `conf/`), if there is one."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for element in search_path.get_path():
            # The primary config directory: a plain path, or file://path once Hydra has normalised it.
            if element.provider != "main" or not element.path:
                continue
            path = element.path.removeprefix("file://")
            if "://" not in path and (folder := Path(path).parent / FOLDER).is_dir():
                search_path.append(provider="spacetime_rl-sweeps", path=f"{SCHEME}://{folder}")
            return
