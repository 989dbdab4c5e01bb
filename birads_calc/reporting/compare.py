"""``birads-calc compare``: the paper's Table 3 (and Fig. 3 alpha curve) from finished runs, with verdicts that
hold their error rate over training seeds and test patients.

Each RUN is a ``metrics.json`` file, a run folder (``runs/<config>/<version>``) or a config folder (every run in
it). Runs are grouped by method and seed and checked for comparability (:mod:`comparable_runs`). Then, with the
test patients resampled alike for every run (``--resamples`` patient bootstraps, ``--bootstrap_seed``):

* per method and metric: the mean over seeds, the SD over seeds and a 95% CI that counts both the training
  seeds and the test patients (:mod:`paired_statistics`);
* per pair of methods and metric: the paired difference ``a - b`` on the shared seeds, its CI and p-value, the
  TOST p-value of equivalence within the margin, the p-values corrected for multiplicity (Holm over the primary
  comparisons of ``configs/comparisons.yaml``, Benjamini-Hochberg q-values for every other pair), a verdict
  (``a better`` / ``b better`` / ``equivalent`` / ``inconclusive``) and the minimum detectable difference at 80%
  power.

Writes ``compare.json``, ``table.md`` (also printed), ``table.png``, ``differences.png`` and, for a sweep,
``alpha.png`` into ``--out`` as one set (whole or not at all), then logs them to a W&B run of job type
``compare`` (offline unless logged in; ``--wandb false`` skips it). Details and literature: docs/compare.md.
"""

from __future__ import annotations

import itertools
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from jsonargparse import ArgumentParser, Namespace

from birads_calc.categories import PATHOLOGY_VALUES, scale
from birads_calc.io import read_csv, staged_outputs, write_json
from birads_calc.metrics import UndefinedMetricWarning, metric_on_resamples
from birads_calc.metrics.functional import malignancy_adjusted_qwk, quadratic_weighted_kappa
from birads_calc.reporting.comparable_runs import (
    METRICS,
    CompareError,
    LeftOut,
    Method,
    RunResult,
    check_comparable,
    collect_runs,
    group_methods,
)
from birads_calc.reporting.multiplicity import benjamini_hochberg, holm
from birads_calc.reporting.paired_statistics import (
    A_BETTER,
    B_BETTER,
    INCONCLUSIVE,
    MIN_SEEDS,
    PairedEstimate,
    paired_estimate,
    verdict,
)

OUTPUTS = ("compare.json", "table.md", "table.png", "differences.png", "alpha.png")  # the set compare owns in --out
MAX_SEED = 2**32
# the patient covariances come from the resamples: at 200 their own noise adds up to 2 points to the error rate of
# MAQWK-M verdicts; at the default 1,000 the rates are nominal (docs/compare.md)
MIN_RESAMPLES = 200
PRIMARY, EXPLORATORY = "primary", "exploratory"
DEFAULT_COMPARISONS = "comparisons.yaml"

__all__ = ["CompareError", "configure_parser", "main"]


def configure_parser(parser: ArgumentParser) -> None:
    """Options of ``birads-calc compare``."""
    parser.add_argument("runs", nargs="+", type=str, help="metrics.json files, run folders or config folders.")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/compare"), help="Folder for compare.json, tables and charts."
    )
    parser.add_argument(
        "--resamples",
        type=int,
        default=1000,
        help="Patient bootstrap resamples (at least 200; 1000 keeps the verdicts' error rates).",
    )
    parser.add_argument("--bootstrap_seed", type=int, default=0, help="Seed of the patient resamples, in [0, 2^32).")
    parser.add_argument(
        "--comparisons",
        type=Path | None,
        default=None,
        help="Primary comparisons, level and equivalence margins (default: configs/comparisons.yaml).",
    )
    parser.add_argument(
        "--equivalence_margin",
        type=float | None,
        default=None,
        help="|a - b| below this is 'equivalent', for every metric (default: the comparisons file's).",
    )
    parser.add_argument(
        "--allow_mismatch",
        type=bool,
        default=False,
        help="Compare runs that differ in data, recipe or code anyway, listing the differences.",
    )
    parser.add_argument(
        "--wandb", type=bool, default=True, help="Log to a W&B run of job type 'compare' (offline unless logged in)."
    )


