"""Weights & Biases: the one module that talks to W&B (the trainer commands, the test reports and ``compare``).

W&B is optional at run time: offline unless the user has logged in (``wandb login``), never prompting, and tests
run with ``WANDB_MODE=offline``. Runs are grouped by method (loss, attention, alpha) so the group view shows the
spread over seeds (docs/wandb.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from birads_calc.reporting.reports import PREDICTION_COLUMNS, method_key

WANDB_PROJECT = "birads-calc"


def logged_in() -> bool:
    """Whether W&B credentials exist (environment, netrc or settings); never prompts, no network."""
    import wandb

    return bool(wandb.login(prompt=False, verify=False))


def wandb_group(loss: str, attention: bool, alpha: float | None) -> str:
    """One W&B group per method (loss, input, alpha), so the group view shows the spread over seeds."""
    key = method_key(loss, attention)
    return f"{key}_alpha{alpha:g}" if loss == "mamse" and alpha is not None else key


def finish_wandb(trainer: Any) -> None:
    """Close the command's W&B run: one run per command (job type fit/test/...), also when called in-process."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero and logger._experiment is not None:
            logger.experiment.finish()


def log_test_reports(logger: Any, report: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """Log the test metrics (summary), the confusion matrix and the per-lesion predictions table to W&B.

    Args:
        logger: a Lightning ``WandbLogger`` (rank 0).
        report: the ``metrics.json`` content.
        rows: the ``predictions.csv`` rows.
    """
    import wandb

    classes = list(report["classes"])
    logger.log_table(
        key="test/predictions",
        columns=list(PREDICTION_COLUMNS),
        data=[[row[c] for c in PREDICTION_COLUMNS] for row in rows],
    )
    logger.experiment.log(
        {
            "test/confusion_matrix": wandb.plot.confusion_matrix(
                y_true=[classes.index(r["birads_true"]) for r in rows],
                preds=[classes.index(r["birads_pred"]) for r in rows],
                class_names=classes,
                title="Test confusion matrix (rows = truth)",
            )
        }
    )
    logger.experiment.summary.update(
        {f"report/{name}": m["value"] for name, m in report["metrics"].items()}
        | {"report/n_lesions": report["n_lesions"], "report/n_patients": report["n_patients"]}
    )


def log_compare(report: Mapping[str, Any], charts: Mapping[str, Any], out: Any) -> Any:
    """Log a ``birads-calc compare`` result to a W&B run of job type ``compare`` in the project; return the run's
    local folder (``None`` when W&B is disabled).

    The run holds the methods table (mean, SD and CI per metric), the paired differences (diff, CI, p, adjusted p,
    verdict, minimum detectable difference), the runs left out, the charts as images, and in its summary the
    primary verdicts (``verdict/<a> vs <b>/<metric>``) and the minimum detectable differences. Offline unless the
    user has logged in (``WANDB_MODE`` decides when set); the files go under ``WANDB_DIR`` or ``out``.

    Args:
        report: the ``compare.json`` content.
        charts: name -> PNG path (``table.png``, ``differences.png``, ``alpha.png``).
        out: the comparison's output folder.
    """
    import os
    from pathlib import Path

    import wandb

    COMPARE_CONFIG = ("level", "comparisons", "primary", "equivalence_margin", "resamples", "bootstrap_seed")
    offline = "WANDB_MODE" not in os.environ and not logged_in()
    folder = Path(os.environ.get("WANDB_DIR") or out)
    folder.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=WANDB_PROJECT,
        job_type="compare",
        group="compare",
        name=f"compare/{Path(out).name}",
        dir=str(folder),
        mode="offline" if offline else None,
        config={key: report[key] for key in COMPARE_CONFIG}
        | {"runs": [r for m in report["methods"] for r in m["runs"]]},
        settings=wandb.Settings(silent=True),
    )
    if run.disabled:
        run.finish()
        return None
    metrics = list(report["mdd"])
    method_columns = ["label", "loss", "attention", "alpha", "n_runs", "seeds"]
    stat_columns = [f"{m}_{s}" for m in metrics for s in ("mean", "sd", "ci_low", "ci_high")]
    methods = wandb.Table(
        columns=method_columns + stat_columns,
        data=[
            [str(m[c]) if c == "seeds" else m[c] for c in method_columns]
            + [m["metrics"][metric][s] for metric in metrics for s in ("mean", "sd", "ci_low", "ci_high")]
            for m in report["methods"]
        ],
    )
    paired_columns = [
        "family",
        "a",
        "b",
        "metric",
        "diff",
        "ci_low",
        "ci_high",
        "p",
        "p_adjusted",
        "margin",
        "p_equivalence",
        "verdict",
        "mdd",
        "seeds",
        "n_patients",
    ]
    paired = wandb.Table(
        columns=paired_columns,
        data=[
            [
                p["family"],
                p["a"],
                p["b"],
                p["metric"],
                p["diff"],
                p["ci_low"],
                p["ci_high"],
                p["p"],
                p.get("p_holm", p.get("q")),
                p["margin"],
                p["p_equivalence"],
                p["verdict"],
                p["mdd"],
                str(p["seeds"]),
                p["n_patients"],
            ]
            for p in report["paired"]
        ],
    )
    left_out = wandb.Table(columns=["run", "reason"], data=[[x["run"], x["reason"]] for x in report["left_out"]])
    run.log(
        {"compare/methods": methods, "compare/paired": paired, "compare/left_out": left_out}
        | {f"compare/{Path(name).stem}": wandb.Image(str(path)) for name, path in charts.items()}
    )
    run.summary.update(
        {
            f"verdict/{p['a']} vs {p['b']}/{p['metric']}": p["verdict"]
            for p in report["paired"]
            if p["family"] == "primary"
        }
        | {
            f"mdd/{metric}/{family}": v[family]
            for metric, v in report["mdd"].items()
            for family in ("primary", "exploratory")
        }
    )
    where = Path(run.dir).parent
    run.finish()
    return where
