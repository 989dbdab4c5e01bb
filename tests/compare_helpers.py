"""Finished runs for the ``compare`` tests: ``metrics.json`` in the documented format (identity included) and a
``predictions.csv`` drawn from the simulation model of :mod:`birads_calc.reporting.simulation`."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np

from birads_calc.reporting.simulation import K, Scenario, draw_test_set

SIX = ["2", "3", "4A", "4B", "4C", "5"]
LABELS = {
    ("ce", False): "MC",
    ("mse", False): "MSE",
    ("mamse", False): "MAMSE",
    ("ce", True): "MC + attention ROI",
    ("mse", True): "MSE + attention ROI",
    ("mamse", True): "MAMSE + attention ROI",
}
IDENTITY = {
    "code": {"version": "0.1.0", "git_commit": "0123456789abcdef0123456789abcdef01234567"},
    "data": {"manifest_sha256": "aa" * 32, "split_sha256": "bb" * 32, "test_set_sha256": "cc" * 32},
    "recipe": {
        "max_epochs": 10,
        "epochs_trained": 10,
        "optimizer": "torch.optim.AdamW(lr=0.001)",
        "lr_scheduler": "torch.optim.lr_scheduler.StepLR(step_size=10, gamma=0.3)",
        "backbone": "test_resnet",
        "pretrained": False,
        "precision": "32-true",
        "global_batch": 32,
        "window": 128,
        "stride": 64,
        "pixel_spacing_mm": None,
        "voi": "full",
        "balanced_sampling": True,
        "augment": False,
        "checkpoint_selection": "last",
        "num_classes": 6,
    },
}


def make_lesions(patients: int = 12, seed: int = 0) -> list[dict]:
    """One fixed test set: patient, lesion id, true category and pathology per calcification."""
    patient, category, malignant = draw_test_set(
        Scenario(patients=patients, lesions_per_patient=4), np.random.default_rng(seed)
    )
    return [
        {"patient_id": f"P{p:03d}", "lesion_id": f"P{p:03d}_{k}", "true": int(c), "malignant": bool(m)}
        for k, (p, c, m) in enumerate(zip(patient, category, malignant, strict=True))
    ]


def predicted(lesions: list[dict], noise: float, seed: int) -> list[int]:
    """Predicted categories: the truth plus rounded Gaussian noise of ``noise`` classes."""
    rng = np.random.default_rng(seed)
    return [int(np.clip(round(x["true"] + rng.normal(0, noise)), 0, K - 1)) for x in lesions]


def write_run(
    folder: Path,
    loss: str,
    attention: bool,
    alpha: float | None,
    seed: int | None,
    lesions: list[dict] | None = None,
    pred: list[int] | None = None,
    identity: dict | str | None = "default",
    values: tuple[float, float, float] = (0.5, 0.2, 0.3),
    ci: tuple[float, float] | None = None,
) -> Path:
    """A finished run folder; ``identity``: ``"default"`` (:data:`IDENTITY` with the seed), a dict of overrides per
    section (``{"recipe": {"max_epochs": 50}}``) or ``None`` (an older birads-calc wrote it)."""
    folder.mkdir(parents=True, exist_ok=True)
    low, high = ci or (None, None)
    report = {
        "config": folder.parent.name,
        "method": LABELS[loss, attention],
        "loss": loss,
        "attention": attention,
        "alpha": alpha,
        "num_classes": 6,
        "classes": SIX,
        "seed": seed,
        "metrics": {
            key: {"value": v, "ci_low": low, "ci_high": high, "n": 10}
            for key, v in zip(("qwk", "maqwk_m", "maqwk_b"), values, strict=True)
        },
    }
    if identity is not None:
        report["identity"] = copy.deepcopy(IDENTITY) | {"seed": seed}
        for section, overrides in ({} if identity == "default" else identity).items():
            report["identity"][section] = {**report["identity"].get(section, {}), **overrides}
    (folder / "metrics.json").write_text(json.dumps(report))
    if lesions is not None:
        with (folder / "predictions.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["lesion_id", "patient_id", "birads_true", "birads_pred", "pathology"])
            for lesion, p in zip(lesions, pred, strict=True):
                writer.writerow(
                    [
                        lesion["lesion_id"],
                        lesion["patient_id"],
                        SIX[lesion["true"]],
                        SIX[p],
                        "malignant" if lesion["malignant"] else "benign",
                    ]
                )
    return folder
