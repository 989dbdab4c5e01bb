"""``birads-calc compare``: the paper's Table 3 (and Fig. 3 alpha curve) from finished runs' ``metrics.json``.

Each RUN is a ``metrics.json`` file, a run folder (``runs/<config>/<version>``) or a config folder (its newest
version that has a ``metrics.json``). Writes to ``--out``:

* ``table.md``: method x QWK, MAQWK-M, MAQWK-B with 95% bootstrap CIs (also printed), rows in the order of the
  paper's Table 3 (gray patches before attention ROIs; MC, MSE, MAMSE; then alpha);
* ``table.png``: grouped bar chart of the three metrics with CI error bars;
* ``alpha.png``: when several runs share a loss and input but differ in alpha (a Fig. 3 sweep), the three
  metrics against alpha with their CIs.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from birads_calc.io import atomic_path

METRICS: dict[str, str] = {"qwk": "QWK", "maqwk_m": "MAQWK-M", "maqwk_b": "MAQWK-B"}
LOSS_ORDER: dict[str, int] = {"ce": 0, "cross_entropy": 0, "mc": 0, "mse": 1, "mamse": 2}
FIGSIZE, DPI = (8.0, 4.5), 100  # 800 x 450 pixel figures


class CompareError(ValueError):
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

    @property
    def sort_key(self) -> tuple:
        """Table 3 order: gray patches first, then MC, MSE, MAMSE, then alpha."""
        return (bool(self.attention), LOSS_ORDER.get(self.loss, len(LOSS_ORDER)), self.alpha or 0.0)


def configure_parser(parser: ArgumentParser) -> None:
    """Options of ``birads-calc compare``."""
    parser.add_argument("runs", nargs="+", type=str, help="metrics.json files, run folders or config folders.")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="Folder for table.md and plots.")


def main(cfg: Namespace) -> int:
    """Run ``birads-calc compare``; returns the exit code."""
    try:
        results = sorted((load_run(find_metrics(Path(run))) for run in cfg.runs), key=lambda r: r.sort_key)
    except CompareError as error:
        print(f"birads-calc compare: error: {error}")
        return 2
    outputs = write_outputs(results, Path(cfg.out))
    print(markdown_table(results))
    print("\n".join(f"wrote {path}" for path in outputs))
    return 0


def find_metrics(path: Path) -> Path:
    """The ``metrics.json`` of a file, run folder or config folder (newest version holding one).

    Raises:
        CompareError: when the path does not exist or holds no finished run.
    """
    if path.is_file():
        return path
    if not path.is_dir():
        raise CompareError(f"{path}: no such file or folder")
    if (path / "metrics.json").is_file():
        return path / "metrics.json"
    versions = [child for child in path.iterdir() if (child / "metrics.json").is_file()]
    if not versions:
        raise CompareError(
            f"{path}: no metrics.json here or in its version folders; run 'birads-calc test' on the run first"
        )
    return max(versions, key=_version_key) / "metrics.json"


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
    alpha = data.get("alpha")
    return RunResult(
        path=path,
        method=str(data.get("method") or data.get("config") or path.parent.name),
        loss=str(data.get("loss", "")).lower(),
        attention=data.get("attention"),
        alpha=float(alpha) if _is_number(alpha) else None,
        metrics=metrics,
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_or_none(value: object) -> float | None:
    return float(value) if _is_number(value) else None


def row_labels(results: list[RunResult]) -> list[str]:
    """Method names, with alpha added where one method appears several times (a sweep)."""
    counts = {r.method: sum(o.method == r.method for o in results) for r in results}
    return [
        f"{r.method} (alpha={r.alpha:g})" if counts[r.method] > 1 and r.alpha is not None else r.method for r in results
    ]


def markdown_table(results: list[RunResult]) -> str:
    """Table 3 layout: one row per run, each metric as ``value [ci_low, ci_high]``."""
    header = "| Method | " + " | ".join(f"{name} [95% CI]" for name in METRICS.values()) + " |"
    lines = [header, "|---|" + "---:|" * len(METRICS)]
    for label, result in zip(row_labels(results), results, strict=True):
        cells = [_cell(*result.metrics[key]) for key in METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: float, low: float | None, high: float | None) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else "")


def alpha_sweeps(results: list[RunResult]) -> list[list[RunResult]]:
    """Groups of runs with the same loss and input that differ only in alpha (at least two alpha values)."""
    groups: dict[tuple, list[RunResult]] = {}
    for result in results:
        if result.alpha is not None:
            groups.setdefault((result.loss, result.attention), []).append(result)
    return [sorted(group, key=lambda r: r.alpha) for group in groups.values() if len({r.alpha for r in group}) >= 2]


def write_outputs(results: list[RunResult], out: Path) -> list[Path]:
    """Write ``table.md``, ``table.png`` and (for a sweep) ``alpha.png`` under ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    sources = "\n".join(f"- {label}: `{r.path}`" for label, r in zip(row_labels(results), results, strict=True))
    table = out / "table.md"
    with atomic_path(table) as tmp:
        tmp.write_text(markdown_table(results) + "\n\nRuns:\n" + sources + "\n")
    paths = [table, _bar_chart(results, out / "table.png")]
    sweeps = alpha_sweeps(results)
    if sweeps:
        paths.append(_alpha_curve(sweeps, out / "alpha.png"))
    return paths


def _error_bars(points: list[tuple[float, float | None, float | None]]) -> list[list[float]]:
    """Matplotlib ``yerr`` (distances below and above); 0 where a CI is missing."""
    below = [v - lo if lo is not None else 0.0 for v, lo, _ in points]
    above = [hi - v if hi is not None else 0.0 for v, _, hi in points]
    return [below, above]


def _bar_chart(results: list[RunResult], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = row_labels(results)
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    width = 0.8 / len(results)
    positions = np.arange(len(METRICS))
    for k, (label, result) in enumerate(zip(labels, results, strict=True)):
        points = [result.metrics[key] for key in METRICS]
        ax.bar(
            positions + (k - (len(results) - 1) / 2) * width,
            [p[0] for p in points],
            width,
            yerr=_error_bars(points),
            capsize=3,
            label=label,
        )
    ax.set_xticks(positions, list(METRICS.values()))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("value (95% CI)")
    ax.set_title("Table 3: method comparison")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def _alpha_curve(sweeps: list[list[RunResult]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    for sweep in sweeps:
        alphas = [r.alpha for r in sweep]
        prefix = f"{sweep[0].method}: " if len(sweeps) > 1 else ""
        for key, name in METRICS.items():
            points = [r.metrics[key] for r in sweep]
            ax.errorbar(alphas, [p[0] for p in points], yerr=_error_bars(points), marker="o", capsize=3,
                        label=prefix + name)  # fmt: skip
    ax.set_xlabel("alpha (loss weighting)")
    ax.set_ylabel("value (95% CI)")
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
