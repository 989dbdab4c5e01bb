"""`make reproduce`: the paper's Table 3 (six methods) and Fig. 3 (alpha sweep) on synthetic data, CPU-sized,
each method trained with several seeds.

Every run is a paper config (``configs/<method>.yaml``, ``configs/alpha/alpha_<a>.yaml``) with the CPU overlay
``configs/demo.yaml`` on top, so the runs differ from the paper recipe only in the keys that file states.
Steps: ``birads-calc synth --pathology paper`` (once: every calcification has a pathology, as in the paper's
data), ``fit`` + ``test`` per (config, training seed) into ``runs/<config>/seed_<s>`` (a run whose
``metrics.json`` exists is kept, so an interrupted reproduction resumes; ``test`` reports the model after the
last epoch, as the paper does), ``birads-calc compare`` for the table and the alpha curve (verdicts over seeds and
patients; docs/compare.md), then ``summary.json`` (command, seeds, wall times) in the runs folder. Every run uses
the same data, ``data.split_seed`` and split ratios, hence the same patient split, so the comparison pairs them
patient by patient. Results and the sizing (power calculation): docs/reproduction.md.

The settings are recorded beside what they made (``<data>/reproduce.json``, ``<run>/reproduce.json``): a data
folder or a finished run made with other settings (patients, data seed, split, overlays, extra arguments, code
commit) is refused, naming each difference, instead of being reused.

Usage: ``python bench/reproduce.py [--patients 120] [--seed 1] [--seeds 0 1 2 3 4] [--split_ratios 3 1 1] [--jobs 2]
[--methods mc ...]``; any other argument goes to ``fit`` and ``test`` (e.g. ``--trainer.max_epochs 4``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
RECORD = "reproduce.json"  # the settings a data folder or run was made with, beside it


class ReproduceError(Exception):
    """A data folder or finished run made with other settings than this reproduction's; the message names them."""


def birads_calc_subprocess(args: list[str], env: dict[str, str]) -> None:
    """Run one ``birads-calc`` command in its own process (the default runner); stop on failure."""
    subprocess.run([sys.executable, "-m", "birads_calc", *args], check=True, env={**os.environ, **env}, cwd=ROOT)


def run_name(method: str) -> str:
    """``alpha/alpha_0.5`` -> ``alpha_0.5``: the config's folder name."""
    return Path(method).name


def run_folder(runs: Path, method: str, seed: int) -> Path:
    """``runs/<config>/seed_<s>``: one run of a config with one training seed."""
    return runs / run_name(method) / f"seed_{seed}"


def run_settings(method: str, seed: int, data: dict, extra: Sequence[str], overlays: Sequence[str]) -> dict:
    """What makes a run of this reproduction: config, seed, data, overlays, extra arguments and code commit."""
    return {"config": method, "seed": seed, "data": data, "overlays": list(overlays), "extra_arguments": list(extra),
            "git_commit": git_commit()}  # fmt: skip


