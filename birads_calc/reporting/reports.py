"""What a run writes for people to read (DESIGN §7, docs/architecture.md, docs/predict.md).

* ``test``: ``predictions.csv``, ``metrics.json``, ``confusion_matrix.png``, ``class_counts.csv``,
  ``calibration.csv`` and ``report.md`` (the metrics with their bootstrap CIs, counts and calibration in one page);
* ``predict``: ``predictions.csv`` (one row per calcification), ``breasts.csv`` (one row per breast: the highest
  category, as radiologists report it, paper §1) and the overlay PNGs (``birads_calc.reporting.overlays``).

The reports are computed from the per-lesion predictions gathered from all processes (each lesion once), not from
the epoch-level logged metrics: a DDP sampler may repeat samples to even out the processes, and the reports must
equal a single-process run exactly.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from birads_calc.categories import BENIGN, MALIGNANT, label_name, scale
from birads_calc.data.dicom import DEFAULT_VOI
from birads_calc.data.manifest import Lesion
from birads_calc.io import atomic_path, staged_outputs, write_csv, write_json
from birads_calc.training.identity import evaluation_identity

PREDICTION_COLUMNS = (
    "patient_id",
    "image",
    "lesion_id",
    "laterality",
    "view",
    "row",
    "risk",
    "birads_pred",
    "birads_true",
    "pathology",
)
PREDICT_COLUMNS = (*PREDICTION_COLUMNS, "overlay", "split")  # split: the run's pinned split of the patient
BREAST_COLUMNS = ("patient_id", "laterality", "image", "birads_max", "risk", "lesion_id", "row", "n_lesions")
# the files of one test, written together (io.staged_outputs): an interrupted re-test leaves the previous set whole
TEST_OUTPUTS = (
    "predictions.csv",
    "metrics.json",
    "class_counts.csv",
    "calibration.csv",
    "confusion_matrix.png",
    "report.md",
)
PREDICT_OUTPUTS = ("predictions.csv", "breasts.csv", "overlays")
CLASS_COUNT_COLUMNS = ("category", "n_true", "n_pred", "n_correct", "recall", "precision")
METRIC_NAMES = {"qwk": "QWK", "maqwk_m": "MAQWK-M", "maqwk_b": "MAQWK-B", "auroc": "AUROC (malignancy)"}
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
    checkpoint_selection: str | None = None  # last (model after the last epoch), best (val QWK) or given
    checkpoint_epochs: int | None = None  # epochs the evaluated model had trained
    seed: int | None = None  # the training seed (seed_everything)
    saved: Mapping[str, Any] | None = None  # the checkpoint's own record (checkpoint["birads_calc"]): its identity


def manifest_path(path: Path, root: Path | None) -> str:
    """An image path as the manifest gives it: relative to the manifest's folder, absolute when outside it."""
    if root is None:
        return Path(path).name
    root = Path(os.path.abspath(root))
    path = Path(path)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def prediction_rows(
    predictions: Mapping[str, torch.Tensor], lesions: Sequence[Lesion], num_classes: int, root: Path | None = None
) -> list[dict[str, Any]]:
    """One row per predicted lesion, its manifest ids joined through ``index`` (the position in ``lesions``).

    Args:
        predictions: ``index``, ``risk``, ``pred`` and, where labels are known, ``target`` (-1 = no label).
        lesions: the data module's lesion list.
        num_classes: 6 or 4.
        root: the manifest's folder; image paths are written relative to it, as in the manifest (``None``: the
            file name alone).
    """
    rows = []
    for i, index in enumerate(predictions["index"].tolist()):
        lesion = lesions[index]
        target = int(predictions["target"][i]) if "target" in predictions else -1
        rows.append(
            {
                "lesion_id": lesion.lesion_id,
                "patient_id": lesion.patient_id,
                "image": manifest_path(lesion.image, root),
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
    # imported here: torchmetrics and scipy cost seconds that predict (CSVs only) does not need
    from birads_calc.metrics import UndefinedMetricWarning, bootstrap_ci
    from birads_calc.metrics.functional import malignancy_adjusted_qwk, malignancy_auroc, quadratic_weighted_kappa

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


def write_test_reports(
    run_dir: Path,
    predictions: Mapping[str, torch.Tensor],
    lesions: Sequence[Lesion],
    info: RunInfo,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    root: Path | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Write the test reports into ``run_dir``; return the ``metrics.json`` content and the prediction rows.

    Files: ``predictions.csv``, ``metrics.json``, ``confusion_matrix.png``, ``class_counts.csv``,
    ``calibration.csv`` and ``report.md``.

    Args:
        run_dir: the run folder.
        predictions: ``index``, ``risk``, ``pred``, ``target``, ``malignancy`` tensors, one entry per lesion.
        lesions: the data module's lesion list (``index`` points into it).
        info: the run's identification.
        resamples, level, seed: of the patient-level bootstrap.
        root: the manifest's folder (image paths are written relative to it).
    """
    from birads_calc.metrics.functional import confusion_matrix  # as in test_metrics: not paid by predict
    from birads_calc.reporting.calibration import CALIBRATION_COLUMNS, calibration_table

    if predictions["index"].numel() == 0:
        raise ValueError("the test split holds no lesions: nothing to report (check the manifest's split)")
    n = info.num_classes
    rows = prediction_rows(predictions, lesions, n, root)
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
        "checkpoint_selection": info.checkpoint_selection,
        "checkpoint_epochs": info.checkpoint_epochs,
        "seed": info.seed,
        "identity": evaluation_identity(info.saved, rows, info.checkpoint_selection, info.checkpoint_epochs),
        "metrics": test_metrics(predictions, patients, n, resamples, level, seed),
        "confusion_matrix": confusion_matrix(predictions["pred"], predictions["target"], n).tolist(),
        "bootstrap": {"resamples": resamples, "unit": "patient", "level": level, "seed": seed},
    }
    counts = class_counts(report["confusion_matrix"], report["classes"])
    calibration = calibration_table(predictions["pred"].numpy(), predictions["malignancy"].numpy(), n, level)
    with staged_outputs(run_dir, owned=TEST_OUTPUTS) as stage:
        write_csv(stage / "predictions.csv", rows, PREDICTION_COLUMNS)
        write_json(stage / "metrics.json", report)
        write_csv(stage / "class_counts.csv", counts, CLASS_COUNT_COLUMNS)
        write_csv(stage / "calibration.csv", calibration, CALIBRATION_COLUMNS)
        write_confusion_png(stage / "confusion_matrix.png", report["confusion_matrix"], report["classes"])
        write_text(stage / "report.md", report_markdown(report, counts, calibration))
    return report, rows


def class_counts(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> list[dict[str, Any]]:
    """Per category: lesions truly in it, predicted in it, both, and recall / precision (empty when undefined)."""
    rows = []
    for k, name in enumerate(classes):
        n_true, n_pred, n_correct = sum(matrix[k]), sum(r[k] for r in matrix), matrix[k][k]
        rows.append(
            {
                "category": name,
                "n_true": n_true,
                "n_pred": n_pred,
                "n_correct": n_correct,
                "recall": round(n_correct / n_true, 4) if n_true else None,
                "precision": round(n_correct / n_pred, 4) if n_pred else None,
            }
        )
    return rows


def write_confusion_png(path: Path, matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> Path:
    """The confusion matrix (rows = truth, columns = prediction) as a PNG, via scikit-learn's display."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axes = plt.subplots(figsize=(1.0 + 0.8 * len(classes), 0.6 + 0.8 * len(classes)), dpi=120)
    try:
        display = ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(classes))
        display.plot(ax=axes, cmap="Blues", colorbar=False, values_format="d")
        axes.set_xlabel("predicted BI-RADS")
        axes.set_ylabel("true BI-RADS")
        axes.set_title("Test confusion matrix")
        figure.tight_layout()
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")
    finally:
        plt.close(figure)
    return path


def write_text(path: Path, text: str) -> Path:
    """A text file (e.g. markdown), written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def report_markdown(
    report: Mapping[str, Any], counts: Sequence[Mapping[str, Any]], calibration: Sequence[Mapping[str, Any]]
) -> str:
    """``report.md``: the metrics with bootstrap CIs, per-class counts, the confusion matrix and calibration."""
    level = f"{report['bootstrap']['level']:.0%}"
    head = [
        f"# Test report: {report['config']} ({report['method']})",
        "",
        f"{report['n_lesions']} calcifications of {report['n_patients']} patients; checkpoint "
        f"`{report['checkpoint']}`.",
    ]
    sections = [
        _metrics_section(report, level),
        _counts_section(counts),
        _confusion_section(report),
        _calibration_section(calibration, level),
    ]
    return "\n".join(head + [line for section in sections for line in section])


def _metrics_section(report: Mapping[str, Any], level: str) -> list[str]:
    boot = report["bootstrap"]
    rows = [
        (METRIC_NAMES.get(k, k), _num(m["value"]), _interval(m["ci_low"], m["ci_high"]), m["n"])
        for k, m in report["metrics"].items()
    ]
    return [
        "",
        "## Metrics",
        "",
        f"{level} confidence intervals from {boot['resamples']} bootstrap resamples of {boot['unit']}s "
        f"(seed {boot['seed']}); `n` = lesions the metric uses; empty = undefined on this data.",
        "",
        *_markdown_table(("metric", "value", f"{level} CI", "n"), rows),
    ]


def _counts_section(counts: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [
        (r["category"], r["n_true"], r["n_pred"], r["n_correct"], _num(r["recall"]), _num(r["precision"]))
        for r in counts
    ]
    return ["", "## Per-class counts", "", *_markdown_table(CLASS_COUNT_COLUMNS, rows)]


def _confusion_section(report: Mapping[str, Any]) -> list[str]:
    classes = report["classes"]
    rows = [(name, *row) for name, row in zip(classes, report["confusion_matrix"], strict=True)]
    return [
        "",
        "## Confusion matrix",
        "",
        "Rows = true BI-RADS, columns = predicted BI-RADS (also `confusion_matrix.png`).",
        "",
        *_markdown_table(("true \\ predicted", *classes), rows),
    ]


def _calibration_section(calibration: Sequence[Mapping[str, Any]], level: str) -> list[str]:
    columns = ("predicted", "expected", "n predicted", "n biopsied", "n malignant", "observed", f"{level} CI",
               "in range", "CI overlaps")  # fmt: skip
    rows = [
        (r["category"], r["expected_range"], r["n_predicted"], r["n_biopsied"], r["n_malignant"],
         _percent(r["observed_rate"]), _interval(r["ci_low"], r["ci_high"], percent=True), r["rate_in_range"],
         r["ci_overlaps_range"])
        for r in calibration
    ]  # fmt: skip
    return [
        "",
        "## Calibration",
        "",
        "Observed malignancy rate of the lesions predicted in each category, among those with a biopsy result "
        f"(pathology malignant or benign), with its {level} Wilson interval, next to the likelihood of malignancy "
        "the BI-RADS Atlas (5th ed.) gives the category. Categories 2 and 3 are usually followed up, not biopsied.",
        "",
        *_markdown_table(columns, rows),
        "",
    ]


def _markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c) for c in columns], *[["" if v is None else str(v) for v in row] for row in rows]]
    return ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(columns)] + [
        "| " + " | ".join(r) + " |" for r in cells[1:]
    ]


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _interval(low: float | None, high: float | None, percent: bool = False) -> str:
    if low is None or high is None:
        return ""
    fmt = _percent if percent else _num
    return f"{fmt(low)} - {fmt(high)}"


# --- predict -----------------------------------------------------------------------------------------------------
def breast_rows(rows: Sequence[Mapping[str, Any]], num_classes: int) -> list[dict[str, Any]]:
    """One row per patient and breast: the highest predicted category and the lesion that gave it (paper §1).

    Lesions are grouped by ``(patient_id, laterality)``; a lesion without laterality is grouped with the other
    lesions of its image instead (the ``image`` column is then filled, and ``laterality`` left empty), because two
    images without laterality may show different breasts. Ties in category go to the higher risk, then to the
    earlier manifest row. Groups appear in the order of their first lesion.

    Args:
        rows: ``predictions.csv`` rows (``patient_id``, ``laterality``, ``image``, ``birads_pred``, ``risk``,
            ``lesion_id``, ``row``).
        num_classes: 6 or 4 (orders the category names).
    """
    names = scale(num_classes)
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        laterality = str(row.get("laterality") or "").strip()
        key = (row["patient_id"], laterality, "" if laterality else row["image"])
        groups.setdefault(key, []).append(row)
    out = []
    for (patient, laterality, image), members in groups.items():
        top = max(members, key=lambda r: (names.index(r["birads_pred"]), float(r["risk"]), -int(r["row"])))
        out.append(
            {
                "patient_id": patient,
                "laterality": laterality,
                "image": image,
                "birads_max": top["birads_pred"],
                "risk": top["risk"],
                "lesion_id": top["lesion_id"],
                "row": top["row"],
                "n_lesions": len(members),
            }
        )
    return out


def write_predict_reports(
    out_dir: Path,
    predictions: Mapping[str, torch.Tensor],
    lesions: Sequence[Lesion],
    num_classes: int,
    root: Path | None = None,
    overlays: bool = True,
    overlay_size: int = 1024,
    voi: str = DEFAULT_VOI,
    splits: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Write ``predictions.csv``, ``breasts.csv`` and (optionally) ``overlays/*.png`` into ``out_dir``.

    Args:
        out_dir: the output folder (created).
        predictions: ``index``, ``risk``, ``pred``, ``target`` (-1 = no label) tensors, one entry per lesion.
        lesions: the data module's lesion list.
        num_classes: 6 or 4.
        root: the manifest's folder (image paths are written as the manifest gives them).
        overlays: draw one overlay PNG per image.
        overlay_size: longest side of an overlay's mammogram in pixels.
        voi: the DICOM VOI mode the model's input used (``data.voi``), so the overlay shows the same contrast.
        splits: patient -> split of the model's run (its ``splits.csv``): written per row, so predictions on the
            model's own training or validation patients are never mistaken for a fair evaluation.

    Returns:
        The written files by kind: ``predictions``, ``breasts`` and, with overlays, ``overlays`` (the folder).
    """
    from birads_calc.reporting.overlays import write_image_overlays

    if predictions["index"].numel() == 0:
        raise ValueError("predict found no lesions: nothing to report (is the manifest empty?)")
    out_dir = Path(out_dir)
    rows = prediction_rows(predictions, lesions, num_classes, root)
    for row in rows:
        row["split"] = (splits or {}).get(row["patient_id"], "")
    written = {}
    with staged_outputs(out_dir, owned=PREDICT_OUTPUTS) as stage:  # the whole set or, interrupted, the previous one
        if overlays:
            by_row = {lesion.row: lesion for lesion in lesions}
            names = write_image_overlays(stage / "overlays", rows, by_row, num_classes, overlay_size, voi)
            for row in rows:
                row["overlay"] = f"overlays/{names[row['image']]}"
            written["overlays"] = out_dir / "overlays"
        write_csv(stage / "predictions.csv", rows, PREDICT_COLUMNS)
        write_csv(stage / "breasts.csv", breast_rows(rows, num_classes), BREAST_COLUMNS)
    written["predictions"], written["breasts"] = out_dir / "predictions.csv", out_dir / "breasts.csv"
    return written
