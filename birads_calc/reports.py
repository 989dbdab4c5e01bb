"""What a run writes for people to read: ``predictions.csv`` and ``metrics.json`` (DESIGN §7, docs/architecture.md).

The test reports are computed from the per-lesion predictions gathered from all processes (each lesion once),
not from the epoch-level logged metrics: a DDP test sampler may repeat samples to even out the processes, and
the reports must equal a single-process evaluation exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from birads_calc.categories import BENIGN, MALIGNANT, label_name, scale
from birads_calc.data.manifest import Lesion
from birads_calc.io import write_csv, write_json
from birads_calc.metrics import UndefinedMetricWarning, bootstrap_ci
from birads_calc.metrics.functional import malignancy_adjusted_qwk, malignancy_auroc, quadratic_weighted_kappa

PREDICTION_COLUMNS = (
    "lesion_id",
    "patient_id",
    "image",
    "laterality",
    "view",
    "row",
    "birads_true",
    "birads_pred",
    "risk",
    "pathology",
)
LOSS_LABELS = {"ce": "MC", "mse": "MSE", "mamse": "MAMSE"}
PATHOLOGY_NAMES = {MALIGNANT: "malignant", BENIGN: "benign"}


def method_key(loss: str, attention: bool) -> str:
    """Short method id used as W&B group and in file names, e.g. ``"mamse_attention"`` or ``"mc"``."""
    base = "mc" if loss == "ce" else loss
    return f"{base}_attention" if attention else base


def method_label(loss: str, attention: bool) -> str:
    """Table 3 row name, e.g. ``"MAMSE + attention ROI"``."""
    return LOSS_LABELS[loss] + (" + attention ROI" if attention else "")


@dataclass(frozen=True)
class RunInfo:
    """What identifies a run in ``metrics.json``."""

    config: str
    loss: str
    attention: bool
    alpha: float | None
    num_classes: int
    checkpoint: str | None


def prediction_rows(
    predictions: Mapping[str, torch.Tensor], lesions: Sequence[Lesion], num_classes: int
) -> list[dict[str, Any]]:
    """One row per predicted lesion, its manifest ids joined through ``index`` (the position in ``lesions``).

    ``predictions`` holds ``index``, ``risk``, ``pred`` and, where labels are known, ``target``.
    """
    rows = []
    for i, index in enumerate(predictions["index"].tolist()):
        lesion = lesions[index]
        target = int(predictions["target"][i]) if "target" in predictions else -1
        rows.append(
            {
                "lesion_id": lesion.lesion_id,
                "patient_id": lesion.patient_id,
                "image": Path(lesion.image).name,
                "laterality": lesion.laterality,
                "view": lesion.view,
                "row": lesion.row,
                "birads_true": label_name(target, num_classes) if target >= 0 else "",
                "birads_pred": label_name(int(predictions["pred"][i]), num_classes),
                "risk": round(float(predictions["risk"][i]), 6),
                "pathology": PATHOLOGY_NAMES.get(float(lesion.malignancy), ""),
            }
        )
    return rows


def test_metrics(
    predictions: Mapping[str, torch.Tensor],
    patients: Sequence[str],
    num_classes: int,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float | int | None]]:
    """QWK, MAQWK-M, MAQWK-B and the malignancy AUROC with patient-level bootstrap CIs (``metrics.json`` shape)."""
    pred, target = predictions["pred"], predictions["target"]
    malignancy, risk = predictions["malignancy"], predictions["risk"]
    opts = {"groups": list(patients), "resamples": resamples, "level": level, "seed": seed}
    with warnings.catch_warnings():
        # an undefined value is written as null; the metrics module documents when that happens
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        results = {
            "qwk": bootstrap_ci(quadratic_weighted_kappa, pred, target, num_classes=num_classes, **opts),
            "maqwk_m": bootstrap_ci(
                malignancy_adjusted_qwk, pred, target, malignancy, num_classes=num_classes, kind="malignant", **opts
            ),
            "maqwk_b": bootstrap_ci(
                malignancy_adjusted_qwk, pred, target, malignancy, num_classes=num_classes, kind="benign", **opts
            ),
            "auroc": bootstrap_ci(malignancy_auroc, risk, malignancy, **opts),
        }
    return {name: ci.as_dict() for name, ci in results.items()}


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Counts with rows = truth, columns = prediction."""
    flat = torch.bincount(target.long() * num_classes + pred.long(), minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).tolist()


def write_test_reports(
    run_dir: Path,
    predictions: Mapping[str, torch.Tensor],
    lesions: Sequence[Lesion],
    info: RunInfo,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Write ``predictions.csv`` and ``metrics.json`` into ``run_dir``; return their contents (report, rows).

    Args:
        run_dir: the run folder.
        predictions: ``index``, ``risk``, ``pred``, ``target``, ``malignancy`` tensors, one entry per lesion.
        lesions: the data module's lesion list (``index`` points into it).
        info: the run's identification.
        resamples, level, seed: of the patient-level bootstrap.
    """
    if predictions["index"].numel() == 0:
        raise ValueError("the test split holds no lesions: nothing to report (check the manifest's split)")
    n = info.num_classes
    rows = prediction_rows(predictions, lesions, n)
    write_csv(Path(run_dir) / "predictions.csv", rows, PREDICTION_COLUMNS)
    patients = [row["patient_id"] for row in rows]
    report = {
        "config": info.config,
        "method": method_label(info.loss, info.attention),
        "loss": info.loss,
        "attention": info.attention,
        "alpha": info.alpha,
        "num_classes": n,
        "classes": list(scale(n)),
        "n_lesions": len(rows),
        "n_patients": len(set(patients)),
        "checkpoint": info.checkpoint,
        "metrics": test_metrics(predictions, patients, n, resamples, level, seed),
        "confusion_matrix": confusion_matrix(predictions["pred"], predictions["target"], n),
        "bootstrap": {"resamples": resamples, "unit": "patient", "level": level, "seed": seed},
    }
    write_json(Path(run_dir) / "metrics.json", report)
    return report, rows


def log_test_reports_to_wandb(logger: Any, report: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
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
