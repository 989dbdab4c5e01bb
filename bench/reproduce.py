"""`make reproduce`: the paper's Table 3 (six methods) and Fig. 3 (alpha sweep) on synthetic data, CPU-sized,
each method trained with several seeds.

Every run is a paper config (``configs/<method>.yaml``, ``configs/alpha/alpha_<a>.yaml``) with the CPU overlay
``configs/demo.yaml`` on top, so the runs differ from the paper recipe only in the keys that file states.
Steps: ``birads-calc synth --pathology paper`` (once: every calcification has a pathology, as in the paper's
data), ``fit`` + ``test`` per (config, training seed) into ``runs/<config>/seed_<s>`` (a run whose
``metrics.json`` exists is kept, so an interrupted reproduction resumes; ``test`` reports the model after the
last epoch, as the paper does), ``birads-calc compare`` for the table and the alpha curve (mean, sd and CI over
seeds; paired differences), then ``summary.json`` (command, seeds, wall times) in the runs folder. Every run uses
the same data and ``data.split_seed``, hence the same patient split, so the comparison pairs them patient by
patient. Results: docs/reproduction.md.

Usage: ``python bench/reproduce.py [--patients 120] [--seed 1] [--seeds 0 1 2] [--jobs 2] [--methods mc ...]``;
any other argument goes to ``fit`` and ``test`` (e.g. ``--trainer.max_epochs 4``).
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
# --scale: the CPU overlay and the generator's CPU-sized images, or the paper configs as they are (ResNet-18,
# 400 px windows, 50 epochs, 2 GPUs) on images at the paper's scale (400 px = 34 mm).
SCALES = {
    "cpu": ([OVERLAY], []),
    "paper": ([], ["--image_size", "3328", "2560", "--pixel_spacing", "0.085"]),
}
TABLE3 = ("mc", "mse", "mamse", "mc_attention", "mse_attention", "proposed")
# alpha 0.2 is configs/proposed.yaml itself (configs/alpha/alpha_0.2.yaml only repeats it): the proposed run is
# that point of the curve instead of a second identical run.
SWEEP = tuple(f"alpha/alpha_{a}" for a in ("0.05", "0.1", "0.3", "0.5", "0.7", "1.0"))
Runner = Callable[[list[str], dict[str, str]], None]


def birads_calc_subprocess(args: list[str], env: dict[str, str]) -> None:
    """Run one ``birads-calc`` command in its own process (the default runner); stop on failure."""
    subprocess.run([sys.executable, "-m", "birads_calc", *args], check=True, env={**os.environ, **env}, cwd=ROOT)


def run_name(method: str) -> str:
    """``alpha/alpha_0.5`` -> ``alpha_0.5``: the config's folder name."""
    return Path(method).name


def run_folder(runs: Path, method: str, seed: int) -> Path:
    """``runs/<config>/seed_<s>``: one run of a config with one training seed."""
    return runs / run_name(method) / f"seed_{seed}"


