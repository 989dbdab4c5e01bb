"""``birads-calc compare``: the paper's Table 3 (and Fig. 3 alpha curve) from finished runs, with statistics over
training seeds.

Each RUN is a ``metrics.json`` file, a run folder (``runs/<config>/<version>``) or a config folder (for each
training seed, its newest version that has a ``metrics.json``). Runs are grouped by **method**: (loss, attention
ROI, alpha). For each method and metric (QWK, MAQWK-M, MAQWK-B):

* ``mean`` and ``sd`` (sample standard deviation, n - 1) over its runs (one per seed);
* a 95% CI: with several runs, the t interval of the mean over seeds (``mean +- t(0.975, n - 1) sd / sqrt(n)``);
  with one run, that run's own patient-bootstrap CI from its ``metrics.json``.

For every pair of methods run on the same seeds and the same test patients (their ``predictions.csv``), the
**paired difference** ``a - b`` (``a`` the later row in Table 3 order, e.g. MAMSE + attention minus MSE +
attention; the mean over the shared seeds of the difference on all test patients) with a 95% percentile CI
from a bootstrap over patients and seeds: each resample draws the patients with replacement (the same patients
for both methods and every seed: the pairing) and the seeds with replacement, and takes the mean over the drawn
seeds of ``metric(a) - metric(b)`` on the drawn patients. The verdict is
``distinguishable`` when the CI excludes 0, ``not distinguishable`` otherwise.

Writes to ``--out``: ``compare.json`` (``methods``: per method ``label``, ``n_runs``, ``seeds``, ``runs`` and per
metric ``mean``, ``sd``, ``ci_low``, ``ci_high``; ``paired``: ``a``, ``b``, ``metric``, ``diff``, ``ci_low``,
``ci_high``, ``seeds``, ``n_patients``, ``verdict``), ``table.md`` (also printed), ``table.png`` (bars with CI
error bars) and, when one method is run at several alphas, ``alpha.png`` (the Fig. 3 curve of the means with the
CI as a band).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jsonargparse import ArgumentParser, Namespace

from birads_calc.categories import PATHOLOGY_VALUES, scale
from birads_calc.errors import InputError
from birads_calc.io import atomic_path, read_csv, write_json
from birads_calc.metrics import UndefinedMetricWarning, metric_on_resamples
from birads_calc.metrics.functional import malignancy_adjusted_qwk, quadratic_weighted_kappa

METRICS: dict[str, str] = {"qwk": "QWK", "maqwk_m": "MAQWK-M", "maqwk_b": "MAQWK-B"}
LOSS_ORDER: dict[str, int] = {"ce": 0, "cross_entropy": 0, "mc": 0, "mse": 1, "mamse": 2}
FIGSIZE, DPI = (8.0, 4.5), 100  # 800 x 450 pixel figures
LEVEL = 0.95
DISTINGUISHABLE, NOT_DISTINGUISHABLE = "distinguishable", "not distinguishable"


class CompareError(InputError, ValueError):
    """A run that cannot be compared; the message names the path and the problem."""


@dataclass(frozen=True)
class RunResult:
    """The parts of one run's ``metrics.json`` that the comparison uses."""

    path: Path
    method: str
    loss: str
    attention: bool | None
    alpha: float | None
    metrics: dict[str, tuple[float, float | None, float | None]]  # name -> (value, ci_low, ci_high)
    seed: int | None = None
    num_classes: int = 6

    @property
    def key(self) -> tuple:
        """The method: (loss, attention, alpha)."""
        return (self.loss, bool(self.attention), self.alpha)

    @property
    def sort_key(self) -> tuple:
        """Table 3 order: gray patches first, then MC, MSE, MAMSE, then alpha."""
        return (bool(self.attention), LOSS_ORDER.get(self.loss, len(LOSS_ORDER)), self.alpha or 0.0)

    @property
    def predictions(self) -> Path:
        return self.path.parent / "predictions.csv"


@dataclass
class Method:
    """The runs of one method (one per seed) and their statistics per metric."""

    label: str
    runs: list[RunResult]
    stats: dict[str, dict[str, float | None]] = field(default_factory=dict)

    @property
    def first(self) -> RunResult:
        return self.runs[0]

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]