def main(cfg: Namespace) -> int:
    """Run ``birads-calc compare``; returns the exit code (errors raise :class:`CompareError`, exit code 2)."""
    out = Path(cfg.out)
    check_options(cfg, out)
    plan = load_plan(cfg.comparisons, cfg.equivalence_margin)
    runs, left_out = collect_runs(Path(run) for run in cfg.runs)
    methods = group_methods(runs)
    mismatches = check_comparable(methods, cfg.allow_mismatch)
    metrics = ResampledMetrics(cfg.resamples, cfg.bootstrap_seed)
    for method in methods:
        method.stats = {key: method_statistics(method, key, metrics, plan.level) for key in METRICS}
    pairs, not_paired = paired_differences(methods, metrics, plan)
    paired = [pair.as_dict(plan) for pair in pairs]
    report = compare_json(methods, paired, not_paired, plan, left_out, mismatches, cfg)
    table = markdown_table(methods, paired, report)
    written = write_outputs(out, methods, report, table)
    print(table)
    logged = ""
    if cfg.wandb:
        from birads_calc.reporting.wandb_runs import log_compare

        where = log_compare(report, {name: out / name for name in written if name.endswith(".png")}, out)
        logged = f"; W&B run in {where}" if where else ""
    print(f"compare: wrote {', '.join(written)} to {out}{logged}", file=sys.stderr)
    return 0


def write_outputs(out: Path, methods: Sequence[Method], report: dict, table: str) -> list[str]:
    """Write compare's output set into ``out`` whole or not at all; return the names written."""
    from birads_calc.reporting.compare_charts import alpha_curve, bar_chart, difference_chart

    level, sweeps = report["level"], [s for s in alpha_sweeps(methods) if len(s) > 1]
    with staged_outputs(out, OUTPUTS) as stage:
        write_json(stage / "compare.json", report)
        sources = "\n".join(f"- {m.label}: " + ", ".join(f"`{r.folder}`" for r in m.runs) for m in methods)
        (stage / "table.md").write_text(table + "\n\nRuns:\n" + sources + "\n")
        bar_chart(methods, stage / "table.png", level)
        if report["paired"]:
            difference_chart(report["paired"], stage / "differences.png", level)
        if sweeps:
            alpha_curve(sweeps, stage / "alpha.png", level)
        return sorted(p.name for p in stage.iterdir())


def check_options(cfg: Namespace, out: Path) -> None:
    """Refuse options that cannot work before reading any run."""
    if not 0 <= cfg.bootstrap_seed < MAX_SEED:
        raise CompareError(f"--bootstrap_seed must be in [0, 2^32), got {cfg.bootstrap_seed}")
    if cfg.resamples < MIN_RESAMPLES:
        raise CompareError(
            f"--resamples must be at least {MIN_RESAMPLES} (the patient variance rests on them), got {cfg.resamples}"
        )
    margin = cfg.equivalence_margin
    if margin is not None and not (math.isfinite(margin) and margin > 0):
        raise CompareError(f"--equivalence_margin must be a positive number, got {cfg.equivalence_margin}")
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {out} is a file; give a folder for compare.json, table.md and the charts")


# --- the comparison plan: primary comparisons, level, margins -------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What ``configs/comparisons.yaml`` declares."""

    source: str
    primary: list[tuple[str, tuple, tuple]]  # (name, method key a, method key b)
    margins: dict[str, float]
    level: float = 0.95
    power: float = 0.8

    @property
    def alpha(self) -> float:
        return 1 - self.level


