"""`train.py` as users run it: a subprocess on the embedded simulator with a tiny budget."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from stable_baselines3.common.save_util import load_from_zip_file

from .runs import ROOT, TINY_RUN

TINY = [
    *TINY_RUN,
    "ppo.n_epochs=2",
    "training.total_timesteps=1024",
    "training.save_freq=512",
    "training.eval_freq=512",
]


def run_train(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def tiny_run_and_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("run")
    result = run_train(*TINY, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir, result.stdout + result.stderr


@pytest.fixture(scope="module")
def tiny_run(tiny_run_and_output: tuple[Path, str]) -> Path:
    return tiny_run_and_output[0]


def test_a_run_ends_saying_where_everything_went_and_what_next(tiny_run_and_output: tuple[Path, str]) -> None:
    run_dir, output = tiny_run_and_output
    summary = output[output.index("the run:") :]
    for line in (
        f"run directory  {run_dir}",
        f"final model    {run_dir / 'final_model.zip'}",
        f"best model     {run_dir / 'best_models' / 'best_model.zip'}",
        "held out       4 episodes",
        f"python evaluate.py model={run_dir}",
        f"python -m spacetime_rl.export {run_dir} {run_dir / 'policy.onnx'}",
        f"tensorboard --logdir {run_dir / 'tensorboard'}",
    ):
        assert line in summary, line
    assert (
        "training.torch_threads=0 (auto): 1 thread(s)" in output or "training.torch_threads" not in TINY_RUN
    )


def test_seed_config_help_is_help_not_a_file_name(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spacetime_rl.seed_config", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "usage:" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_tiny_run_leaves_checkpoints_best_model_and_events(tiny_run: Path) -> None:
    assert sorted(p.name for p in (tiny_run / "checkpoints").glob("*.zip")) == [
        "vr_nav_model_1024_steps.zip",
        "vr_nav_model_512_steps.zip",
    ]
    assert (tiny_run / "checkpoints" / "vr_nav_model_512_steps_vecnormalize.pkl").is_file()
    assert (tiny_run / "best_models" / "best_model.zip").is_file()
    assert (tiny_run / "final_model.zip").is_file()
    assert list((tiny_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert (tiny_run / ".hydra" / "config.yaml").is_file()
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["num_timesteps"] == 1024
    assert 0.0 <= metrics["objective"]["value"] <= 1.0


def test_resume_continues_the_step_count(tiny_run: Path, tmp_path: Path) -> None:
    checkpoint = tiny_run / "checkpoints" / "vr_nav_model_512_steps.zip"
    overrides = [*TINY, "training.total_timesteps=1536", f"resume={checkpoint}", f"hydra.run.dir={tmp_path}"]
    result = run_train(*overrides)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_timesteps"] == 1536  # 512 from the checkpoint + 1024 more
    steps = sorted(int(p.name.split("_")[3]) for p in (tmp_path / "checkpoints").glob("*_steps.zip"))
    assert steps == [1024, 1536]


def test_multirun_gives_one_folder_per_job_with_its_overrides(tmp_path: Path) -> None:
    result = run_train("-m", "ppo.learning_rate=1e-4,3e-4", *TINY, f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    rates = []
    for job in ("0", "1"):
        overrides = yaml.safe_load((tmp_path / job / ".hydra" / "overrides.yaml").read_text())
        rates += [o for o in overrides if o.startswith("ppo.learning_rate=")]
        assert (tmp_path / job / "metrics.json").is_file()
    assert rates == ["ppo.learning_rate=0.0001", "ppo.learning_rate=0.0003"]


def test_default_multirun_dirs_have_sub_second_names(tmp_path: Path) -> None:
    result = run_train("-m", "training.seed=1", *TINY, "training.total_timesteps=256", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (day,) = (tmp_path / "multirun").iterdir()
    (stamp,) = day.iterdir()
    assert len(stamp.name.split("-")) == 4  # HH-MM-SS-microseconds


def test_resume_applies_a_changed_learning_rate_and_says_so(tiny_run: Path, tmp_path: Path) -> None:
    checkpoint = tiny_run / "checkpoints" / "vr_nav_model_512_steps.zip"
    result = run_train(*TINY, "ppo.learning_rate=0.001", f"resume={checkpoint}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert (
        "ppo.learning_rate=0.001 applies (the checkpoint trained with 0.0003)"
        in result.stdout + result.stderr
    )
    data, _, _ = load_from_zip_file(str(tmp_path / "final_model.zip"), device="cpu")
    assert data is not None and data["learning_rate"] == 0.001
    assert data["lr_schedule"](1.0) == 0.001  # the schedule the optimiser follows, not only the attribute


def test_resume_refuses_a_different_network(tiny_run: Path, tmp_path: Path) -> None:
    checkpoint = tiny_run / "checkpoints" / "vr_nav_model_512_steps.zip"
    result = run_train(*TINY, "network.net_arch=[16]", f"resume={checkpoint}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "network.net_arch=[16] but resume=" in output and "pass network.net_arch=[64,64]" in output
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("env.prot=1", "did you mean env.project?"),
        ("ppo.learnin_rate=1", "did you mean ppo.learning_rate?"),
        ("+ppo.learnin_rate=1", "did you mean ppo.learning_rate?"),
        ("ppo.batch_size=99999", "ppo.batch_size"),
        ("preset=nope", "preset"),
    ],
)
def test_bad_input_fails_with_the_key_and_no_traceback(override: str, named: str, tmp_path: Path) -> None:
    result = run_train(override, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert named in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "final_model.zip").exists()


def test_cfg_job_shows_the_config_file_values(tmp_path: Path) -> None:
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({"environment": {"action_smoothing": 0.2}, "ppo": {"learning_rate": 0.001}}))
    result = run_train("--cfg", "job", f"config_file={path}", "ppo.learning_rate=0.002")
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["env"]["action_smoothing"] == 0.2  # the file's
    assert shown["ppo"]["learning_rate"] == 0.002  # the command line beats the file
    assert shown["config_file"] == str(path)


def test_cfg_job_shows_the_composed_config() -> None:
    result = run_train("--cfg", "job", "preset=full_training")
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["training"]["total_timesteps"] == 5_000_000
    assert shown["preset"] == "full_training"


def test_seed_json_config_trains_as_is(tmp_path: Path) -> None:
    example = subprocess.run(
        [sys.executable, "-m", "spacetime_rl.seed_config", str(tmp_path / "example.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "config_file=" in example.stdout
    config = json.loads((tmp_path / "example.json").read_text())
    config["training"] = {"total_timesteps": 512, "save_freq": 256, "eval_freq": 512}
    config["environment"]["num_environments"] = 1
    (tmp_path / "small.json").write_text(json.dumps(config))
    run_dir = tmp_path / "run"
    result = run_train(
        f"config_file={tmp_path / 'small.json'}",
        "env.agents_per_environment=4",
        "ppo.n_steps=64",
        "training.eval_episodes=4",
        "training.held_out_episodes=4",
        "training.progress_bar=false",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["num_timesteps"] == 512
    assert (run_dir / "checkpoints" / "vr_nav_model_256_steps.zip").is_file()


def test_resume_a_run_directory_after_a_killed_save(tiny_run: Path, tmp_path: Path) -> None:
    """What SIGKILL during the 1024-step save leaves: a temporary and companions without their zip."""
    killed = tmp_path / "killed"
    shutil.copytree(tiny_run, killed)
    checkpoints = killed / "checkpoints"
    for name in ("vr_nav_model_1024_steps_state.json", "vr_nav_model_1024_steps_vecnormalize.pkl"):
        (checkpoints / name).rename(checkpoints / name.replace("1024", "1536"))
    (checkpoints / ".vr_nav_model_1536_steps.zip.tmp").write_bytes(b"PK\x03\x04 cut short")
    (checkpoints / "vr_nav_model_1024_steps.zip").write_bytes(b"PK\x03\x04 cut short too")  # a torn zip

    named = run_train(
        *TINY, f"resume={checkpoints / 'vr_nav_model_1024_steps.zip'}", f"hydra.run.dir={tmp_path / 'a'}"
    )
    assert named.returncode == 1 and "Traceback" not in named.stderr
    assert f"resume={checkpoints / 'vr_nav_model_512_steps.zip'}" in named.stdout + named.stderr  # the fix

    result = run_train(
        *TINY, "training.total_timesteps=1536", f"resume={killed}", f"hydra.run.dir={tmp_path / 'b'}"
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["resumed_from"] == str(checkpoints / "vr_nav_model_512_steps.zip")
    assert metrics["num_timesteps"] == 1536
    assert sorted(p.name for p in checkpoints.iterdir() if "1536" in p.name) == []  # the orphans are gone
    assert not list(checkpoints.glob(".*.tmp"))


def test_attaching_takes_the_agent_count_from_the_server(tmp_path: Path) -> None:
    """env=godot env.url=... with no agent count: the server's /rl/spec says 6, and 6 train."""
    server = subprocess.Popen(
        [sys.executable, "-m", "spacetime_rl.sim", "--port", "0", "--agents", "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        overrides = [o for o in TINY if not o.startswith("env.agents_per_environment=")]
        result = run_train(*overrides, "env=godot", f"env.url={url}", f"hydra.run.dir={tmp_path}")
    finally:
        server.terminate()
        server.wait(10)
    assert result.returncode == 0, result.stderr
    assert (
        f"env.agents_per_environment=null: server 0 at {url} (env.url) runs 6 agents"
        in result.stdout + result.stderr
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["env_used"]["agents"] == 6
    assert metrics["num_timesteps"] == 1152  # whole rollouts of 64 x 6


def test_attaching_to_a_fleet_trains_on_every_server_s_agents(tmp_path: Path) -> None:
    """'env.url=[a,b]' with a token: servers of 4 and 6 agents train 10 agents over 2 servers."""
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "spacetime_rl.sim", "--port", "0", "--agents", str(count), "--token", "t"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for count in (4, 6)
    ]
    try:
        urls = [server.stdout.readline().split()[-1] for server in servers if server.stdout is not None]
        overrides = [o for o in TINY if not o.startswith("env.agents_per_environment=")]
        result = run_train(
            *overrides, "env=godot", f"env.url=[{','.join(urls)}]", "env.token=t", f"hydra.run.dir={tmp_path}"
        )
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
    assert result.returncode == 0, result.stderr
    for index, (url, count) in enumerate(zip(urls, (4, 6), strict=True)):
        line = (
            f"env.agents_per_environment=null: server {index} at {url} (env.url[{index}]) runs {count} agents"
        )
        assert line in result.stdout + result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["env_used"]["agents"] == 10 and metrics["env_used"]["server_agents"] == [4, 6]
    assert metrics["num_timesteps"] == 1280  # whole rollouts of 64 x 10
    saved = yaml.safe_load((tmp_path / ".hydra" / "config.yaml").read_text())
    assert saved["env"]["url"] == urls


def test_launched_godot_needs_an_agent_count(tmp_path: Path) -> None:
    result = run_train(
        "env=godot", "env.executable=/bin/true", f"env.project={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "env.agents_per_environment=None is invalid" in result.stdout + result.stderr


def test_console_scripts_are_the_entry_points() -> None:
    bin_dir = Path(sys.executable).parent
    shown = subprocess.run(
        [str(bin_dir / "spacetime-train"), "--cfg", "job", "preset=full_training"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["training"]["total_timesteps"] == 5_000_000
    typo = subprocess.run(
        [str(bin_dir / "spacetime-train"), "+ppo.learnin_rate=1"], capture_output=True, text=True, timeout=120
    )
    assert typo.returncode == 1 and "did you mean ppo.learning_rate?" in typo.stderr
    for name in ("spacetime-evaluate", "spacetime-export", "spacetime-compare", "spacetime-sim"):
        helped = subprocess.run([str(bin_dir / name), "--help"], capture_output=True, text=True, timeout=120)
        assert helped.returncode == 0 and helped.stdout, name