def configure_parser(parser: ArgumentParser) -> None:
    """Options of ``birads-calc compare``."""
    parser.add_argument("runs", nargs="+", type=str, help="metrics.json files, run folders or config folders.")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/compare"), help="Folder for compare.json, tables, plots."
    )
    parser.add_argument("--resamples", type=int, default=1000, help="Bootstrap resamples of the paired differences.")
    parser.add_argument("--bootstrap_seed", type=int, default=0, help="Seed of the paired bootstrap.")


def main(cfg: Namespace) -> int:
    """Run ``birads-calc compare``; returns the exit code."""
    try:
        runs = [load_run(path) for run in cfg.runs for path in find_metrics(Path(run))]
        methods = group_methods(runs)
        paired = paired_differences(methods, cfg.resamples, cfg.bootstrap_seed)
    except CompareError as error:
        print(f"birads-calc compare: error: {error}")
        return 2
    outputs = write_outputs(methods, paired, Path(cfg.out))
    print(markdown_table(methods, paired))
    print("\n".join(f"wrote {path}" for path in outputs))
    return 0


# --- finding and reading runs ----------------------------------------------------------------------------------------
def find_metrics(path: Path) -> list[Path]:
    """The ``metrics.json`` of a file or run folder; of a config folder, the newest version per training seed.

    Raises:
        CompareError: when the path does not exist or holds no finished run.
    """
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CompareError(f"{path}: no such file or folder")
    if (path / "metrics.json").is_file():
        return [path / "metrics.json"]
    versions = [child for child in path.iterdir() if (child / "metrics.json").is_file()]
    if not versions:
        raise CompareError(
            f"{path}: no metrics.json here or in its version folders; run 'birads-calc test' on the run first"
        )
    newest: dict[object, Path] = {}
    for version in sorted(versions, key=_version_key):
        newest[_seed_of(version / "metrics.json")] = version / "metrics.json"
    return sorted(newest.values())


def _seed_of(path: Path) -> object:
    try:
        return json.loads(path.read_text()).get("seed")
    except (OSError, ValueError, AttributeError):
        return None


def _version_key(folder: Path) -> tuple[int, float]:
    """``version_12`` is newer than ``version_9``; other names by the time their metrics were written."""
    match = re.fullmatch(r"version_(\d+)", folder.name)
    return (int(match.group(1)) if match else -1, (folder / "metrics.json").stat().st_mtime)


def load_run(path: Path) -> RunResult:
    """Read one ``metrics.json`` (format in docs/architecture.md).

    Raises:
        CompareError: naming the file and the missing or malformed entry.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CompareError(f"{path}: cannot read metrics.json ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise CompareError(f"{path}: no 'metrics' object; is this a birads-calc metrics.json?")
    metrics = {}
    for key in METRICS:
        entry = data["metrics"].get(key)
        if not isinstance(entry, dict) or not (_is_number(entry.get("value")) or entry.get("value", 0) is None):
            raise CompareError(f"{path}: metrics.{key}.value is missing or not a number")
        # null = undefined for this test split (e.g. MAQWK-B without benign lesions): shown as n/a, not an error
        value = float(entry["value"]) if entry["value"] is not None else math.nan
        metrics[key] = (value, _number_or_none(entry.get("ci_low")), _number_or_none(entry.get("ci_high")))
    alpha, seed = data.get("alpha"), data.get("seed")
    return RunResult(
        path=path,
        method=str(data.get("method") or data.get("config") or path.parent.name),
        loss=str(data.get("loss", "")).lower(),
        attention=data.get("attention"),
        alpha=float(alpha) if _is_number(alpha) else None,
        metrics=metrics,
        seed=int(seed) if _is_number(seed) else None,
        num_classes=int(data.get("num_classes") or 6),
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_or_none(value: object) -> float | None:
    return float(value) if _is_number(value) else None


def _finite_or_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


# --- statistics per method ------------------------------------------------------------------------------------------
def group_methods(runs: Sequence[RunResult]) -> list[Method]:
    """Runs grouped by method in Table 3 order; one run per seed (a later run of the same seed replaces one)."""
    by_key: dict[tuple, dict[object, RunResult]] = {}
    for run in runs:
        seeds = by_key.setdefault(run.key, {})
        seeds[run.seed if run.seed is not None else ("path", str(run.path))] = run
    groups = sorted(by_key.values(), key=lambda g: next(iter(g.values())).sort_key)
    methods = [Method("", sorted(g.values(), key=lambda r: (r.seed is None, r.seed or 0))) for g in groups]
    for method, label in zip(methods, row_labels(methods), strict=True):
        method.label = label
        method.stats = {key: seed_statistics(method.runs, key) for key in METRICS}
    return methods


def seed_statistics(runs: Sequence[RunResult], metric: str, level: float = LEVEL) -> dict[str, float | None]:
    """``mean``, ``sd`` (n - 1) and the CI of one metric over runs: a t interval over seeds, or a single run's own
    patient-bootstrap CI. Runs where the metric is undefined are left out (``n`` says how many count)."""
    from scipy import stats

    values = np.asarray([r.metrics[metric][0] for r in runs], dtype=np.float64)
    defined = values[~np.isnan(values)]
    n = int(defined.size)
    if n == 0:
        return {"mean": None, "sd": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(defined.mean())
    if n == 1:
        run = next(r for r in runs if not math.isnan(r.metrics[metric][0]))
        return {"mean": mean, "sd": None, "ci_low": run.metrics[metric][1], "ci_high": run.metrics[metric][2], "n": 1}
    sd = float(defined.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def row_labels(methods: Sequence[Method]) -> list[str]:
    """Method names, with alpha added where one name appears several times (a sweep)."""
    counts = {m.first.method: sum(o.first.method == m.first.method for o in methods) for m in methods}
    return [
        f"{m.first.method} (alpha={m.first.alpha:g})" if counts[m.first.method] > 1 and m.first.alpha is not None
        else m.first.method
        for m in methods
    ]  # fmt: skip


# --- paired differences ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunPredictions:
    """One run's test predictions as class indices, with its patients (rows sorted by patient and lesion)."""

    patients: list[str]
    lesion_ids: list[str]
    pred: np.ndarray
    target: np.ndarray
    malignancy: np.ndarray
    num_classes: int

    @property
    def lesions(self) -> tuple:
        return tuple(zip(self.patients, self.lesion_ids, strict=True))