def default_comparisons() -> Path:
    """The shipped ``comparisons.yaml``: inside the package when installed, else the repository's ``configs/``."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "configs" / DEFAULT_COMPARISONS, package.parent / "configs" / DEFAULT_COMPARISONS):
        if candidate.is_file():
            return candidate
    raise CompareError(f"the default {DEFAULT_COMPARISONS} is missing from the installation; give --comparisons FILE")


def load_plan(path: Path | None, margin: float | None = None) -> Plan:
    """Read and check a comparisons file; ``margin`` (``--equivalence_margin``) overrides its margins.

    Raises:
        CompareError: naming the file and the entry at fault.
    """
    path = Path(path) if path is not None else default_comparisons()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise CompareError(f"{path}: cannot read the comparisons file ({error})") from None
    if not isinstance(data, dict):
        raise CompareError(f"{path}: expected a mapping with 'primary', 'equivalence_margin', 'level'")
    level = data.get("level", 0.95)
    if not isinstance(level, (int, float)) or not 0.5 <= level < 1:
        raise CompareError(f"{path}: level must be a number in [0.5, 1), got {level!r}")
    power = data.get("power", 0.8)
    if not isinstance(power, (int, float)) or not 0 < power < 1:
        raise CompareError(f"{path}: power must be a number in (0, 1), got {power!r}")
    margins = data.get("equivalence_margin", 0.02)
    margins = (
        dict.fromkeys(METRICS, margins)
        if not isinstance(margins, dict)
        else {**dict.fromkeys(METRICS, 0.02), **margins}
    )
    if margin is not None:
        margins = dict.fromkeys(METRICS, margin)
    for key, value in margins.items():
        if key not in METRICS or not isinstance(value, (int, float)) or not value > 0:
            raise CompareError(f"{path}: equivalence_margin.{key} must be a positive number for one of {list(METRICS)}")
    primary = []
    for k, entry in enumerate(data.get("primary") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("a"), dict) or not isinstance(entry.get("b"), dict):
            raise CompareError(f"{path}: primary[{k}] needs 'a' and 'b' mappings of loss, attention (and alpha)")
        name = str(entry.get("name") or f"primary[{k}]")
        primary.append(
            (name, _method_key(entry["a"], path, f"primary[{k}].a"), _method_key(entry["b"], path, f"primary[{k}].b"))
        )
    return Plan(str(path), primary, {k: float(v) for k, v in margins.items()}, float(level), float(power))


def _method_key(entry: dict, path: Path, where: str) -> tuple:
    loss = str(entry.get("loss", "")).lower()
    if loss not in ("ce", "mse", "mamse") or not isinstance(entry.get("attention"), bool):
        raise CompareError(f"{path}: {where} needs loss (ce, mse or mamse) and attention (true or false)")
    alpha = entry.get("alpha")
    if loss == "mamse" and not isinstance(alpha, (int, float)):
        raise CompareError(f"{path}: {where}: a mamse method needs its alpha")
    return (loss, entry["attention"], float(alpha) if loss == "mamse" else None)


# --- metrics on patient resamples -----------------------------------------------------------------------------------
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
        """What must be equal for two runs to be paired: every lesion with its label and pathology."""
        return tuple(zip(self.patients, self.lesion_ids, self.target.tolist(), self.malignancy.tolist(), strict=True))


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


def patient_draws(num_patients: int, resamples: int, seed: int) -> np.ndarray:
    """``[1 + resamples, num_patients]`` draw counts: row 0 every patient once (the point estimate), then each
    resample draws ``num_patients`` patients with replacement."""
    picks = np.random.default_rng([seed, 0]).integers(num_patients, size=(resamples, num_patients))
    draws = np.stack([np.bincount(row, minlength=num_patients) for row in picks])
    return np.vstack([np.ones((1, num_patients), dtype=np.int64), draws])


class ResampledMetrics:
    """Each run's metrics on all its test patients and on the same patient resamples for every run with the same
    test patients (so that differences between runs are paired)."""

    def __init__(self, resamples: int, seed: int) -> None:
        self.resamples, self.seed = resamples, seed
        self._predictions: dict[Path, RunPredictions | None] = {}
        self._values: dict[tuple[Path, str], np.ndarray] = {}

    def predictions(self, run: RunResult) -> RunPredictions | None:
        if run.path not in self._predictions:
            self._predictions[run.path] = read_predictions(run)
        return self._predictions[run.path]

    def values(self, run: RunResult, metric: str) -> np.ndarray:
        """``[1 + resamples]``: on all patients, then on each resample; ``nan`` where undefined."""
        if (run.path, metric) not in self._values:
            p = self.predictions(run)
            units = sorted(set(p.patients))
            counts = patient_draws(len(units), self.resamples, self.seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                if metric == "qwk":
                    values = metric_on_resamples(
                        quadratic_weighted_kappa,
                        p.pred,
                        p.target,
                        groups=p.patients,
                        units=units,
                        counts=counts,
                        num_classes=p.num_classes,
                    )
                else:
                    kind = "malignant" if metric == "maqwk_m" else "benign"
                    values = metric_on_resamples(
                        malignancy_adjusted_qwk,
                        p.pred,
                        p.target,
                        p.malignancy,
                        groups=p.patients,
                        units=units,
                        counts=counts,
                        num_classes=p.num_classes,
                        kind=kind,
                    )
            self._values[run.path, metric] = values.numpy()
        return self._values[run.path, metric]

    def n_patients(self, run: RunResult) -> int:
        return len(set(self.predictions(run).patients))

    def same_test_set(self, runs: Sequence[RunResult]) -> bool:
        """All runs have predictions on the same lesions with the same labels and pathology."""
        sets = [self.predictions(r) for r in runs]
        return all(s is not None for s in sets) and len({s.lesions for s in sets}) == 1


# --- statistics per method ------------------------------------------------------------------------------------------
def method_statistics(method: Method, metric: str, metrics: ResampledMetrics, level: float) -> dict:
    """Mean and SD over the seeds where the metric is defined, and a CI: over seeds and patients when every run has
    its predictions on one test set; over seeds alone otherwise (one run: its own bootstrap CI)."""
    runs = [r for r in method.runs if math.isfinite(r.metrics[metric][0])]
    values = np.asarray([r.metrics[metric][0] for r in runs])
    stats = {"mean": None, "sd": None, "ci_low": None, "ci_high": None, "se": None, "n": len(runs), "ci_basis": None}
    if not runs:
        return stats
    stats["mean"] = float(values.mean())
    stats["sd"] = float(values.std(ddof=1)) if len(runs) > 1 else None
    if metrics.same_test_set(runs):
        estimate = paired_estimate(
            np.asarray([metrics.values(r, metric)[0] for r in runs]),
            np.stack([metrics.values(r, metric)[1:] for r in runs], axis=1),
            metrics.n_patients(runs[0]),
        )
        low, high = estimate.interval(level)
        basis = "patients and seeds" if len(runs) > 1 else "patients (one run)"
        stats.update(
            mean=estimate.estimate,
            sd=estimate.seed_sd,
            ci_low=_finite(low),
            ci_high=_finite(high),
            se=_finite(estimate.se),
            ci_basis=basis,
        )
    elif len(runs) > 1:
        from scipy import stats as scipy_stats

        half = float(scipy_stats.t.ppf(0.5 + level / 2, len(runs) - 1)) * stats["sd"] / math.sqrt(len(runs))
        stats.update(
            ci_low=stats["mean"] - half,
            ci_high=stats["mean"] + half,
            se=stats["sd"] / math.sqrt(len(runs)),
            ci_basis="seeds only (no shared predictions.csv)",
        )
    else:
        stats.update(
            ci_low=runs[0].metrics[metric][1],
            ci_high=runs[0].metrics[metric][2],
            ci_basis="the run's own bootstrap (metrics.json)",
        )
    return stats


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# --- paired differences ---------------------------------------------------------------------------------------------
@dataclass
class Pair:
    """One paired difference ``a - b`` on one metric, then its adjusted p-values and verdict (:func:`adjust`)."""

    a: Method
    b: Method
    metric: str
    seeds: list[int]
    estimate: PairedEstimate
    comparison: str | None  # the primary comparison's name; None: exploratory
    p: float | None = None
    p_equivalence: float | None = None
    p_adjusted: float | None = None
    p_equivalence_adjusted: float | None = None
    verdict: str = INCONCLUSIVE
    mdd: float | None = None
    mdd_alpha: float | None = None

    @property
    def family(self) -> str:
        return PRIMARY if self.comparison else EXPLORATORY

    def as_dict(self, plan: Plan) -> dict:
        """The ``compare.json`` entry: DESIGN §7's keys, then what the verdict rests on."""
        low, high = self.estimate.interval(plan.level)
        adjusted = "p_holm" if self.family == PRIMARY else "q"
        entry = {
            "a": self.a.label,
            "b": self.b.label,
            "metric": self.metric,
            "diff": _finite(self.estimate.estimate),
            "ci_low": _finite(low),
            "ci_high": _finite(high),
            "p": self.p,
            "verdict": self.verdict,
            "better": {A_BETTER: self.a.label, B_BETTER: self.b.label}.get(self.verdict),
            "family": self.family,
            adjusted: self.p_adjusted,
            "margin": plan.margins[self.metric],
            "p_equivalence": self.p_equivalence,
            f"{adjusted}_equivalence": self.p_equivalence_adjusted,
            "mdd": self.mdd,
            "mdd_alpha": self.mdd_alpha,
            "se": _finite(self.estimate.se),
            "df": _finite(self.estimate.df),
            "seed_sd": self.estimate.seed_sd,
            "patient_se": _finite(self.estimate.patient_se),
            "seeds": self.seeds,
            "n_patients": self.estimate.n_patients,
            "undefined_resamples": self.estimate.undefined_resamples,
        }
        if self.comparison:
            entry["comparison"] = self.comparison
        if self.estimate.n_seeds < MIN_SEEDS:
            entry["note"] = (
                f"{self.estimate.n_seeds} shared seed(s): no verdict (at least {MIN_SEEDS} seeds are needed for a "
                "verdict that holds its error rate; with one seed the difference is that of two trained models)"
            )
        return entry