def git_commit() -> str | None:
    """The repository's commit, or ``None`` outside a git checkout."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip() or None


def differences(recorded: dict | None, wanted: dict) -> list[str]:
    """``key: recorded vs wanted`` for each setting that differs (everything when nothing was recorded)."""
    if recorded is None:
        return [f"no {RECORD}: made by an older reproduce.py or by hand, with unknown settings"]
    keys = sorted(set(recorded) | set(wanted))
    return [f"{k}: {json.dumps(recorded.get(k))} there vs {json.dumps(wanted.get(k))} now"
            for k in keys if recorded.get(k) != wanted.get(k)]  # fmt: skip


def read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None


def check_finished_runs(plan: Sequence[tuple[Path, dict]]) -> None:
    """Refuse (before training anything) every finished run that was made with other settings.

    Raises:
        ReproduceError: naming each run and each differing setting.
    """
    problems = []
    for run, wanted in plan:
        if (run / "metrics.json").is_file():
            problems += [f"{run}: {line}" for line in differences(read_record(run), wanted)]
    if problems:
        raise ReproduceError(
            "finished runs were made with other settings than this reproduction's; give another --runs folder or "
            "remove them:\n  " + "\n  ".join(problems)
        )


def run_method(
    method: str,
    seed: int,
    manifest: Path,
    runs: Path,
    extra: Sequence[str],
    runner: Runner,
    threads: int,
    overlays: Sequence[str] = (OVERLAY,),
    settings: dict | None = None,
) -> float:
    """``fit`` then ``test`` of one config and training seed; returns its wall time in seconds (0 if done).

    ``settings`` (:func:`run_settings`) is written beside the run before it trains.
    """
    run = run_folder(runs, method, seed)
    if (run / "metrics.json").is_file():
        print(f"reproduce: {run_name(method)} seed {seed}: done before ({run / 'metrics.json'})", flush=True)
        return 0.0
    shutil.rmtree(run, ignore_errors=True)  # an unfinished run starts again from scratch
    if settings is not None:
        write_json(run / RECORD, settings)
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
    # at least two methods each: a sweep-only run (proposed + alphas) must not replace Table 3 by one row
    for key, members, png, size in (("table3", table, "table.png", 2), ("fig3", sweep, "alpha.png", 2)):
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
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    data: Path = Path("data/reproduce"),
    runs: Path = Path("runs/reproduce"),
    figures: Path = Path("docs/figures"),
    methods: Sequence[str] = TABLE3 + SWEEP,
    jobs: int = 2,
    extra: Sequence[str] = (),
    runner: Runner = birads_calc_subprocess,
    scale: str = "cpu",
    split_ratios: Sequence[int] = (3, 1, 1),
    manifest: Path | None = None,
) -> dict:
    """The whole reproduction; returns (and writes to ``runs/summary.json``) what ran, with which seed and how long.

    ``manifest``: an existing dataset to use as it is (its path and content hash are recorded) instead of the
    synthetic one in ``data``.

    Raises:
        ReproduceError: when the data folder or a finished run was made with other settings (nothing is run).
    """
    start = time.perf_counter()
    data, runs, figures = Path(data).resolve(), Path(runs).resolve(), Path(figures).resolve()  # commands run in ROOT
    if manifest is not None:
        manifest = Path(manifest).resolve()
        if not manifest.is_file():
            raise ReproduceError(f"--manifest {manifest}: no such file")
        data_settings = {
            "manifest": str(manifest),
            "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        }
    else:
        manifest = data / "manifest.csv"
        data_settings = {"patients": patients, "seed": seed, "pathology": "paper", "synth_arguments": SCALES[scale][1]}
    split = ["--data.split_ratios", "[" + ",".join(str(r) for r in split_ratios) + "]"]
    extra = [*split, *extra]
    overlays = SCALES[scale][0]
    pairs = [(m, s) for s in seeds for m in methods]  # seed-major: stopped early, every method has the first seeds
    plan = [(run_folder(runs, m, s), run_settings(m, s, data_settings, extra, overlays)) for m, s in pairs]
    if (
        "manifest" not in data_settings
        and manifest.is_file()
        and (found := differences(read_record(data), data_settings))
    ):
        raise ReproduceError(f"{data} was made with other settings than this reproduction's; give another --data "
                             "folder or remove it:\n  " + "\n  ".join(found))  # fmt: skip
    check_finished_runs(plan)
    if not manifest.is_file():
        synth = ["synth", "--out", str(data), "--patients", str(patients), "--seed", str(seed), "--pathology", "paper"]
        runner([*synth, *SCALES[scale][1], "--overwrite", "true"], {})
        write_json(data / RECORD, data_settings)
    # Parallel runs each get one intra-op thread: on 2 shared cores, 2 threads per process mostly spin-wait.
    threads = 1 if jobs > 1 else max(os.cpu_count() or 1, 1)
    settings = dict(zip(pairs, (wanted for _, wanted in plan), strict=True))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        seconds = list(pool.map(
            lambda ms: run_method(*ms, manifest, runs, extra, runner, threads, overlays, settings[ms]), pairs
        ))  # fmt: skip
    outputs = compare_runs(methods, runs, figures, runner)
    summary = {
        "command": " ".join(["python bench/reproduce.py", *sys.argv[1:]]),
        "data": data_settings,
        "scale": scale,
        "split_ratios": list(split_ratios),
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
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds (seed_everything)"
    )
    parser.add_argument("--split_ratios", type=int, nargs=3, default=[3, 1, 1], help="train:val:test patients")
    parser.add_argument("--data", type=Path, default=Path("data/reproduce"), help="the synthetic dataset's folder")
    parser.add_argument("--manifest", type=Path, default=None, help="use this existing dataset instead of synthesizing")
    parser.add_argument("--runs", type=Path, default=Path("runs/reproduce"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    parser.add_argument("--scale", choices=list(SCALES), default="cpu", help="cpu: demo overlay; paper: as configured")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each when > 1)")
    parser.add_argument("--methods", nargs="+", default=list(TABLE3 + SWEEP), help="configs, relative to configs/")
    args, extra = parser.parse_known_args(argv)  # anything else goes to fit and test, e.g. --trainer.max_epochs 1
    try:
        reproduce(
            args.patients, args.seed, args.seeds, args.data, args.runs, args.figures, args.methods, args.jobs, extra,
            scale=args.scale, split_ratios=args.split_ratios, manifest=args.manifest,
        )  # fmt: skip
    except ReproduceError as error:
        print(f"reproduce: error: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:  # the command has said why on stderr; finished runs are kept
        print(f"reproduce: error: birads-calc {error.cmd[3]} ... exited {error.returncode} (its message is above); "
              "finished runs are kept, run the same command again to go on", file=sys.stderr)  # fmt: skip
        return error.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
