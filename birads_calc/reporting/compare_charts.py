"""The charts of ``birads-calc compare``: Table 3 as bars, the paired differences as a forest plot, Fig. 3.

Every chart is 800 x 450 pixels. An interval drawn as error bars is clipped at its estimate: a bootstrap
percentile interval (a single run's own, from its ``metrics.json``) need not contain its point estimate, and the
part on the wrong side is not drawn (matplotlib refuses negative error lengths).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from birads_calc.io import atomic_path
from birads_calc.reporting.comparable_runs import METRICS, Method

FIGSIZE, DPI = (8.0, 4.5), 100
VERDICT_COLOURS = {"a better": "tab:green", "b better": "tab:red", "equivalent": "tab:blue", "inconclusive": "grey"}


def error_lengths(value: Sequence[float], low: Sequence[float | None], high: Sequence[float | None]) -> np.ndarray:
    """``[2, n]`` lengths below and above each value for ``yerr``/``xerr``: 0 where a bound is missing or lies on
    the wrong side of the value.

    Example:
        >>> error_lengths([0.5, 0.5], [0.4, 0.55], [0.7, None]).tolist()
        [[0.09999999999999998, 0.0], [0.19999999999999996, 0.0]]
    """
    value = np.asarray(value, dtype=np.float64)
    low = np.asarray([v if b is None else b for v, b in zip(value, low, strict=True)], dtype=np.float64)
    high = np.asarray([v if b is None else b for v, b in zip(value, high, strict=True)], dtype=np.float64)
    lengths = np.stack([value - low, high - value])
    return np.where(np.isfinite(lengths), np.maximum(lengths, 0.0), 0.0)


def bar_chart(methods: Sequence[Method], path: Path, level: float) -> Path:
    """Grouped bars: per metric, each method's mean over seeds with its CI."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    width = 0.8 / max(len(methods), 1)
    positions = np.arange(len(METRICS))
    for k, method in enumerate(methods):
        stats = [method.stats[key] for key in METRICS]
        mean = [s["mean"] if s["mean"] is not None else math.nan for s in stats]
        errors = error_lengths(mean, [s["ci_low"] for s in stats], [s["ci_high"] for s in stats])
        ax.bar(
            positions + (k - (len(methods) - 1) / 2) * width,
            mean,
            width,
            yerr=errors,
            capsize=3,
            label=f"{method.label} (n={len(method.runs)})",
        )
    ax.set_xticks(positions, list(METRICS.values()))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(f"mean over seeds ({level:.0%} CI)")
    ax.set_title("Table 3: method comparison")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def difference_chart(paired: Sequence[dict], path: Path, level: float) -> Path:
    """Forest plot of the primary comparisons (all pairs when none is primary): ``a - b`` with its CI, the
    equivalence margins, coloured by verdict."""
    plt = _pyplot()
    rows = [p for p in paired if p["family"] == "primary"] or list(paired)
    rows = rows[:40]  # a readable chart; compare.json and table.md hold them all
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    y = np.arange(len(rows))[::-1]
    diff = [p["diff"] if p["diff"] is not None else math.nan for p in rows]
    errors = error_lengths(diff, [p["ci_low"] for p in rows], [p["ci_high"] for p in rows])
    for k, row in enumerate(rows):
        ax.errorbar(
            diff[k],
            y[k],
            xerr=errors[:, k : k + 1],
            fmt="o",
            capsize=3,
            color=VERDICT_COLOURS.get(row["verdict"], "grey"),
        )
        margin = row["margin"]
        ax.plot([-margin, margin], [y[k], y[k]], color="tab:blue", alpha=0.25, linewidth=6, solid_capstyle="butt")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, [f"{p['a']} - {p['b']}: {METRICS[p['metric']]}" for p in rows], fontsize=6)
    ax.set_xlabel(f"a - b ({level:.0%} CI); band: equivalence margin; colour: verdict")
    ax.set_title("Paired differences" + (" (primary comparisons)" if rows and rows[0]["family"] == "primary" else ""))
    fig.tight_layout()
    return _save(fig, path)


def alpha_curve(sweeps: Sequence[Sequence[Method]], path: Path, level: float) -> Path:
    """Fig. 3: each metric's mean over seeds against alpha, with the CI as a band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    sweeps = [s for s in sweeps if len(s) > 1]
    for sweep in sweeps:
        alphas = [m.first.alpha for m in sweep]
        prefix = f"{sweep[0].first.method}: " if len(sweeps) > 1 else ""
        for key, name in METRICS.items():
            stats = [m.stats[key] for m in sweep]
            mean = np.asarray([s["mean"] if s["mean"] is not None else math.nan for s in stats])
            errors = error_lengths(mean, [s["ci_low"] for s in stats], [s["ci_high"] for s in stats])
            (line,) = ax.plot(alphas, mean, marker="o", label=prefix + name)
            ax.fill_between(alphas, mean - errors[0], mean + errors[1], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("alpha (loss weighting)")
    ax.set_ylabel(f"mean over seeds ({level:.0%} CI band)")
    ax.set_title("Fig. 3: metrics against alpha")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)
    return path