def paired_differences(
    methods: Sequence[Method], metrics: ResampledMetrics, plan: Plan
) -> tuple[list[Pair], list[dict]]:
    """Every pair of methods on every metric, tested and adjusted (:func:`adjust`); and the pairs of methods that
    could not be paired (no shared seed with predictions on one test set), with the reason."""
    primary = {(a, b): name for name, a, b in plan.primary}
    pairs, unpaired = [], []
    for first, second in itertools.combinations(methods, 2):
        a, b = second, first  # the later Table 3 row first (e.g. the proposed method), unless the plan says otherwise
        if (first.first.key, second.first.key) in primary:
            a, b = first, second
        seeds, reason = shared_seeds(a, b, metrics)
        if reason:
            unpaired.append({"a": a.label, "b": b.label, "reason": reason})
            continue
        runs_a = [next(r for r in a.runs if r.seed == s) for s in seeds]
        runs_b = [next(r for r in b.runs if r.seed == s) for s in seeds]
        for metric in METRICS:
            diff = np.stack(
                [
                    metrics.values(ra, metric) - metrics.values(rb, metric)
                    for ra, rb in zip(runs_a, runs_b, strict=True)
                ],
                axis=1,
            )
            estimate = paired_estimate(diff[0], diff[1:], metrics.n_patients(runs_a[0]))
            pairs.append(Pair(a, b, metric, seeds, estimate, primary.get((a.first.key, b.first.key))))
    adjust(pairs, plan)
    return pairs, unpaired


