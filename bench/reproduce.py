"""`make reproduce`: the paper's Table 3 (six methods) and Fig. 3 (alpha sweep) on synthetic data, CPU-sized.

Every run is a paper config (``configs/<method>.yaml``, ``configs/alpha/alpha_<a>.yaml``) with the CPU overlay
``configs/demo.yaml`` on top, so the runs differ from the paper recipe only in the keys that file states.
Steps: ``birads-calc synth`` (once), ``fit`` + ``test`` per config (a run whose ``metrics.json`` exists is kept,
so an interrupted reproduction resumes), ``birads-calc compare`` for the table and the alpha curve, then
``summary.json`` (command, seed, wall times) in the runs folder. Results: docs/reproduction.md.

Usage: ``python bench/reproduce.py [--patients 120] [--seed 0] [--jobs 2] [--methods mc proposed ...]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from birads_calc.io import write_json  # noqa: E402

OVERLAY = "configs/demo.yaml"
TABLE3 = ("mc", "mse", "mamse", "mc_attention", "mse_attention", "proposed")
# alpha 0.2 is configs/proposed.yaml itself (configs/alpha/alpha_0.2.yaml only repeats it): the proposed run is
# that point of the curve instead of a second identical run.
SWEEP = tuple(f"alpha/alpha_{a}" for a in ("0.05", "0.1", "0.3", "0.5", "0.7", "1.0"))
Runner = Callable[[list[str], dict[str, str]], None]


def birads_calc_subprocess(args: list[str], env: dict[str, str]) -> None:
    """Run one ``birads-calc`` command in its own process (the default runner); stop on failure."""
    subprocess.run([sys.executable, "-m", "birads_calc", *args], check=True, env={**os.environ, **env}, cwd=ROOT)


def run_name(method: str) -> str:
    """``alpha/alpha_0.5`` -> ``alpha_0.5``: the run folder's name."""
    return Path(method).name


def run_method(method: str, manifest: Path, runs: Path, extra: Sequence[str], runner: Runner, threads: int) -> float:
    """``fit`` then ``test`` of one config into ``runs/<name>``; returns its wall time in seconds (0 if done)."""
    run = runs / run_name(method)
    if (run / "metrics.json").is_file():
        print(f"reproduce: {run.name}: done before ({run / 'metrics.json'})", flush=True)
        return 0.0
    shutil.rmtree(run, ignore_errors=True)  # an unfinished run starts again from scratch
    common = ["--config", f"configs/{method}.yaml", "--config", OVERLAY, "--data.manifest", str(manifest)]
    common += ["--run_dir", str(run), "--trainer.enable_progress_bar", "false", *extra]
    env = {"OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    runner(["fit", *common], env)
    # test logs into <run>/test/, so the fit's training curve (<run>/metrics.csv) stays beside metrics.json
    runner(["test", *common, "--ckpt_path", str(run / "checkpoints" / "best.ckpt")], env)
    seconds = time.perf_counter() - start
    print(f"reproduce: {run.name}: {seconds:.0f} s", flush=True)
    return seconds


def compare_runs(methods: Sequence[str], runs: Path, figures: Path, runner: Runner) -> dict[str, str]:
    """Table 3 and the alpha curve from the finished runs; the PNGs are copied into ``figures``."""
    finished = [m for m in methods if (runs / run_name(m) / "metrics.json").is_file()]
    table = [str(runs / m) for m in finished if m in TABLE3]
    sweep = [str(runs / run_name(m)) for m in finished if m in SWEEP or m == "proposed"]
    figures.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for key, members, png, size in (("table3", table, "table.png", 1), ("fig3", sweep, "alpha.png", 2)):
        if len(members) < size:
            continue
        out = runs / "compare" / key
        runner(["compare", *members, "--out", str(out)], {})
        target = figures / f"reproduce_{key}.png"
        shutil.copyfile(out / png, target)
        outputs[key] = str(out / "table.md")
        outputs[f"{key}_png"] = str(target)
    return outputs


def reproduce(
    patients: int = 120,
    seed: int = 0,
    data: Path = Path("data/reproduce"),
    runs: Path = Path("runs/reproduce"),
    figures: Path = Path("docs/figures"),
    methods: Sequence[str] = TABLE3 + SWEEP,
    jobs: int = 2,
    extra: Sequence[str] = (),
    runner: Runner = birads_calc_subprocess,
) -> dict:
    """The whole reproduction; returns (and writes to ``runs/summary.json``) what ran, with which seed and how long."""
    start = time.perf_counter()
    data, runs, figures = Path(data).resolve(), Path(runs).resolve(), Path(figures).resolve()  # commands run in ROOT
    manifest = data / "manifest.csv"
    if not manifest.is_file():
        runner(["synth", "--out", str(data), "--patients", str(patients), "--seed", str(seed)], {})
    # Parallel runs each get one intra-op thread: on 2 shared cores, 2 threads per process mostly spin-wait.
    threads = 1 if jobs > 1 else max(os.cpu_count() or 1, 1)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        seconds = list(pool.map(lambda m: run_method(m, manifest, runs, extra, runner, threads), methods))
    outputs = compare_runs(methods, runs, figures, runner)
    summary = {
        "command": " ".join(["python bench/reproduce.py", *sys.argv[1:]]),
        "patients": patients,
        "data_seed": seed,
        "training_seed": "seed_everything: 0 (configs/base/paper.yaml)",
        "jobs": jobs,
        "run_seconds": {run_name(m): round(s) for m, s in zip(methods, seconds, strict=True)},
        "wall_seconds": round(time.perf_counter() - start),
        "outputs": outputs,
    }
    write_json(runs / "summary.json", summary)
    print(f"reproduce: wall time {summary['wall_seconds']} s; summary in {runs / 'summary.json'}", flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=120, help="synthetic patients (the demo uses 100)")
    parser.add_argument("--seed", type=int, default=0, help="data set seed")
    parser.add_argument("--data", type=Path, default=Path("data/reproduce"))
    parser.add_argument("--runs", type=Path, default=Path("runs/reproduce"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each when > 1)")
    parser.add_argument("--methods", nargs="+", default=list(TABLE3 + SWEEP), help="configs, relative to configs/")
    args, extra = parser.parse_known_args(argv)  # anything else goes to fit and test, e.g. --trainer.max_epochs 1
    reproduce(args.patients, args.seed, args.data, args.runs, args.figures, args.methods, args.jobs, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
