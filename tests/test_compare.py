"""``birads-calc compare``: Table 3 markdown, bar chart and Fig. 3 alpha curve from hand-written metrics.json."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birads_calc.cli import main


def write_run(
    folder: Path, method: str, loss: str, attention: bool, alpha: float | None, qwk, maqwk_m, maqwk_b, seed=None
):
    """A finished run: ``metrics.json`` in the documented format (docs/architecture.md)."""

    def metric(value, low, high):
        return {"value": value, "ci_low": low, "ci_high": high, "n": 50}

    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "config": folder.parent.name,
        "method": method,
        "loss": loss,
        "attention": attention,
        "alpha": alpha,
        "num_classes": 6,
        "seed": seed,
        "metrics": {"qwk": metric(*qwk), "maqwk_m": metric(*maqwk_m), "maqwk_b": metric(*maqwk_b)},
    }
    (folder / "metrics.json").write_text(json.dumps(data))
    return folder


def test_two_runs_give_table_in_table3_order_and_bar_chart(tmp_path, capsys):
    proposed = write_run(
        tmp_path / "runs/proposed/version_0", "MAMSE + attention ROI", "mamse", True, 0.2,
        (0.8870, 0.85, 0.91), (0.3489, 0.2, 0.45), (0.3786, 0.25, 0.48),
    )  # fmt: skip
    mc = write_run(
        tmp_path / "runs/mc/version_3", "MC", "ce", False, None,
        (0.6583, 0.61, 0.70), (0.1121, 0.01, 0.2), (-0.0027, -0.1, 0.09),
    )  # fmt: skip
    out = tmp_path / "cmp"
    assert main(["compare", str(proposed), str(mc / "metrics.json"), "--out", str(out)]) == 0

    table = (out / "table.md").read_text()
    printed = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ") and "Method" not in line]
    assert len(rows) == 2
    # Table 3 order (gray-patch MC before the proposed method) although given the other way round.
    assert rows[0].startswith("| MC |") and rows[1].startswith("| MAMSE + attention ROI |")
    assert "| 1 (?) |" in rows[0]  # one run, seed unknown
    assert "0.6583 [0.6100, 0.7000]" in rows[0] and "-0.0027 [-0.1000, 0.0900]" in rows[0]
    assert "0.8870 [0.8500, 0.9100]" in rows[1] and "0.3786 [0.2500, 0.4800]" in rows[1]
    assert rows[0] in printed and rows[1] in printed
    with Image.open(out / "table.png") as image:
        assert image.format == "PNG" and image.size == (800, 450)
    assert not (out / "alpha.png").exists()  # two different methods are no sweep


def test_alpha_sweep_draws_fig3_curve(tmp_path):
    runs = []
    for k, alpha in enumerate([1.0, 0.2, 0.5]):
        runs.append(
            write_run(
                tmp_path / f"runs/alpha_{alpha}/version_0",
                "MAMSE + attention ROI",
                "mamse",
                True,
                alpha,
                (0.80 + k / 100, 0.7, 0.9),
                (0.3, 0.2, 0.4),
                (0.35, 0.3, 0.4),
            )
        )
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    rows = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("| MAMSE")]
    assert [row.split("|")[1].strip() for row in rows] == [
        "MAMSE + attention ROI (alpha=0.2)",
        "MAMSE + attention ROI (alpha=0.5)",
        "MAMSE + attention ROI (alpha=1)",
    ]
    assert [row.split("|")[3].strip().split()[0] for row in rows] == ["0.8100", "0.8200", "0.8000"]
    with Image.open(out / "alpha.png") as image:
        assert image.size == (800, 450)
        assert len(np.unique(np.asarray(image.convert("L")))) > 10  # something was drawn, not a blank canvas


def test_config_folder_takes_newest_version_with_metrics(tmp_path):
    config = tmp_path / "runs/mse"
    write_run(config / "version_2", "MSE", "mse", False, 1.0, (0.5, 0.4, 0.6), (0.1, 0, 0.2), (0.1, 0, 0.2))
    write_run(config / "version_10", "MSE", "mse", False, 1.0, (0.6877, 0.6, 0.7), (0.15, 0, 0.2), (0.03, 0, 0.1))
    (config / "version_11").mkdir()  # an unfinished run: no metrics.json yet
    out = tmp_path / "cmp"
    assert main(["compare", str(config), "--out", str(out)]) == 0
    assert "0.6877" in (out / "table.md").read_text() and "0.5000" not in (out / "table.md").read_text()


def test_folder_without_metrics_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "runs/unfinished/version_0"
    empty.mkdir(parents=True)
    assert main(["compare", str(empty), "--out", str(tmp_path / "cmp")]) == 2
    message = capsys.readouterr().out
    assert str(empty) in message and "no metrics.json" in message and "Traceback" not in message


def test_malformed_metrics_names_file_and_entry(tmp_path, capsys):
    run = tmp_path / "runs/bad/version_0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"metrics": {"qwk": {"value": 0.5}, "maqwk_m": {"value": 0.1}}}))
    assert main(["compare", str(run), "--out", str(tmp_path / "cmp")]) == 2
    message = capsys.readouterr().out
    assert "metrics.json" in message and "maqwk_b" in message


def test_undefined_metric_is_shown_as_na_not_refused(tmp_path):
    # a test split without benign lesions has no MAQWK-B: metrics.json records null
    run = write_run(
        tmp_path / "runs/proposed/version_0", "MAMSE + attention ROI", "mamse", True, 0.2,
        (0.81, 0.7, 0.9), (0.3, 0.1, 0.5), (None, None, None),
    )  # fmt: skip
    out = tmp_path / "cmp"
    assert main(["compare", str(run), "--out", str(out)]) == 0
    (row,) = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("| MAMSE")]
    assert row.endswith("| n/a |") and "0.8100 [0.7000, 0.9000]" in row
    assert (out / "table.png").exists()


# --- statistics over seeds and paired differences ---------------------------------------------------------------------
T_975_2DF = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (statistical tables)
PATIENTS = [f"P{k}" for k in range(8)]


def predictions(truth_shift: int, seed: int) -> list[dict]:
    """Three lesions per patient; predictions off by ``truth_shift`` classes on some, varying with the seed."""
    rng = np.random.default_rng(seed * 10 + truth_shift)
    rows = []
    for p, patient in enumerate(PATIENTS):
        for j in range(3):
            true = (p + j) % 6
            pred = int(np.clip(true + rng.integers(-truth_shift, truth_shift + 1), 0, 5))
            rows.append({"patient_id": patient, "lesion_id": f"{patient}_{j}", "birads_true": SIX[true],
                         "birads_pred": SIX[pred], "pathology": "malignant" if true >= 3 else "benign"})  # fmt: skip
    return rows


SIX = ["2", "3", "4A", "4B", "4C", "5"]


def write_predictions(folder: Path, rows: list[dict]) -> None:
    columns = ["patient_id", "lesion_id", "birads_true", "birads_pred", "pathology"]
    lines = [",".join(columns)] + [",".join(row[c] for c in columns) for row in rows]
    (folder / "predictions.csv").write_text("\n".join(lines) + "\n")


def test_compare_json_means_sds_and_paired_cis_match_a_hand_computation(tmp_path):
    import sklearn.metrics

    from birads_calc.reporting.compare import patient_draws, seed_draws

    qwk = {"a": [0.70, 0.74, 0.78], "b": [0.60, 0.61, 0.65]}
    shift = {"a": 1, "b": 2}
    runs = []
    for name, (loss, attention) in {"a": ("mamse", True), "b": ("mse", True)}.items():
        for seed, value in zip((0, 1, 2), qwk[name], strict=True):
            alpha = 0.2 if loss == "mamse" else None
            folder = write_run(tmp_path / f"runs/{name}/version_{seed}", f"method {name}", loss, attention, alpha,
                               (value, 0, 1), (0.3, 0, 1), (0.2, 0, 1), seed=seed)  # fmt: skip
            write_predictions(folder, predictions(shift[name], seed))
        runs.append(str(tmp_path / f"runs/{name}"))  # config folders: every seed's run
    out = tmp_path / "cmp"
    assert main(["compare", *runs, "--out", str(out), "--resamples", "200", "--bootstrap_seed", "3"]) == 0
    report = json.loads((out / "compare.json").read_text())

    by_label = {m["label"]: m for m in report["methods"]}
    for name in ("a", "b"):
        method, values = by_label[f"method {name}"], qwk[name]
        assert method["n_runs"] == 3 and method["seeds"] == [0, 1, 2]
        mean = sum(values) / 3
        sd = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
        stat = method["metrics"]["qwk"]
        assert stat["mean"] == pytest.approx(mean) and stat["sd"] == pytest.approx(sd)
        assert stat["ci_low"] == pytest.approx(mean - T_975_2DF * sd / 3**0.5)
        assert stat["ci_high"] == pytest.approx(mean + T_975_2DF * sd / 3**0.5)

    # paired QWK difference by hand: sklearn's kappa on the documented resamples of patients and seeds
    def kappa(rows, counts):
        drawn = [r for r in rows for _ in range(counts[PATIENTS.index(r["patient_id"])])]
        return sklearn.metrics.cohen_kappa_score([SIX.index(r["birads_true"]) for r in drawn],
                                                 [SIX.index(r["birads_pred"]) for r in drawn],
                                                 weights="quadratic", labels=list(range(6)))  # fmt: skip

    # a (MAMSE) is the later Table 3 row, b (MSE) the earlier one: the difference is a - b
    rows = {(n, s): predictions(shift[n], s) for n in ("a", "b") for s in (0, 1, 2)}
    ones = [1] * len(PATIENTS)
    diff = np.mean([kappa(rows["a", s], ones) - kappa(rows["b", s], ones) for s in (0, 1, 2)])
    counts, seeds = patient_draws(len(PATIENTS), 200, 3), seed_draws(3, 200, 3)
    resampled = [np.mean([kappa(rows["a", s], c) - kappa(rows["b", s], c) for s in drawn])
                 for c, drawn in zip(counts, seeds, strict=True)]  # fmt: skip
    (entry,) = [p for p in report["paired"] if p["metric"] == "qwk"]
    assert (entry["a"], entry["b"], entry["seeds"]) == ("method a", "method b", [0, 1, 2])
    assert entry["diff"] == pytest.approx(diff)
    assert entry["ci_low"] == pytest.approx(np.percentile(resampled, 2.5))
    assert entry["ci_high"] == pytest.approx(np.percentile(resampled, 97.5))
    expected = "distinguishable" if entry["ci_high"] < 0 or entry["ci_low"] > 0 else "not distinguishable"
    assert entry["verdict"] == expected
    assert {p["metric"] for p in report["paired"]} == {"qwk", "maqwk_m", "maqwk_b"}
    assert "Paired differences" in (out / "table.md").read_text()


def test_identical_predictions_are_not_distinguishable(tmp_path):
    runs = []
    for name, loss in (("x", "mse"), ("y", "ce")):
        for seed in (0, 1):
            folder = write_run(tmp_path / f"runs/{name}/version_{seed}", name, loss, False, None,
                               (0.5, 0, 1), (0.1, 0, 1), (0.1, 0, 1), seed=seed)  # fmt: skip
            write_predictions(folder, predictions(1, seed))
            runs.append(str(folder))
    out = tmp_path / "cmp"
    assert main(["compare", *runs, "--out", str(out), "--resamples", "50"]) == 0
    qwk = next(p for p in json.loads((out / "compare.json").read_text())["paired"] if p["metric"] == "qwk")
    assert (qwk["diff"], qwk["ci_low"], qwk["ci_high"], qwk["verdict"]) == (0.0, 0.0, 0.0, "not distinguishable")