def shared_seeds(a: Method, b: Method, metrics: ResampledMetrics) -> tuple[list[int], str]:
    """The seeds both methods ran, with predictions on one test set; or the reason there are none."""
    seeds = sorted({s for s in a.seeds if s is not None} & {s for s in b.seeds if s is not None})
    if not seeds:
        return [], "no training seed in common (or the seeds are not recorded)"
    runs = [r for m in (a, b) for r in m.runs if r.seed in seeds]
    missing = [str(r.predictions) for r in runs if metrics.predictions(r) is None]
    if missing:
        return [], f"no predictions.csv: {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "")
    if not metrics.same_test_set(runs):
        return [], "their predictions.csv hold different test lesions, labels or pathology"
    return seeds, ""


def adjust(pairs: Sequence[Pair], plan: Plan) -> None:
    """Test every pair (two-sided, and TOST within the margin), adjust within each family over its superiority and
    equivalence p-values together (Holm for the primary family, Benjamini-Hochberg for the exploratory one), give
    the verdicts and the minimum detectable differences (at Holm's first step for the primary family)."""
    for pair in pairs:
        if pair.estimate.testable:
            pair.p = _finite(pair.estimate.p_value())
            pair.p_equivalence = _finite(pair.estimate.p_equivalence(plan.margins[pair.metric]))
    for family, correction in ((PRIMARY, holm), (EXPLORATORY, benjamini_hochberg)):
        members = [p for p in pairs if p.family == family]
        adjusted = correction([p.p for p in members] + [p.p_equivalence for p in members])
        tests = sum(value is not None for value in adjusted)
        first_step = plan.alpha / max(tests, 1) if family == PRIMARY else plan.alpha
        for k, pair in enumerate(members):
            pair.p_adjusted, pair.p_equivalence_adjusted = adjusted[k], adjusted[len(members) + k]
            pair.verdict = verdict(pair.estimate.estimate, pair.p_adjusted, pair.p_equivalence_adjusted, plan.alpha)
            if pair.estimate.testable:
                pair.mdd = _finite(pair.estimate.minimum_detectable(first_step, plan.power))
                pair.mdd_alpha = first_step


