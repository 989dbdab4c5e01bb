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