def read_predictions(run: RunResult) -> RunPredictions | None:
    """The run's ``predictions.csv`` (beside its ``metrics.json``), or ``None`` when it has none."""
    if not run.predictions.is_file():
        return None
    names = scale(run.num_classes)
    try:
        _, table = read_csv(run.predictions)  # cells as written before write_csv's formula escaping
        rows = sorted(table, key=lambda r: (r["patient_id"], r.get("lesion_id", ""), r.get("row", "")))
        return RunPredictions(
            patients=[r["patient_id"] for r in rows],
            lesion_ids=[r.get("lesion_id") or r.get("row", "") for r in rows],
            pred=np.asarray([names.index(r["birads_pred"]) for r in rows], dtype=np.int64),
            target=np.asarray([names.index(r["birads_true"]) for r in rows], dtype=np.int64),
            malignancy=np.asarray([PATHOLOGY_VALUES[r.get("pathology", "")] for r in rows], dtype=np.float32),
            num_classes=run.num_classes,
        )
    except (OSError, KeyError, ValueError) as error:
        raise CompareError(f"{run.predictions}: cannot read the test predictions ({error!r})") from None


def metric_values(predictions: RunPredictions, metric: str, units: Sequence[str], counts: np.ndarray) -> np.ndarray:
    """One metric of one run on each patient resample (``counts[r, u]``: draws of patient ``units[u]``)."""
    p = predictions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        if metric == "qwk":
            values = metric_on_resamples(quadratic_weighted_kappa, p.pred, p.target, groups=p.patients, units=units,
                                         counts=counts, num_classes=p.num_classes)  # fmt: skip
        else:
            kind = "malignant" if metric == "maqwk_m" else "benign"
            values = metric_on_resamples(malignancy_adjusted_qwk, p.pred, p.target, p.malignancy, groups=p.patients,
                                         units=units, counts=counts, num_classes=p.num_classes, kind=kind)  # fmt: skip
    return values.numpy()


def patient_draws(num_patients: int, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, num_patients]`` draw counts: each resample draws ``num_patients`` patients with replacement."""
    picks = np.random.default_rng([seed, 0]).integers(num_patients, size=(resamples, num_patients))
    return np.stack([np.bincount(row, minlength=num_patients) for row in picks])


def seed_draws(num_seeds: int, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, num_seeds]`` indices of the shared seeds drawn with replacement in each resample."""
    return np.random.default_rng([seed, 1]).integers(num_seeds, size=(resamples, num_seeds))