def minimum_detectable(paired: Sequence[dict], plan: Plan) -> dict[str, dict]:
    """Per metric, the median minimum detectable difference of the pairs of each family (80% power)."""
    summary = {}
    for metric in METRICS:
        row = {"power": plan.power}
        for family in (PRIMARY, EXPLORATORY):
            values = [e["mdd"] for e in paired if e["metric"] == metric and e["family"] == family and e["mdd"]]
            row[family] = float(np.median(values)) if values else None
        summary[metric] = row
    return summary


# --- outputs --------------------------------------------------------------------------------------------------------
def compare_json(
    methods: Sequence[Method],
    paired: list[dict],
    not_paired: list[dict],
    plan: Plan,
    left_out: Sequence[LeftOut],
    mismatches: list[str],
    cfg: Namespace,
) -> dict:
    """The content of ``compare.json``."""
    return {
        "level": plan.level,
        "comparisons": plan.source,
        "primary": [
            {"name": n, "a": list(a), "b": list(b), "compared": any(p.get("comparison") == n for p in paired)}
            for n, a, b in plan.primary
        ],
        "equivalence_margin": plan.margins,
        "resamples": cfg.resamples,
        "bootstrap_seed": cfg.bootstrap_seed,
        "methods": [
            {
                "label": m.label,
                "loss": m.first.loss,
                "attention": m.first.attention,
                "alpha": m.first.alpha,
                "n_runs": len(m.runs),
                "seeds": m.seeds,
                "runs": [str(r.folder) for r in m.runs],
                "metrics": m.stats,
            }
            for m in methods
        ],
        "paired": paired,
        "mdd": minimum_detectable(paired, plan),
        "left_out": [x.as_dict() for x in left_out],
        "not_paired": not_paired,
        "mismatches": mismatches,
    }


