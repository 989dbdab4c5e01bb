"""Report building blocks on hand-built cases: breast-level maximum, calibration table, counts, overlays, report.md."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import disc
from PIL import Image
from sklearn.metrics import precision_score, recall_score

from birads_calc.categories import SIX_CLASS
from birads_calc.data.manifest import Lesion
from birads_calc.reporting.calibration import LIKELIHOOD_RANGES, calibration_table, range_text, wilson_interval
from birads_calc.reporting.overlays import (
    CATEGORY_COLOURS,
    LEGEND_WIDTH,
    OverlayLesion,
    overlay_names,
    overlay_size,
    render_overlay,
)
from birads_calc.reporting.reports import RunInfo, breast_rows, class_counts, write_test_reports


def prediction(patient, laterality, image, birads, risk, lesion_id, row):
    return {"patient_id": patient, "laterality": laterality, "image": image, "birads_pred": birads, "risk": risk,
            "lesion_id": lesion_id, "row": row}  # fmt: skip


# --- breasts.csv --------------------------------------------------------------------------------------------------
def test_breast_rows_take_the_highest_category_per_patient_and_breast():
    rows = [
        prediction("A", "L", "a1.dcm", "4A", 0.40, "a-1", 1),
        prediction("A", "L", "a2.dcm", "4C", 0.70, "a-2", 2),  # other view of the same breast
        prediction("A", "R", "a3.dcm", "2", 0.05, "a-3", 3),
        prediction("A", "L", "a1.dcm", "4C", 0.75, "a-4", 4),  # same category, higher risk: wins the tie
        prediction("B", "L", "b1.dcm", "5", 0.60, "b-1", 5),  # MC baseline: category 5 with a lower risk ...
        prediction("B", "L", "b1.dcm", "4C", 0.70, "b-2", 6),  # ... still beats 4C with a higher one
        prediction("C", "R", "c1.dcm", "3", 0.30, "c-1", 7),
        prediction("C", "R", "c1.dcm", "3", 0.30, "c-2", 8),  # full tie: the earlier manifest row
        prediction("D", "", "d1.dcm", "4B", 0.55, "d-1", 9),  # no laterality: one group per image
        prediction("D", "", "d2.dcm", "3", 0.25, "d-2", 10),
        prediction("D", "", "d1.dcm", "2", 0.10, "d-3", 11),
    ]
    out = breast_rows(rows, num_classes=6)
    got = [(r["patient_id"], r["laterality"], r["image"], r["birads_max"], r["lesion_id"], r["n_lesions"]) for r in out]
    assert got == [
        ("A", "L", "", "4C", "a-4", 3),
        ("A", "R", "", "2", "a-3", 1),
        ("B", "L", "", "5", "b-1", 2),
        ("C", "R", "", "3", "c-1", 2),
        ("D", "", "d1.dcm", "4B", "d-1", 2),
        ("D", "", "d2.dcm", "3", "d-2", 1),
    ]
    assert out[0]["risk"] == 0.75 and out[0]["row"] == 4


def test_breast_rows_on_the_four_class_scale_order_4_between_3_and_5():
    rows = [prediction("A", "L", "x", "4", 0.6, "1", 1), prediction("A", "L", "x", "3", 0.9, "2", 2)]
    assert breast_rows(rows, num_classes=4)[0]["birads_max"] == "4"


# --- calibration --------------------------------------------------------------------------------------------------
def wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(0, 3), (1, 10), (9, 10), (5, 5), (2, 7)])
def test_wilson_interval_matches_the_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(wilson_by_hand(k, n), abs=1e-9)
    assert wilson_interval(0, 0) == (None, None)


def test_calibration_table_counts_rates_and_flags_on_a_hand_built_case():
    M, B, U = 1.0, 0.0, 0.5
    pred, malignancy = [], []

    def add(category, *values):
        for v in values:
            pred.append(SIX_CLASS.index(category))
            malignancy.append(v)

    add("2", U, U, U)  # followed up, never biopsied
    add("3", M, U)  # one biopsy, malignant: 100%
    add("4A", M, *[B] * 9, U, U)  # 1 of 10 biopsied: 10%, the top of 2-10%
    add("4B", B, B, B)  # 0 of 3: below 10-50% but a 3-biopsy interval still reaches it
    add("5", *[M] * 9, B)  # 9 of 10: below >= 95%
    rows = {r["category"]: r for r in calibration_table(pred, malignancy, num_classes=6)}
    assert list(rows) == list(SIX_CLASS)
    expect = {  # n_predicted, n_biopsied, n_malignant
        "2": (3, 0, 0), "3": (2, 1, 1), "4A": (12, 10, 1), "4B": (3, 3, 0), "4C": (0, 0, 0), "5": (10, 10, 9)
    }  # fmt: skip
    for name, counts in expect.items():
        assert (rows[name]["n_predicted"], rows[name]["n_biopsied"], rows[name]["n_malignant"]) == counts
    assert rows["2"]["observed_rate"] is None and rows["2"]["rate_in_range"] == "" and rows["2"]["ci_low"] is None
    assert rows["3"]["observed_rate"] == 1.0 and rows["3"]["rate_in_range"] == "no"
    assert rows["3"]["ci_overlaps_range"] == "no"  # Wilson low of 1/1 is 0.21 > 2%
    assert rows["4A"]["observed_rate"] == pytest.approx(0.1) and rows["4A"]["rate_in_range"] == "yes"
    assert (rows["4A"]["ci_low"], rows["4A"]["ci_high"]) == pytest.approx(wilson_by_hand(1, 10))
    assert rows["4B"]["observed_rate"] == 0.0 and rows["4B"]["rate_in_range"] == "no"
    assert rows["4B"]["ci_overlaps_range"] == "yes"
    assert rows["5"]["observed_rate"] == pytest.approx(0.9) and rows["5"]["rate_in_range"] == "no"
    assert rows["5"]["ci_overlaps_range"] == "yes"
    assert [rows[n]["expected_range"] for n in SIX_CLASS] == ["~0%", "<= 2%", "2-10%", "10-50%", "50-95%", ">= 95%"]


def test_four_class_calibration_uses_the_wide_category_4_range():
    rows = calibration_table([2, 2, 2, 2], [1.0, 0.0, 0.0, 0.0], num_classes=4)
    assert rows[2]["category"] == "4" and rows[2]["expected_range"] == "2-95%"
    assert rows[2]["observed_rate"] == 0.25 and rows[2]["rate_in_range"] == "yes"
    assert LIKELIHOOD_RANGES[4]["4"] == (0.02, 0.95) and range_text(0.95, 1.0) == ">= 95%"


# --- test reports -------------------------------------------------------------------------------------------------
def test_class_counts_match_scikit_learn():
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 6, 200), rng.integers(0, 6, 200)
    matrix = np.zeros((6, 6), dtype=int)
    np.add.at(matrix, (truth, pred), 1)
    rows = class_counts(matrix.tolist(), SIX_CLASS)
    recall = recall_score(truth, pred, labels=range(6), average=None)
    precision = precision_score(truth, pred, labels=range(6), average=None)
    for k, row in enumerate(rows):
        assert (row["n_true"], row["n_pred"]) == ((truth == k).sum(), (pred == k).sum())
        assert row["recall"] == pytest.approx(recall[k], abs=1e-4)
        assert row["precision"] == pytest.approx(precision[k], abs=1e-4)


def test_write_test_reports_adds_confusion_png_counts_calibration_and_report_md(tmp_path):
    n = 24
    root = tmp_path / "data"
    lesions = [
        Lesion(row=i + 1, patient_id=f"P{i // 2}", image=root / "images" / f"im{i // 2}.dcm", mask=root / f"m{i}.png",
               label=i % 6, malignancy=[0.0, 0.5, 1.0][i % 3], lesion_id=f"L{i}")
        for i in range(n)
    ]  # fmt: skip
    target = torch.tensor([x.label for x in lesions])
    pred = (target + torch.tensor([0, 1, -1, 0] * 6)).clamp(0, 5)
    predictions = {"index": torch.arange(n), "risk": (pred.float() + 0.5) / 6, "pred": pred, "target": target,
                   "malignancy": torch.tensor([x.malignancy for x in lesions])}  # fmt: skip
    info = RunInfo("proposed", "mamse", True, 0.2, 6, "runs/x/best.ckpt")
    report, rows = write_test_reports(tmp_path / "run", predictions, lesions, info, resamples=50, root=root)
    run = tmp_path / "run"
    assert rows[0]["image"] == "images/im0.dcm"  # the path as the manifest gives it
    assert json.loads((run / "metrics.json").read_text()) == report
    with Image.open(run / "confusion_matrix.png") as png:
        assert png.format == "PNG" and min(png.size) > 200
    with (run / "calibration.csv").open() as f:
        calibration = list(csv.DictReader(f))
    expected = calibration_table(pred.numpy(), predictions["malignancy"].numpy(), 6)
    assert [int(r["n_biopsied"]) for r in calibration] == [r["n_biopsied"] for r in expected]
    with (run / "class_counts.csv").open() as f:
        assert [int(r["n_true"]) for r in csv.DictReader(f)] == [4] * 6
    text = (run / "report.md").read_text()
    qwk = report["metrics"]["qwk"]
    assert f"| QWK | {qwk['value']:.3f} | {qwk['ci_low']:.3f} - {qwk['ci_high']:.3f} | {n} |" in text
    assert "| 4A | 2-10% |" in text and "## Per-class counts" in text
    assert not list(run.glob(".*partial*"))  # atomic writes leave no temporary files behind


# --- overlays -----------------------------------------------------------------------------------------------------
def test_overlay_size_colours_and_legend_on_a_hand_built_image():
    shape = (300, 200)
    pixels = np.full(shape, 0.3, dtype=np.float32)
    big = disc(shape, (100, 60), 30)  # outline visible at half size
    tiny = disc(shape, (220, 140), 2)  # too small for an outline at half size: gets a ring
    lesions = [OverlayLesion(big, "4C", 0.81), OverlayLesion(tiny, "2", 0.05)]
    image = np.asarray(render_overlay(pixels, lesions, SIX_CLASS, max_side=150))
    width, height = overlay_size(shape, 150)
    assert (width, height) == (100, 150)
    assert image.shape == (max(height, 152), width + LEGEND_WIDTH, 3)  # the legend panel is 152 px tall
    colour = {name: np.all(image == CATEGORY_COLOURS[name], axis=-1) for name in SIX_CLASS}
    # the big lesion's outline: its edge at half scale, e.g. the leftmost point (row 50, col 15)
    assert colour["4C"][48:53, 13:18].any()
    assert colour["4C"][50, 30] == False  # noqa: E712  (inside the outline: the image shows through)
    assert colour["2"][100:122, 60:82].any()  # the ring around the tiny lesion at (110, 70)
    assert not any(colour[name][:, :width].any() for name in ("3", "4A", "4B", "5"))  # only predicted colours
    for name in SIX_CLASS:  # every category in the legend panel
        assert colour[name][:, width:].any(), name
    gray = image[130:150, :40]
    assert np.all(gray == round(0.3 * 255))  # the mammogram itself is untouched where nothing is drawn


def test_overlays_are_never_enlarged_and_names_never_collide():
    small = np.asarray(render_overlay(np.zeros((40, 30), np.float32), [], ("2", "3", "4", "5"), max_side=1024))
    assert overlay_size((40, 30), 1024) == (30, 40) and small.shape[1] == 30 + LEGEND_WIDTH
    names = overlay_names(["a/x.dcm", "b/x.dcm", "x.png", "c/y.dcm"])
    assert names == {"a/x.dcm": "x.png", "b/x.dcm": "x_2.png", "x.png": "x_3.png", "c/y.dcm": "y.png"}
    assert all(Path(v).suffix == ".png" for v in names.values())