def paired_differences(methods: Sequence[Method], resamples: int = 1000, seed: int = 0) -> list[dict]:
    """For every pair of methods with shared seeds and identical test lesions: ``a - b`` per metric with its
    patient-and-seed bootstrap CI and verdict (module docstring). Pairs without them are left out."""
    if resamples < 1:
        raise CompareError(f"--resamples must be at least 1, got {resamples}")
    predictions = {id(r): read_predictions(r) for m in methods for r in m.runs}
    paired = []
    for b, a in itertools.combinations(methods, 2):  # a: the later row of Table 3 (e.g. the proposed method)
        shared = _shared_seeds(a, b, predictions)
        if not shared:
            continue
        runs_a = [next(r for r in a.runs if r.seed == s) for s in shared]
        runs_b = [next(r for r in b.runs if r.seed == s) for s in shared]
        units = sorted(set(predictions[id(runs_a[0])].patients))
        counts = np.vstack([np.ones((1, len(units)), dtype=np.int64), patient_draws(len(units), resamples, seed)])
        seeds_drawn = seed_draws(len(shared), resamples, seed)
        for metric in METRICS:
            # row 0: all patients once (the point estimate); rows 1..: the resamples
            diffs = np.stack([metric_values(predictions[id(ra)], metric, units, counts)
                              - metric_values(predictions[id(rb)], metric, units, counts)
                              for ra, rb in zip(runs_a, runs_b, strict=True)], axis=1)  # fmt: skip
            paired.append(_paired_entry(a, b, metric, shared, len(units), diffs[0], diffs[1:], seeds_drawn))
    return paired


def _shared_seeds(a: Method, b: Method, predictions: dict) -> list[int]:
    """Seeds both methods ran whose runs all have predictions on the same test lesions."""
    seeds = sorted({s for s in a.seeds if s is not None} & {s for s in b.seeds if s is not None})
    runs = [r for m in (a, b) for r in m.runs if r.seed in seeds]
    if not seeds or any(predictions[id(r)] is None for r in runs):
        return []
    if len({predictions[id(r)].lesions for r in runs}) > 1:
        return []  # different test patients: no pairing
    return seeds


def _paired_entry(
    a: Method, b: Method, metric: str, seeds: list[int], patients: int, point: np.ndarray, resampled: np.ndarray,
    seeds_drawn: np.ndarray,
) -> dict:  # fmt: skip
    diff = float(np.mean(point))
    per_resample = np.take_along_axis(resampled, seeds_drawn, axis=1).mean(axis=1)
    defined = per_resample[~np.isnan(per_resample)]
    low, high = np.percentile(defined, [50 * (1 - LEVEL), 50 * (1 + LEVEL)]) if defined.size else (math.nan,) * 2
    verdict = DISTINGUISHABLE if (low > 0 or high < 0) else NOT_DISTINGUISHABLE
    return {
        "a": a.label,
        "b": b.label,
        "metric": metric,
        "diff": _finite_or_none(diff),
        "ci_low": _finite_or_none(float(low)),
        "ci_high": _finite_or_none(float(high)),
        "seeds": seeds,
        "n_patients": patients,
        "undefined_resamples": int(per_resample.size - defined.size),
        "verdict": verdict if math.isfinite(diff) and defined.size else "undefined",
    }


# --- outputs --------------------------------------------------------------------------------------------------------
def compare_json(methods: Sequence[Method], paired: list[dict]) -> dict:
    """The content of ``compare.json``."""
    return {
        "level": LEVEL,
        "methods": [
            {
                "label": m.label,
                "loss": m.first.loss,
                "attention": m.first.attention,
                "alpha": m.first.alpha,
                "n_runs": len(m.runs),
                "seeds": m.seeds,
                "runs": [str(r.path) for r in m.runs],
                "metrics": m.stats,
            }
            for m in methods
        ],
        "paired": paired,
    }