def markdown_table(methods: Sequence[Method], paired: Sequence[dict], report: dict) -> str:
    """Table 3 layout (one row per method, each metric as ``mean ± sd [CI]``), then the primary and exploratory
    paired differences with their verdicts, the minimum detectable differences and what was left out."""
    level = f"{report['level']:.0%}"
    lines = [
        "| Method | runs (seeds) | " + " | ".join(f"{n} [{level} CI]" for n in METRICS.values()) + " |",
        "|---|---|" + "---:|" * len(METRICS),
    ]
    for method in methods:
        seeds = ", ".join("?" if s is None else str(s) for s in method.seeds)
        cells = [_cell(method.stats[key]) for key in METRICS]
        lines.append(f"| {method.label} | {len(method.runs)} ({seeds}) | " + " | ".join(cells) + " |")
    for family, key, title in (
        (PRIMARY, "p_holm", f"Primary comparisons ({report['comparisons']}): p corrected with Holm"),
        (EXPLORATORY, "q", "Exploratory comparisons: Benjamini-Hochberg q-values"),
    ):
        rows = [p for p in paired if p["family"] == family]
        if rows:
            lines += [
                "",
                f"{title}; a - b over the shared seeds, {level} CI over seeds and patients, "
                "equivalent = within ±margin (TOST):",
                "",
                f"| a | b | metric | a - b [{level} CI] | p | {key} | margin | verdict | MDD |",
                "|---|---|---|---:|---:|---:|---:|---|---:|",
            ]
            lines += [_paired_row(p, key) for p in rows]
    mdd = report["mdd"]
    lines += [
        "",
        "Minimum detectable difference at 80% power (median over pairs; primary at Holm's first step): "
        + "; ".join(
            f"{METRICS[m]} {_num(v['primary'])} primary, {_num(v['exploratory'])} exploratory" for m, v in mdd.items()
        ),
    ]
    if report["mismatches"]:
        lines += ["", "Differences between the runs (compared with --allow_mismatch, or code versions):"]
        lines += [f"- {line}" for line in report["mismatches"]]
    missing = [p["name"] for p in report["primary"] if not p["compared"]]
    if missing:
        lines += ["", "Primary comparisons whose two methods are not both in these runs: " + "; ".join(missing)]
    if report["not_paired"]:
        lines += ["", "Not paired:"] + [f"- {x['a']} vs {x['b']}: {x['reason']}" for x in report["not_paired"]]
    if report["left_out"]:
        lines += ["", "Runs left out:"] + [f"- {x['run']}: {x['reason']}" for x in report["left_out"]]
    return "\n".join(lines)


def _paired_row(p: dict, key: str) -> str:
    diff = "n/a" if p["diff"] is None else f"{p['diff']:+.4f}"
    if p["ci_low"] is not None:
        diff += f" [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]"
    verdict_text = {"a better": f"{p['a']} better", "b better": f"{p['b']} better"}.get(p["verdict"], p["verdict"])
    if "note" in p:
        verdict_text = f"no verdict ({len(p['seeds'])} seed{'s' if len(p['seeds']) > 1 else ''})"
    return (
        f"| {p['a']} | {p['b']} | {METRICS[p['metric']]} | {diff} | {_p(p['p'])} | {_p(p[key])} | "
        f"±{p['margin']:g} | {verdict_text} | {_num(p['mdd'])} |"
    )


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if value >= 1e-4 else "<0.0001"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _cell(stat: dict) -> str:
    if stat["mean"] is None:
        return "n/a"
    text = f"{stat['mean']:.4f}" + (f" ± {stat['sd']:.4f}" if stat["sd"] is not None else "")
    if stat["ci_low"] is not None and stat["ci_high"] is not None:
        text += f" [{stat['ci_low']:.4f}, {stat['ci_high']:.4f}]"
    return text


def alpha_sweeps(methods: Sequence[Method]) -> list[list[Method]]:
    """Methods with the same loss and input that differ only in alpha."""
    groups: dict[tuple, list[Method]] = {}
    for method in methods:
        if method.first.alpha is not None:
            groups.setdefault((method.first.loss, method.first.attention), []).append(method)
    return [sorted(g, key=lambda m: m.first.alpha) for g in groups.values()]
