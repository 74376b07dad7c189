"""`train.py` as users run it: a subprocess on the embedded simulator with a tiny budget."""

from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def run_train(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, before: str = ""
) -> subprocess.CompletedProcess[str]:
    """`python train.py ARGS`; `before`: Python run first in the same interpreter (then via runpy)."""
    script = str(ROOT / "train.py")
    command = [sys.executable, script]
    if before:
        run = f"sys.argv[0] = {script!r}\nrunpy.run_path(sys.argv[0], run_name='__main__')"
        command = [sys.executable, "-c", f"import runpy, sys\n{before}\n{run}"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


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
    for job in ("0_quick_test", "1_quick_test"):  # <job number>_<name>, the name defaulting to the preset
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


@pytest.mark.slow
def test_a_recurrent_run_resumes_as_recurrent_and_refuses_an_mlp(tmp_path: Path) -> None:
    """network=lstm end to end: train, resume from a checkpoint (RecurrentPPO again, the step count
    continues), and a resume that asks for another policy is refused naming the key."""
    first = tmp_path / "first"
    result = run_train(*TINY, "network=lstm", "network.lstm_hidden_size=8", f"hydra.run.dir={first}")
    assert result.returncode == 0, result.stderr
    checkpoint = first / "checkpoints" / "vr_nav_model_512_steps.zip"
    resumed = tmp_path / "resumed"
    result = run_train(
        *TINY,
        "network=lstm",
        "network.lstm_hidden_size=8",
        "training.total_timesteps=1536",
        f"resume={checkpoint}",
        f"hydra.run.dir={resumed}",
    )
    assert result.returncode == 0, result.stderr
    data, _, _ = load_from_zip_file(str(resumed / "final_model.zip"), device="cpu")
    assert data is not None and data["policy_class"].__name__ == "RecurrentActorCriticPolicy"
    assert json.loads((resumed / "metrics.json").read_text())["num_timesteps"] == 1536

    refused = run_train(*TINY, f"resume={checkpoint}", f"hydra.run.dir={tmp_path / 'mlp'}")
    assert refused.returncode == 1
    assert "network.policy=MlpPolicy but resume=" in refused.stdout + refused.stderr
    assert "pass network.policy=MlpLstmPolicy" in refused.stdout + refused.stderr


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
    # As asked: null, one server per URL (it once said 1 here while two servers trained).
    assert saved["env"]["num_environments"] is None


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


@pytest.fixture(scope="module")
def named_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`name=baseline tags=[walk,v2] logger=csv` in Hydra's default run folder, under a fresh cwd."""
    cwd = tmp_path_factory.mktemp("named")
    budget = ["training.total_timesteps=256", "training.eval_freq=256", "training.save_freq=256"]
    result = run_train(
        *TINY, *budget, "name=baseline", "tags=[walk,v2]", "logger=csv", "ppo.learning_rate=0.00042", cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (cwd / "outputs").glob("*/*")
    return run_dir


def test_name_and_tags_label_the_folder_the_tensorboard_run_and_metrics(named_run: Path) -> None:
    assert named_run.name.endswith("_baseline+walk+v2")  # outputs/<date>/<time>_<name>+<tags>
    assert [p.name for p in (named_run / "tensorboard").iterdir()] == ["baseline+walk+v2_1"]
    metrics = json.loads((named_run / "metrics.json").read_text())
    assert (metrics["name"], metrics["tags"]) == ("baseline", ["walk", "v2"])


def test_hparams_tab_holds_the_command_line_values(named_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    events = EventAccumulator(str(named_run / "tensorboard" / "baseline+walk+v2_1"))
    events.Reload()
    plugin = {
        tag: HParamsPluginData.FromString(content)
        for tag, content in events.PluginTagToContent("hparams").items()
    }
    hparams = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert hparams["ppo.learning_rate"].number_value == pytest.approx(0.00042)
    assert hparams["name"].string_value == "baseline"
    assert hparams["network.net_arch"].string_value == "[64, 64]"
    assert "env.token" not in hparams  # a secret stays out
    metrics = [info.name.tag for info in plugin["_hparams_/experiment"].experiment.metric_infos]
    assert "eval/success_rate" in metrics and "eval/success_rate" in events.Tags()["scalars"]


def test_logger_csv_writes_every_metric_beside_tensorboard(named_run: Path) -> None:
    with open(named_run / "progress.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows and "eval/success_rate" in rows[0] and "rollout/ep_rew_mean" in rows[0]
    assert list((named_run / "tensorboard").rglob("events.out.tfevents.*"))


def test_a_bad_name_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = run_train("name=my run/1", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "name='my run/1' is invalid: use letters, digits" in result.stdout + result.stderr


def test_plain_train_does_not_import_optuna(tmp_path: Path) -> None:
    """Optuna (and SQLAlchemy, alembic) load only for sweeps: a plain run neither waits nor logs for them."""
    report = (
        "import atexit\natexit.register(lambda: print('imported:', sorted({m.split('.')[0] for m in "
        "sys.modules} & {'optuna', 'sqlalchemy', 'alembic', 'wandb', 'mlflow'})))"
    )
    overrides = [*TINY, "training.total_timesteps=256", "training.held_out_episodes=0"]
    result = run_train(*overrides, f"hydra.run.dir={tmp_path}", before=report)
    assert result.returncode == 0, result.stderr
    assert "imported: []" in result.stdout
    assert "setup plugin" not in result.stdout + result.stderr


@pytest.mark.parametrize("logger", ["wandb", "mlflow"])
def test_a_missing_logger_extra_names_the_option_and_the_fix(logger: str, tmp_path: Path) -> None:
    not_installed = f"sys.modules[{logger!r}] = None"
    result = run_train(f"logger={logger}", f"hydra.run.dir={tmp_path}", before=not_installed)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    output = result.stdout + result.stderr
    assert (
        f"logger={logger} needs the {logger} package" in output and f"pip install -e '.[{logger}]'" in output
    )
    assert not (tmp_path / "final_model.zip").exists()


@pytest.mark.slow
def test_logger_wandb_offline_writes_the_run_under_the_run_dir(tmp_path: Path) -> None:
    budget = ["training.total_timesteps=256", "training.eval_freq=256", "training.save_freq=256"]
    offline = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = run_train(
        *TINY, *budget, "logger=wandb", "name=walk", "tags=[v2]", f"hydra.run.dir={tmp_path}", env=offline
    )
    assert result.returncode == 0, result.stderr
    (path,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    assert (
        f"wandb          {path.parent} (project spacetime_rl, run " in result.stdout
    )  # the summary says where
    records = list(wandb_records(path))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.display_name, list(run.tags)) == ("walk+v2", ["v2"])
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["ppo.n_steps"] == 64
    history = [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    final = json.loads((tmp_path / "metrics.json").read_text())["final"]
    assert any(
        h.get("eval/success_rate") == final["eval/success_rate"] and h["_step"] == 256 for h in history
    )


def test_logger_wandb_without_a_login_says_what_to_do(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path), "WANDB_MODE": "online"}
    env = {key: value for key, value in os.environ.items() if key != "WANDB_API_KEY"} | home
    result = run_train(*TINY, "logger=wandb", f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "logger=wandb could not start a run (" in result.stdout
    assert "`wandb login`, or set WANDB_MODE=offline" in result.stdout


@pytest.mark.slow
def test_logger_mlflow_records_params_and_metrics_in_the_run_dir(tmp_path: Path) -> None:
    budget = ["training.total_timesteps=256", "training.eval_freq=256", "training.save_freq=256"]
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    overrides = ["logger=mlflow", "tags=[v2]", "ppo.learning_rate=0.00042", f"hydra.run.dir={tmp_path}"]
    result = run_train(*TINY, *budget, *overrides, env=env)
    assert result.returncode == 0, result.stderr
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("spacetime_rl").experiment_id])
    where = (
        f"mlflow         sqlite:///{tmp_path / 'mlflow.db'} (experiment spacetime_rl, run {run.info.run_id})"
    )
    assert where in result.stdout  # the summary says where
    assert run.info.run_name == "quick_test+v2" and run.data.tags["v2"] == "true"
    assert float(run.data.params["ppo.learning_rate"]) == 0.00042
    (point,) = client.get_metric_history(run.info.run_id, "eval/success_rate")
    final = json.loads((tmp_path / "metrics.json").read_text())["final"]
    assert (point.step, point.value) == (256, final["eval/success_rate"])


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of an offline wandb run file (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data, block, header = path.read_bytes(), 32768, struct.Struct("<IHB")
    assert data[:4] == b":W&B", data[:7]
    position, pending = 7, b""
    while position + header.size <= len(data):
        if block - position % block < header.size:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = header.unpack_from(data, position)
        if kind == 0:
            break
        pending += data[position + header.size : position + header.size + length]
        position += header.size + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.mark.parametrize(
    ("overrides", "given", "mode", "groups"),
    [
        (
            ["env.num_environments=2", "training.rollout=overlapped"],
            "overlapped",
            "overlapped",
            [[0, 4], [4, 8]],
        ),
        (["env.num_environments=1", "training.rollout=serial"], "serial", "serial", []),
        ([], "auto", "overlapped", [[0, 4]]),  # one launched server
        (["network=lstm"], "auto", "serial", []),  # RecurrentPPO
    ],
)
def test_the_records_say_which_rollout_mode_ran(
    overrides: list[str], given: str, mode: str, groups: list[list[int]], tmp_path: Path
) -> None:
    """Given or by default (auto: overlapped where it can run), the mode that ran is in metrics.json
    and the log, with the agents of each group an overlapped rollout alternated between, and what
    was asked in .hydra/config.yaml."""
    result = run_train(*TINY, "training.held_out_episodes=0", *overrides, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    logged = f"training.rollout={given}: {mode}" if given == "auto" else f"training.rollout={mode}"
    assert logged in result.stdout + result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["rollout"] == mode and metrics["rollout_groups"] == groups
    saved = yaml.safe_load((tmp_path / ".hydra" / "config.yaml").read_text())
    assert saved["training"]["rollout"] == given
    assert (tmp_path / "final_model.zip").is_file()


@pytest.mark.parametrize("affinity", ["true", "false"])
def test_the_records_say_which_cores_an_overlapped_run_was_pinned_to(affinity: str, tmp_path: Path) -> None:
    """training.cpu_affinity (the default): pinned rollouts on the first usable core, the training
    servers on the rest, and how many rollouts ran pinned and unpinned (2 here: the warm-up, pinned,
    then the first timed unpinned), in metrics.json and the log; off, or serial (above), nothing is
    pinned."""
    result = run_train(
        *TINY,
        "training.held_out_episodes=0",
        "env.num_environments=2",
        "training.rollout=overlapped",
        f"training.cpu_affinity={affinity}",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    cores = sorted(os.sched_getaffinity(0))
    pinned = affinity == "true" and len(cores) > 1
    assert metrics["rollout_cores"] == (cores[:1] if pinned else [])
    assert metrics["servers"]["train"]["cores"] == (cores[1:] if pinned else None)
    assert metrics["servers"]["eval"]["cores"] is None  # it steps between rollouts: anywhere
    placement = metrics["rollout_placement"]
    if pinned:
        assert placement["pinned"] == {"rollouts": 1, "median_seconds": None}  # the warm-up is not timed
        assert placement["unpinned"]["rollouts"] == 1 and placement["unpinned"]["median_seconds"] > 0
        assert placement["always_pinned"] is False
    else:
        assert placement is None
    assert ("training.cpu_affinity: rollouts run pinned (on core" in result.stdout + result.stderr) == pinned