def markdown_table(methods: Sequence[Method], paired: Sequence[dict] = ()) -> str:
    """Table 3 layout: one row per method, each metric as ``mean [ci_low, ci_high]`` (``mean +- sd`` over seeds
    when there are several); then the paired differences."""
    header = "| Method | runs (seeds) | " + " | ".join(f"{name} [95% CI]" for name in METRICS.values()) + " |"
    lines = [header, "|---|---|" + "---:|" * len(METRICS)]
    for method in methods:
        seeds = ", ".join("?" if s is None else str(s) for s in method.seeds)
        cells = [_cell(method.stats[key]) for key in METRICS]
        lines.append(f"| {method.label} | {len(method.runs)} ({seeds}) | " + " | ".join(cells) + " |")
    if paired:
        lines += ["", "Paired differences a - b (95% CI, bootstrap over patients and seeds):", "",
                  "| a | b | metric | diff [95% CI] | seeds | verdict |", "|---|---|---|---:|---|---|"]  # fmt: skip
        for p in paired:
            diff = "n/a" if p["diff"] is None else f"{p['diff']:+.4f}"
            if p["ci_low"] is not None:
                diff += f" [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]"
            seeds = ", ".join(map(str, p["seeds"]))
            lines.append(f"| {p['a']} | {p['b']} | {METRICS[p['metric']]} | {diff} | {seeds} | {p['verdict']} |")
    return "\n".join(lines)


def _cell(stat: dict[str, float | None]) -> str:
    if stat["mean"] is None:
        return "n/a"
    text = f"{stat['mean']:.4f}" + (f" ± {stat['sd']:.4f}" if stat["sd"] is not None else "")
    if stat["ci_low"] is not None and stat["ci_high"] is not None:
        text += f" [{stat['ci_low']:.4f}, {stat['ci_high']:.4f}]"
    return text


def alpha_sweeps(methods: Sequence[Method]) -> list[list[Method]]:
    """Methods with the same loss and input that differ only in alpha (at least two alpha values)."""
    groups: dict[tuple, list[Method]] = {}
    for method in methods:
        if method.first.alpha is not None:
            groups.setdefault((method.first.loss, method.first.attention), []).append(method)
    return [sorted(g, key=lambda m: m.first.alpha) for g in groups.values() if len(g) >= 2]


def write_outputs(methods: list[Method], paired: list[dict], out: Path) -> list[Path]:
    """Write ``compare.json``, ``table.md``, ``table.png`` and (for a sweep) ``alpha.png``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    sources = "\n".join(f"- {m.label}: " + ", ".join(f"`{r.path}`" for r in m.runs) for m in methods)
    table = out / "table.md"
    with atomic_path(table) as tmp:
        tmp.write_text(markdown_table(methods, paired) + "\n\nRuns:\n" + sources + "\n")
    paths = [write_json(out / "compare.json", compare_json(methods, paired)), table]
    paths.append(_bar_chart(methods, out / "table.png"))
    sweeps = alpha_sweeps(methods)
    if sweeps:
        paths.append(_alpha_curve(sweeps, out / "alpha.png"))
    return paths


def _points(methods: Sequence[Method], key: str) -> tuple[list[float], list[float], list[float]]:
    """Means and CI bounds (the mean where a bound is missing) of one metric; nan where undefined."""
    stats = [m.stats[key] for m in methods]
    mean = [s["mean"] if s["mean"] is not None else math.nan for s in stats]
    low = [s["ci_low"] if s["ci_low"] is not None else v for s, v in zip(stats, mean, strict=True)]
    high = [s["ci_high"] if s["ci_high"] is not None else v for s, v in zip(stats, mean, strict=True)]
    return mean, low, high


def _bar_chart(methods: list[Method], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    width = 0.8 / len(methods)
    positions = np.arange(len(METRICS))
    for k, method in enumerate(methods):
        values = [_points([method], key) for key in METRICS]
        mean = np.asarray([v[0][0] for v in values])
        errors = [mean - [v[1][0] for v in values], [v[2][0] for v in values] - mean]
        ax.bar(positions + (k - (len(methods) - 1) / 2) * width, mean, width, yerr=errors, capsize=3,
               label=f"{method.label} (n={len(method.runs)})")  # fmt: skip
    ax.set_xticks(positions, list(METRICS.values()))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("mean over seeds (95% CI)")
    ax.set_title("Table 3: method comparison")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def _alpha_curve(sweeps: list[list[Method]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    for sweep in sweeps:
        alphas = [m.first.alpha for m in sweep]
        prefix = f"{sweep[0].first.method}: " if len(sweeps) > 1 else ""
        for key, name in METRICS.items():
            mean, low, high = _points(sweep, key)
            (line,) = ax.plot(alphas, mean, marker="o", label=prefix + name)
            ax.fill_between(alphas, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("alpha (loss weighting)")
    ax.set_ylabel("mean over seeds (95% CI band)")
    ax.set_title("Fig. 3: metrics against alpha")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)
    return path
