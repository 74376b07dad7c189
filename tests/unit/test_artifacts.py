"""Run directories on disk: what a killed save leaves is cleaned, and resume finds a complete checkpoint."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from spacetime_rl import artifacts
from spacetime_rl.errors import ConfigError


def snapshot(directory: Path, steps: int, *, zip_ok: bool = True) -> Path:
    path = artifacts.checkpoint_path(directory, steps)
    directory.mkdir(parents=True, exist_ok=True)
    if zip_ok:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("data", "{}")
    artifacts.stats_path(path).write_bytes(b"stats")
    artifacts.state_path(path).write_text("{}")
    return path


def run_dir(root: Path, name: str) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("{}\n")
    return run


def test_clean_stale_removes_temporaries_and_orphan_companions_only(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    kept = snapshot(checkpoints, 512)
    orphan = snapshot(checkpoints, 1024, zip_ok=False)
    temporary = checkpoints / ".vr_nav_model_1024_steps.zip.tmp"
    temporary.write_bytes(b"PK")
    (tmp_path / ".metrics.json.tmp").write_text("{")
    removed = artifacts.clean_stale(tmp_path)
    assert {p.name for p in removed} == {
        temporary.name,
        artifacts.stats_path(orphan).name,
        artifacts.state_path(orphan).name,
        ".metrics.json.tmp",
    }
    assert kept.is_file() and artifacts.stats_path(kept).is_file() and artifacts.state_path(kept).is_file()


def test_a_run_directory_resumes_from_its_newest_complete_checkpoint(tmp_path: Path) -> None:
    run = run_dir(tmp_path, "run")
    snapshot(run / "checkpoints", 512)
    newest = snapshot(run / "checkpoints", 2048)
    snapshot(run / "checkpoints", 4096, zip_ok=False)  # companions of a cut save
    (run / "checkpoints" / "vr_nav_model_8192_steps.zip").write_bytes(b"PK\x03\x04 torn")
    assert artifacts.resolve_resume(str(run), tmp_path) == newest


def test_latest_is_the_newest_complete_checkpoint_of_any_run(tmp_path: Path) -> None:
    older = snapshot(run_dir(tmp_path, "a") / "checkpoints", 4096)
    newer = snapshot(run_dir(tmp_path, "b") / "checkpoints", 512)
    os.utime(older, (1, 1))
    assert artifacts.resolve_resume("latest", tmp_path) == newer
    with pytest.raises(ConfigError, match="resume=latest found no complete checkpoint"):
        artifacts.resolve_resume("latest", tmp_path / "empty")


def test_an_incomplete_checkpoint_named_explicitly_is_refused_with_the_newest_valid_one(
    tmp_path: Path,
) -> None:
    run = run_dir(tmp_path, "run")
    valid = snapshot(run / "checkpoints", 512)
    torn = snapshot(run / "checkpoints", 1024, zip_ok=False)
    torn.write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(ConfigError, match=rf"cut short.*resume={valid}"):
        artifacts.load_state(torn)


def test_writes_are_atomic_and_leave_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    artifacts.write_json(target, {"a": 1})
    assert target.read_text().strip().startswith("{") and list(tmp_path.iterdir()) == [target]
