"""mini-MIAS adapter on the real 25 CALC images of ../shared/data/mini-mias."""

import csv
import re
from collections import Counter

import numpy as np
import pytest

from birads_calc.cli import main as cli
from birads_calc.data.masks import read_mask

# Circles that lie on the black film background, off the breast (checked visually, either coordinate origin):
# annotation errors in Info.txt, reported rather than converted.
OFF_BREAST = {"mdb212", "mdb214"}


@pytest.fixture(scope="module")
def converted(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("mias") / "manifest.csv"
    assert cli(["convert", "mini-mias", "--src", str(shared_data / "mini-mias"), "--out", str(out)]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    with out.with_name("manifest.not_converted.csv").open(newline="") as f:
        skipped = list(csv.DictReader(f))
    return out, rows, skipped


def info_lines(shared_data):
    """Info.txt data lines, split independently of the adapter: (ref, class, severity, x, y, radius or None)."""
    lines = []
    for line in (shared_data / "mini-mias" / "Info.txt").read_text(encoding="latin-1").splitlines():
        match = re.match(r"^(mdb\d{3}) [FGD] (\w{4})(?: ([BM]))?(?: (\d+) (\d+) (\d+))?", line)
        if match:
            lines.append(match.groups())
    return lines


def test_every_calcification_circle_is_converted_or_reported(shared_data, converted):
    _, rows, skipped = converted
    lines = info_lines(shared_data)
    calc = [g for g in lines if g[1] == "CALC"]
    with_circle = [g for g in calc if g[3] is not None]
    assert len(calc) == 30 and len(with_circle) == 27  # SOURCE.md: 30 CALC rows, three *NOTE 3*
    expected_ids = []
    seen = Counter()
    for ref, *_ in with_circle:
        seen[ref] += 1
        if ref not in OFF_BREAST:
            expected_ids.append(f"{ref}_{seen[ref]}")
    assert [r["lesion_id"] for r in rows] == expected_ids
    reasons = Counter(s["reason"] for s in skipped)
    assert reasons["no centre/radius (*NOTE 3*: calcifications spread over the breast)"] == 3
    assert reasons["circle lies on the film background, outside the breast"] == len(OFF_BREAST)
    not_calc = sum(n for reason, n in reasons.items() if reason.startswith("not a calcification"))
    assert not_calc == len(lines) - len(calc)
    assert sum(reasons.values()) + len(rows) == len(lines)  # nothing dropped silently


def test_masks_are_non_empty_and_inside_their_circle(shared_data, converted):
    out, rows, _ = converted
    circles = {}
    seen = Counter()
    for ref, _, severity, x, y, radius in info_lines(shared_data):
        if x is not None:
            seen[ref] += 1
            circles[f"{ref}_{seen[ref]}"] = (int(x), int(y), int(radius), severity)
    for row in rows:
        x, y, radius, severity = circles[row["lesion_id"]]
        mask = read_mask(out.parent / row["mask"])
        assert mask.shape == (1024, 1024) and mask.any(), row["lesion_id"]
        rr, cc = np.nonzero(mask)
        # origin at the bottom-left: pixel row = 1024 - Y
        assert np.all((rr - (1024 - y)) ** 2 + (cc - x) ** 2 <= radius**2), row["lesion_id"]
        assert row["pathology"] == {"B": "benign", "M": "malignant"}[severity]
        assert row["birads"] == "" and row["split"] == ""
        number = int(row["lesion_id"][3:6])
        assert row["patient_id"] == f"mias_{(number + 1) // 2:03d}"  # films 2k-1 and 2k: one woman


def test_check_data_accepts_the_manifest_without_labels(converted):
    out, _, _ = converted
    assert cli(["check-data", str(out), "--num_classes", "4", "--labels", "optional"]) == 0
    assert cli(["check-data", str(out), "--num_classes", "4"]) == 2  # fit/test need labels: refused, clearly
