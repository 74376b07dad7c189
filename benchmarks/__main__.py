"""Run the benchmark suite and write its tables into docs/benchmarks.md.

    python -m benchmarks [--repeats 3] [--seconds 0.5] [--training-repeats 5] [--rollouts 6]
                         [--sweep-trials 20] [--placement-rollouts 16]
                         [--only env,training,quick_test,fleet,sweeps,placement] [--no-write]

Every comparison is measured in the same run, repeats interleaved, and reported as medians and
ratios: on a shared machine absolute figures drift, ratios much less. Only the part of
docs/benchmarks.md between the `results` markers is replaced, and only by a run of all its
sections (env, training, quick_test: a subset such as `--only training` prints its tables and
leaves the block alone); the fleet section has markers of its own, so `--only fleet` writes it
and keeps the other figures. The rest of the page is kept.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from typing import Final

from benchmarks.memory import ROOT
from benchmarks.report import DOC, machine, write_results
from benchmarks.throughput import AGENT_COUNTS, MAX_SERVERS, SEED_ENDPOINT_AGENTS, Samples, Throughput

BEGIN: Final = "<!-- results:begin (written by python -m benchmarks; edit outside the markers) -->"
END: Final = "<!-- results:end -->"
SECTIONS: Final = ("env", "training", "quick_test", "fleet", "sweeps", "placement")
RESULTS_SECTIONS: Final = ("env", "training", "quick_test")  # one block: written only when all three ran
PRINTED_ONLY: Final = ("sweeps", "placement")  # docs/benchmarks.md keeps their tables outside the blocks
FLEET_BEGIN: Final = (
    "<!-- fleet:begin (written by python -m benchmarks --only fleet; edit outside the markers) -->"
)
FLEET_END: Final = "<!-- fleet:end -->"
# targets on the 2-core machine (issues 7 and 21): PPO steps/s over HTTP / in-process
TARGET_TRAINING_RATIO: Final = 0.9  # 1 server, every run
TARGET_OVERLAPPED_RATIO: Final = 1.0  # 2 servers, overlapped rollouts
TARGET_STEP_64: Final = 100_000
TARGET_WORLD_64: Final = 200_000
TARGET_QUICK_TEST_SECONDS: Final = 60.0
TARGET_FLEET_SPEEDUP: Final = 0.9  # x N servers (issue 19)


def _k(value: float) -> str:
    return f"{value / 1000:,.1f}k" if value >= 1000 else f"{value:,.0f}"


def env_tables(samples: Samples, godot_rl_client: str) -> tuple[str, dict[str, float]]:
    m = samples.median
    lines = [
        "#### 1. Environment throughput (agent-steps/s)",
        "",
        "In-process: `World.step` + `observe` + resetting finished agents, k worlds one after another "
        "in one process. HTTP: `/rl/step` with `auto_reset` to k simulator subprocesses, as the "
        "VecEnv steps them (`GodotClient.send_step` to each, then `receive_step` from each, one "
        "kept-alive connection per server), as JSON and as the binary body, without busy polling; "
        "with one server also binary with busy polling on both sides, which `env.busy_poll=auto` "
        "picks for one server on two cores.",
        "",
        "| agents/server | servers | in-process | /rl/step JSON | /rl/step binary | binary, busy poll | binary / in-process | binary / JSON |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in AGENT_COUNTS:
        for k in range(1, MAX_SERVERS + 1):
            world, json_, binary = (m(("env", n, k, t)) for t in ("in-process", "json", "binary"))
            polling = _k(m(("env", n, 1, "binary, busy poll"))) if k == 1 else "-"
            lines.append(
                f"| {n} | {k} | {_k(world)} | {_k(json_)} | {_k(binary)} | {polling} | "
                f"{binary / world:.2f} | {binary / json_:.2f} |"
            )
    lines += [
        "",
        "#### 2. The seed's three round trips vs `/rl/step` (one server)",
        "",
        "| agents | /rl/action + /rl/observation + /rl/state | /rl/step JSON | /rl/step binary | binary step / seed |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in SEED_ENDPOINT_AGENTS:
        seed, json_, binary = (
            m(("seed", n, 1, "seed endpoints")),
            m(("env", n, 1, "json")),
            m(("env", n, 1, "binary")),
        )
        lines.append(f"| {n} | {_k(seed)} | {_k(json_)} | {_k(binary)} | {binary / seed:.2f} |")
    lines += [
        "",
        "#### 3. godot_rl_agents' TCP protocol vs `/rl/step` (one server)",
        "",
        f"Client: {godot_rl_client}, stepping the same simulator behind their framing "
        "(`benchmarks/godot_rl_peer.py`: 4-byte length + JSON, their handshake/env_info/reset/action/step messages).",
        "",
        "| agents | godot_rl TCP | /rl/step JSON | /rl/step binary | binary / godot_rl |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in AGENT_COUNTS:
        peer, json_, binary = (
            m(("godot_rl", n, 1, "godot_rl")),
            m(("env", n, 1, "json")),
            m(("env", n, 1, "binary")),
        )
        lines.append(f"| {n} | {_k(peer)} | {_k(json_)} | {_k(binary)} | {binary / peer:.2f} |")
    key = {"world_64": m(("env", 64, 1, "in-process")), "step_64": m(("env", 64, 1, "binary, busy poll"))}
    key["step_64_sleeping"] = m(("env", 64, 1, "binary"))
    key["step_64_json"] = m(("env", 64, 1, "json"))
    return "\n".join(lines), key


def training_table(repeats: int, rollouts: int, overrides: list[str]) -> tuple[str, dict[str, float]]:
    from benchmarks.training import MODES, RUNS, measure_training, train_config

    lines = [
        "#### 4. PPO training over HTTP vs in-process",
        "",
        f"`{' '.join(['preset=quick_test', *overrides])}` hyperparameters, {rollouts} rollouts per run "
        "after set-up; the same VecEnv, "
        "VecNormalize and `PPO` (`training.job._new_model`) over `GodotClient`s to simulator "
        "subprocesses or `InProcessTransport`s (`benchmarks/inprocess.py`). HTTP rollouts are "
        "collected serially (SB3's loop) or overlapped (`training.rollout=overlapped`: two server "
        "groups, one stepping while the policy acts for the other, each group's actions sent before "
        "its rewards are scored and before the step's callbacks and bookkeeping, so one server "
        "overlaps too, and the critic's values "
        "and the log-probabilities computed once at the rollout's end; "
        "the overlapped row puts every rollout on one core and the servers on the other "
        "(`training.cpu_affinity`, which in training pins only while that is timed faster), and the "
        "unpinned row turns that off). "
        "In-process, the baseline is SB3's serial loop; the \"in-process, overlapped's loop\" row runs "
        "OverlappedPPO's loop with every agent in one group (nothing to overlap with), so the last "
        "column, HTTP over it, is what the overlap gives net of its own costs (HTTP, two groups' "
        "per-call work). "
        "Rollout = time in `collect_rollouts` (policy + environment); training = the whole `learn()`. "
        f"{repeats} repeats, each running every row's mode in turn; ratios are per repeat.",
        "",
        "| servers | agents | rollouts collected | steps/s | in-process steps/s | / in-process median | min-max "
        "| rollout / in-process median | min-max | / in-process with overlapped's loop |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    key = {}
    shares: list[tuple[int, float]] = []  # (servers, in-process rollout time / learn() time)
    for environments, runs in RUNS.items():
        configs = {
            run: train_config([f"env.num_environments={environments}", *MODES[run[1]], *overrides])
            for run in runs
        }
        rates: dict[tuple[str, str], list[tuple[float, float]]] = {run: [] for run in runs}
        for _ in range(repeats):
            for run, config in configs.items():
                rate = measure_training(config, run[0], rollouts)
                rates[run].append((rate.steps_per_second, rate.rollout_steps_per_second))
        local, loop = rates[("in-process", "serial")], rates[("in-process", "overlapped")]
        shares.append((environments, statistics.median(steps / rollout for steps, rollout in local)))
        for (transport, mode), measured in rates.items():
            if (transport, mode) == ("in-process", "serial"):
                continue
            ratios = [h[0] / i[0] for h, i in zip(measured, local, strict=True)]
            rollout_ratios = [h[1] / i[1] for h, i in zip(measured, local, strict=True)]
            if transport == "in-process":
                label, over_loop = "in-process, overlapped's loop", "-"
            else:
                name = f"{environments}_{mode}"
                label = f"HTTP, {mode.replace('_', ', ')}"
                over_loop_median = statistics.median(h[0] / i[0] for h, i in zip(measured, loop, strict=True))
                over_loop = f"{over_loop_median:.2f}"
                key[f"training_ratio_{name}"] = statistics.median(ratios)
                key[f"training_ratio_{name}_min"] = min(ratios)
                key[f"rollout_ratio_{name}"] = statistics.median(rollout_ratios)
                key[f"loop_ratio_{name}"] = over_loop_median
            lines.append(
                f"| {environments} | {configs[(transport, mode)].env.num_agents} | {label} | "
                f"{_k(statistics.median(h[0] for h in measured))} | {_k(statistics.median(i[0] for i in local))} | "
                f"{statistics.median(ratios):.2f} | {min(ratios):.2f}-{max(ratios):.2f} | "
                f"{statistics.median(rollout_ratios):.2f} | {min(rollout_ratios):.2f}-{max(rollout_ratios):.2f} | "
                f"{over_loop} |"
            )
    lines += [
        "",
        "Rollouts took "
        + " and ".join(f"{share:.0%} ({n} server{'s' * (n > 1)})" for n, share in shares)
        + " of `learn()` in-process (medians); the rest is PPO's updates, the same work in every "
        "mode, so the PPO ratio moves by that fraction of the rollout ratio.",
    ]
    return "\n".join(lines), key


def quick_test_table(repeats: int) -> tuple[str, dict[str, float]]:
    from benchmarks.training import quick_test_run

    runs = [quick_test_run() for _ in range(repeats)]
    failed = [r.status for r in runs if r.status]
    seconds = [r.seconds for r in runs]
    peak = max(r.peak_rss_mib for r in runs)
    lines = [
        "#### 5. `python train.py preset=quick_test`",
        "",
        "From the command to the final checkpoint (a subprocess in a fresh output directory), 10,240 "
        "steps; peak RSS of the trainer plus its simulators, sampled every 0.1 s.",
        "",
        "| runs | median wall (s) | min-max (s) | peak RSS (MiB) |",
        "|---:|---:|---:|---:|",
        f"| {len(runs)} | {statistics.median(seconds):.1f} | {min(seconds):.1f}-{max(seconds):.1f} | {peak:.0f} |",
    ]
    if failed:
        lines.append(f"\n**{len(failed)} run(s) failed** (exit status {failed}).")
    return "\n".join(lines), {"quick_test_seconds": statistics.median(seconds)}


def fleet_table(seconds: float, repeats: int, rollouts: int) -> tuple[str, dict[str, float]]:
    from benchmarks.fleet import AGENTS, PPO_OVERRIDES, STEP_DELAY_MS, measure_fleet

    samples = measure_fleet(seconds, repeats, rollouts)
    one = samples.steps[1]
    lines = [
        f"#### 6. A fleet: N servers, each with {STEP_DELAY_MS:g} ms of physics time per step",
        "",
        f"Simulator subprocesses with `--step-delay-ms {STEP_DELAY_MS:g}` ({AGENTS} agents each; the "
        "delay is waiting, as Godot's physics time is to the trainer, not CPU), stepped as the VecEnv "
        "steps them (binary `/rl/step` with `auto_reset` sent to each, then each answer read), without "
        f"busy polling. {repeats} repeats, each measuring every N for {seconds:g} s in turn on the same "
        "8 servers; speed-up = N servers / 1 server within a repeat. The machine is shared with other "
        "workers running tests: the load average is in the header.",
        "",
        "| servers | agents | agent-steps/s median | min-max | speed-up median | min-max | goal (0.9 N) | met |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    key = {}
    for n, rates in samples.steps.items():
        ups = [r / base for r, base in zip(rates, one, strict=True)]
        goal = TARGET_FLEET_SPEEDUP * n
        key[f"fleet_speedup_{n}"] = statistics.median(ups)
        lines.append(
            f"| {n} | {n * AGENTS} | {_k(statistics.median(rates))} | {_k(min(rates))}-{_k(max(rates))} | "
            f"{statistics.median(ups):.2f} | {min(ups):.2f}-{max(ups):.2f} | {goal:.1f} | "
            f"{'yes' if min(ups) >= goal else '**no**'} |"
        )
    lines += [
        "",
        f"PPO over the same kind of fleet (`preset=quick_test {' '.join(PPO_OVERRIDES)}`, {rollouts} "
        "rollout(s) per run after set-up, fresh servers), rollouts collected serially or overlapped "
        "(`training.rollout`); rollout = time in `collect_rollouts`; overlapped / serial per repeat.",
        "",
        "| servers | agents | rollout | PPO steps/s median | min-max | rollout steps/s median | min-max "
        "| overlapped / serial median | min-max |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (n, mode), runs in samples.ppo.items():
        whole = [r.steps_per_second for r in runs]
        rollout = [r.rollout_steps_per_second for r in runs]
        gain = ""
        if mode == "overlapped":
            ups = [
                r.steps_per_second / s.steps_per_second
                for r, s in zip(runs, samples.ppo[(n, "serial")], strict=True)
            ]
            gain = f"{statistics.median(ups):.2f} | {min(ups):.2f}-{max(ups):.2f}"
        lines.append(
            f"| {n} | {n * AGENTS} | {mode} | {_k(statistics.median(whole))} | {_k(min(whole))}-{_k(max(whole))} | "
            f"{_k(statistics.median(rollout))} | {_k(min(rollout))}-{_k(max(rollout))} | {gain or '- | -'} |"
        )
    return "\n".join(lines), key


def targets_table(key: dict[str, float]) -> str:
    rows = []

    def row(name: str, measured: str, target: str, met: bool) -> None:
        rows.append(f"| {name} | {measured} | {target} | {'yes' if met else '**no**'} |")

    if "world_64" in key:
        row(
            "simulator in-process, 64 agents",
            _k(key["world_64"]),
            f">= {_k(TARGET_WORLD_64)}",
            key["world_64"] >= TARGET_WORLD_64,
        )
        row(
            "/rl/step binary, 64 agents, 1 server (busy poll, the default there)",
            _k(key["step_64"]),
            f">= {_k(TARGET_STEP_64)}",
            key["step_64"] >= TARGET_STEP_64,
        )
        row("/rl/step binary without busy polling", _k(key["step_64_sleeping"]), "(for comparison)", True)
        row("/rl/step JSON without busy polling", _k(key["step_64_json"]), "(for comparison)", True)
    if "training_ratio_1_overlapped" in key:
        worst = key["training_ratio_1_overlapped_min"]
        row(
            "PPO HTTP overlapped / in-process, 1 server, every run",
            f"{key['training_ratio_1_overlapped']:.2f} (min {worst:.2f}; serial "
            f"{key['training_ratio_1_serial']:.2f}, min {key['training_ratio_1_serial_min']:.2f})",
            f">= {TARGET_TRAINING_RATIO} every run",
            worst >= TARGET_TRAINING_RATIO,
        )
    if "training_ratio_2_overlapped" in key:
        ratio = key["training_ratio_2_overlapped"]
        row(
            "PPO HTTP overlapped / in-process, 2 servers",
            f"{ratio:.2f} (serial {key['training_ratio_2_serial']:.2f}; over in-process with "
            f"overlapped's loop {key['loop_ratio_2_overlapped']:.2f})",
            f">= {TARGET_OVERLAPPED_RATIO}",
            ratio >= TARGET_OVERLAPPED_RATIO,
        )
    for n in (2, 4, 8):
        if f"fleet_speedup_{n}" in key:
            speedup = key[f"fleet_speedup_{n}"]
            goal = TARGET_FLEET_SPEEDUP * n
            row(
                f"fleet of {n} vs 1 server (5 ms physics time)",
                f"{speedup:.2f}",
                f">= {goal:.1f}",
                speedup >= goal,
            )
    if "quick_test_seconds" in key:
        seconds = key["quick_test_seconds"]
        row(
            "quick_test wall time",
            f"{seconds:.1f} s",
            f"<= {TARGET_QUICK_TEST_SECONDS:.0f} s",
            seconds <= TARGET_QUICK_TEST_SECONDS,
        )
    if not rows:
        return "(none in these sections)"
    return "\n".join(["| target | measured (median) | goal | met |", "|---|---:|---:|---|", *rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every measurement")
    parser.add_argument("--seconds", type=float, default=0.5, help="wall time of one throughput measurement")
    parser.add_argument("--rollouts", type=int, default=6, help="PPO rollouts per training measurement")
    parser.add_argument(
        "--training-repeats",
        type=int,
        default=5,
        help="interleaved repeats of the PPO comparison (its ratio moves most from run to run)",
    )
    parser.add_argument(
        "--train-override",
        action="append",
        default=[],
        help="a train.py override for the PPO comparison (repeatable), e.g. training.torch_threads=1",
    )
    parser.add_argument(
        "--sweep-trials", type=int, default=20, help="no-op trials per study in the sweep overhead section"
    )
    parser.add_argument(
        "--placement-rollouts", type=int, default=16, help="PPO rollouts per run in the placement section"
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--no-write", action="store_true", help=f"print only; leave {DOC.name} alone")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--only {unknown} is not a section; use a subset of {','.join(SECTIONS)}")

    parts = [
        f"Machine: {machine()}",
        f"Command: `python -m benchmarks {' '.join(argv or sys.argv[1:])}`".rstrip(),
    ]
    key: dict[str, float] = {}
    runners: dict[str, Callable[[], tuple[str, dict[str, float]]]] = {
        "env": lambda: _env(args.seconds, args.repeats),
        "training": lambda: training_table(args.training_repeats, args.rollouts, args.train_override),
        "quick_test": lambda: quick_test_table(args.repeats),
        "fleet": lambda: fleet_table(args.seconds, args.repeats, args.rollouts),
        "sweeps": lambda: _sweeps(args.repeats, args.sweep_trials),
        "placement": lambda: _placement(args.training_repeats, args.placement_rollouts),
    }
    tables: list[str] = []
    fleet: list[str] = []
    for section in sections:
        print(f"benchmarks: {section} ...", file=sys.stderr, flush=True)
        table, values = runners[section]()
        print(table + "\n", flush=True)
        if section == "fleet":
            fleet.append(table)
        elif section not in PRINTED_ONLY:
            tables.append(table)
        key |= values
    summary = targets_table(key)
    print(summary)
    if args.no_write:
        return
    missing = [s for s in RESULTS_SECTIONS if s not in sections]
    if tables and missing:
        print(
            f"\n{DOC.relative_to(ROOT)} not written: its results block holds {', '.join(RESULTS_SECTIONS)} "
            f"together and this run left out {', '.join(missing)}; add them to --only to rewrite it",
            file=sys.stderr,
        )
        tables = []
    if tables:
        fleet_key = {name for name in key if name.startswith("fleet_")}
        main_summary = targets_table({k: v for k, v in key.items() if k not in fleet_key})
        write_results("\n\n".join([*parts, "#### Targets", main_summary, *tables]), BEGIN, END)
    if fleet:
        write_results("\n\n".join([*parts, *fleet]), FLEET_BEGIN, FLEET_END)
    if tables or fleet:
        print(f"\nwrote {DOC.relative_to(ROOT)}", file=sys.stderr)


def _env(seconds: float, repeats: int) -> tuple[str, dict[str, float]]:
    throughput = Throughput(seconds)
    samples = throughput.run(repeats)
    return env_tables(samples, throughput.godot_rl_client)


def _sweeps(repeats: int, trials: int) -> tuple[str, dict[str, float]]:
    from benchmarks.sweeps import sweeps_table

    return sweeps_table(repeats, trials)


def _placement(repeats: int, rollouts: int) -> tuple[str, dict[str, float]]:
    from benchmarks.placement import placement_table

    return placement_table(repeats, rollouts)


if __name__ == "__main__":
    main()