def run_method(
    method: str,
    seed: int,
    manifest: Path,
    runs: Path,
    extra: Sequence[str],
    runner: Runner,
    threads: int,
    overlays: Sequence[str] = (OVERLAY,),
) -> float:
    """``fit`` then ``test`` of one config and training seed; returns its wall time in seconds (0 if done)."""
    run = run_folder(runs, method, seed)
    if (run / "metrics.json").is_file():
        print(f"reproduce: {run_name(method)} seed {seed}: done before ({run / 'metrics.json'})", flush=True)
        return 0.0
    shutil.rmtree(run, ignore_errors=True)  # an unfinished run starts again from scratch
    common = ["--config", f"configs/{method}.yaml", *(a for o in overlays for a in ("--config", o))]
    common += ["--data.manifest", str(manifest)]
    common += ["--run_dir", str(run), "--seed_everything", str(seed), "--trainer.enable_progress_bar", "false"]
    common += list(extra)
    env = {"OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    runner(["fit", *common], env)
    # the paper reports the model after the last epoch; test logs into <run>/test/, so the fit's training curve
    # (<run>/metrics.csv) stays beside metrics.json
    runner(["test", *common, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")], env)
    seconds = time.perf_counter() - start
    print(f"reproduce: {run_name(method)} seed {seed}: {seconds:.0f} s", flush=True)
    return seconds


def compare_runs(methods: Sequence[str], runs: Path, figures: Path, runner: Runner) -> dict[str, str]:
    """Table 3 and the alpha curve from the finished runs; the PNGs are copied into ``figures``."""
    finished = [m for m in methods if any((runs / run_name(m)).glob("seed_*/metrics.json"))]
    table = [str(runs / m) for m in finished if m in TABLE3]
    sweep = [str(runs / run_name(m)) for m in finished if m in SWEEP or m == "proposed"]
    figures.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for key, members, png, size in (("table3", table, "table.png", 1), ("fig3", sweep, "alpha.png", 2)):
        if len(members) < size:
            continue
        out = runs / "compare" / key
        runner(["compare", *members, "--out", str(out)], {})  # config folders: every seed's run
        target = figures / f"reproduce_{key}.png"
        shutil.copyfile(out / png, target)
        outputs[key] = str(out / "table.md")
        outputs[f"{key}_json"] = str(out / "compare.json")
        outputs[f"{key}_png"] = str(target)
    return outputs


def reproduce(
    patients: int = 120,
    seed: int = 1,
    seeds: Sequence[int] = (0, 1, 2),
    data: Path = Path("data/reproduce"),
    runs: Path = Path("runs/reproduce"),
    figures: Path = Path("docs/figures"),
    methods: Sequence[str] = TABLE3 + SWEEP,
    jobs: int = 2,
    extra: Sequence[str] = (),
    runner: Runner = birads_calc_subprocess,
    scale: str = "cpu",
) -> dict:
    """The whole reproduction; returns (and writes to ``runs/summary.json``) what ran, with which seed and how long."""
    start = time.perf_counter()
    data, runs, figures = Path(data).resolve(), Path(runs).resolve(), Path(figures).resolve()  # commands run in ROOT
    manifest = data / "manifest.csv"
    if not manifest.is_file():
        synth = ["synth", "--out", str(data), "--patients", str(patients), "--seed", str(seed), "--pathology", "paper"]
        runner([*synth, *SCALES[scale][1]], {})
    # Parallel runs each get one intra-op thread: on 2 shared cores, 2 threads per process mostly spin-wait.
    threads = 1 if jobs > 1 else max(os.cpu_count() or 1, 1)
    # seed-major order: a reproduction stopped early still has every method at the first seeds
    pairs = [(m, s) for s in seeds for m in methods]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        seconds = list(
            pool.map(lambda ms: run_method(*ms, manifest, runs, extra, runner, threads, SCALES[scale][0]), pairs)
        )
    outputs = compare_runs(methods, runs, figures, runner)
    summary = {
        "command": " ".join(["python bench/reproduce.py", *sys.argv[1:]]),
        "patients": patients,
        "data_seed": seed,
        "pathology": "paper",
        "scale": scale,
        "training_seeds": list(seeds),
        "extra_arguments": list(extra),
        "jobs": jobs,
        "run_seconds": {f"{run_name(m)}/seed_{s}": round(t) for (m, s), t in zip(pairs, seconds, strict=True)},
        "wall_seconds": round(time.perf_counter() - start),
        "outputs": outputs,
    }
    write_json(runs / "summary.json", summary)
    print(f"reproduce: wall time {summary['wall_seconds']} s; summary in {runs / 'summary.json'}", flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=120, help="synthetic patients (the demo uses 100)")
    parser.add_argument("--seed", type=int, default=1, help="data set seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (seed_everything)")
    parser.add_argument("--data", type=Path, default=Path("data/reproduce"))
    parser.add_argument("--runs", type=Path, default=Path("runs/reproduce"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    parser.add_argument("--scale", choices=list(SCALES), default="cpu", help="cpu: demo overlay; paper: as configured")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each when > 1)")
    parser.add_argument("--methods", nargs="+", default=list(TABLE3 + SWEEP), help="configs, relative to configs/")
    args, extra = parser.parse_known_args(argv)  # anything else goes to fit and test, e.g. --trainer.max_epochs 1
    reproduce(
        args.patients, args.seed, args.seeds, args.data, args.runs, args.figures, args.methods, args.jobs, extra,
        scale=args.scale,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
