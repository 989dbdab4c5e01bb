"""``birads-calc compare`` through its command: Table 3 and Fig. 3 layout, compare.json against a hand computation,
charts (also with a CI that excludes its estimate), bad options, one output set, stdout/stderr, the W&B run."""

import json
import math
import re
import time

import numpy as np
import pytest
import sklearn.metrics
from compare_helpers import make_lesions, predicted, write_run
from PIL import Image
from scipy import stats
from training_helpers import read_wandb_records

from birads_calc.cli import main
from birads_calc.reporting.compare import patient_draws
from birads_calc.reporting.compare_charts import error_lengths


def compare(capsys, *args: str, wandb: bool = False) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["compare", *args, *(() if wandb else ("--wandb", "false"))])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def method_rows(text: str) -> list[str]:
    """The rows of the methods table: ``| label | n (seeds) | ...``."""
    return [line for line in text.splitlines() if re.match(r"\| [^|]+ \| \d+ \(", line)]


def test_two_runs_give_table_in_table3_order_and_bar_chart(tmp_path, capsys):
    proposed = write_run(tmp_path / "runs/proposed/version_0", "mamse", True, 0.2, 0, values=(0.887, 0.3489, 0.3786),
                         ci=(0.85, 0.91))  # fmt: skip
    mc = write_run(tmp_path / "runs/mc/version_3", "ce", False, None, 0, values=(0.6583, 0.1121, -0.0027),
                   ci=(0.61, 0.70))  # fmt: skip
    out = tmp_path / "cmp"
    code, printed, err = compare(capsys, str(proposed), str(mc / "metrics.json"), "--out", str(out))
    assert code == 0
    rows = method_rows((out / "table.md").read_text())
    # Table 3 order (gray-patch MC before the proposed method) although given the other way round; no predictions:
    # a single run's own bootstrap CI from its metrics.json
    assert rows[0].startswith("| MC | 1 (0) | 0.6583 [0.6100, 0.7000] |")
    assert rows[1].startswith("| MAMSE + attention ROI | 1 (0) | 0.8870 [0.8500, 0.9100] |")
    assert rows[0] in printed and rows[1] in printed
    assert err.strip() == f"compare: wrote compare.json, table.md, table.png to {out}"  # one closing line, on stderr
    with Image.open(out / "table.png") as image:
        assert image.format == "PNG" and image.size == (800, 450)
    assert not (out / "alpha.png").exists()  # two different methods are no sweep
    report = json.loads((out / "compare.json").read_text())
    assert report["not_paired"][0]["reason"].startswith("no predictions.csv")


def test_undefined_metric_is_shown_as_na_not_refused(tmp_path, capsys):
    run = write_run(tmp_path / "runs/proposed/version_0", "mamse", True, 0.2, 0, values=(0.81, 0.3, None),
                    ci=(0.7, 0.9))  # fmt: skip
    code, _, _ = compare(capsys, str(run), "--out", str(tmp_path / "cmp"))
    assert code == 0
    (row,) = method_rows((tmp_path / "cmp" / "table.md").read_text())
    assert row.endswith("| n/a |") and "0.8100 [0.7000, 0.9000]" in row


def test_malformed_metrics_names_file_and_entry_on_stderr(tmp_path, capsys):
    run = tmp_path / "runs/bad/version_0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"metrics": {"qwk": {"value": 0.5}, "maqwk_m": {"value": 0.1}}}))
    code, out, err = compare(capsys, str(run), "--out", str(tmp_path / "cmp"))
    assert code == 2 and out == ""
    assert "metrics.json" in err and "maqwk_b" in err and "Traceback" not in err


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_bootstrap_seed_outside_0_to_2_32_is_refused(tmp_path, capsys, seed):
    run = write_run(tmp_path / "runs/mse/version_0", "mse", False, None, 0)
    code, out, err = compare(capsys, str(run), "--out", str(tmp_path / "cmp"), "--bootstrap_seed", seed)
    assert code == 2 and out == "" and f"--bootstrap_seed must be in [0, 2^32), got {seed}" in err
    assert not (tmp_path / "cmp").exists()


def test_out_that_is_an_existing_file_is_refused_and_kept(tmp_path, capsys):
    run = write_run(tmp_path / "runs/mse/version_0", "mse", False, None, 0)
    target = tmp_path / "table.md"
    target.write_text("my notes")
    code, _, err = compare(capsys, str(run), "--out", str(target))
    assert code == 2 and f"--out {target} is a file" in err and target.read_text() == "my notes"


def test_outputs_are_written_as_one_set(tmp_path, capsys, monkeypatch):
    lesions = make_lesions()
    runs = []
    for alpha in (0.2, 0.5):
        folder = write_run(tmp_path / f"runs/alpha_{alpha}/seed_0", "mamse", True, alpha, 0, lesions,
                           predicted(lesions, 1, int(alpha * 10)))  # fmt: skip
        runs.append(str(folder))
    out = tmp_path / "cmp"
    assert compare(capsys, *runs, "--out", str(out))[0] == 0
    assert (out / "alpha.png").exists()
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    # a failure while writing the charts leaves the previous set whole (no new compare.json beside old charts)
    import birads_calc.reporting.compare_charts as charts

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(charts, "bar_chart", broken)
    code, _, err = compare(capsys, runs[0], "--out", str(out))
    assert code == 1 and "No space left on device" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.undo()

    # one method: no sweep, no pair; the old alpha.png and differences.png are removed with the rest of the set
    assert compare(capsys, runs[0], "--out", str(out))[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "table.md", "table.png"]


def test_chart_draws_when_a_bootstrap_ci_excludes_its_estimate(tmp_path, capsys):
    # a percentile CI need not contain its point estimate: the error bar is clipped at the estimate
    assert error_lengths([0.5, 0.5, 0.5], [0.55, 0.4, None], [0.7, 0.45, None]).tolist() == [
        [0.0, pytest.approx(0.1), 0.0], [pytest.approx(0.2), 0.0, 0.0]]  # fmt: skip
    run = write_run(tmp_path / "runs/mse/version_0", "mse", False, None, 0, values=(0.5, 0.2, 0.3), ci=(0.55, 0.7))
    code, _, _ = compare(capsys, str(run), "--out", str(tmp_path / "cmp"))
    assert code == 0
    with Image.open(tmp_path / "cmp" / "table.png") as image:
        assert len(np.unique(np.asarray(image.convert("L")))) > 10  # drawn, not a blank canvas


# --- compare.json against a hand computation -------------------------------------------------------------------------
def kappa(lesions: list[dict], pred: list[int], counts: np.ndarray, units: list[str], kind: str | None) -> float:
    """QWK (kind None) or MAQWK by hand: each lesion repeated as often as its patient is drawn; scikit-learn's
    kappa for QWK, the paper's Eq. 5-6 written out for MAQWK."""
    drawn = [
        (x, p) for x, p in zip(lesions, pred, strict=True) for _ in range(int(counts[units.index(x["patient_id"])]))
    ]
    if kind is None:
        return sklearn.metrics.cohen_kappa_score([x["true"] for x, _ in drawn], [p for _, p in drawn],
                                                 weights="quadratic", labels=list(range(6)))  # fmt: skip
    keep = [(x["true"], p) for x, p in drawn if x["malignant"] == (kind == "malignant")]
    observed = np.zeros((6, 6))
    for t, p in keep:
        observed[t, p] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    i, j = np.indices((6, 6))
    weights = (i - j) ** 2 * ((j < i) if kind == "malignant" else (j > i))
    with np.errstate(invalid="ignore"):  # no lesion of the kind drawn: undefined, as in compare
        return 1 - (weights * observed).sum() / (weights * expected).sum()


def test_compare_json_matches_a_hand_computation_of_the_paired_statistics(tmp_path, capsys):
    lesions = make_lesions(patients=15)
    units = sorted({x["patient_id"] for x in lesions})
    preds = {(name, s): predicted(lesions, noise, 10 * s + k)
             for k, (name, noise) in enumerate((("a", 0.6), ("b", 1.1))) for s in (0, 1, 2)}  # fmt: skip
    for s in (0, 1, 2):
        write_run(tmp_path / f"runs/proposed/seed_{s}", "mamse", True, 0.2, s, lesions, preds["a", s])
        write_run(tmp_path / f"runs/mse_attention/seed_{s}", "mse", True, None, s, lesions, preds["b", s])
    out = tmp_path / "cmp"
    code, printed, _ = compare(capsys, str(tmp_path / "runs/proposed"), str(tmp_path / "runs/mse_attention"),
                               "--out", str(out), "--resamples", "200", "--bootstrap_seed", "3")  # fmt: skip
    assert code == 0
    report = json.loads((out / "compare.json").read_text())
    counts = patient_draws(len(units), 200, 3)
    assert counts.shape == (201, 15) and (counts[0] == 1).all() and (counts[1:].sum(axis=1) == 15).all()

    entries = {p["metric"]: p for p in report["paired"]}
    for metric, kind in (("qwk", None), ("maqwk_m", "malignant"), ("maqwk_b", "benign")):
        # per seed and resample, a - b; then the Obuchowski-Rockette variance: S^2 / n + mean between-seed covariance
        d = np.array([[kappa(lesions, preds["a", s], c, units, kind) - kappa(lesions, preds["b", s], c, units, kind)
                       for s in (0, 1, 2)] for c in counts])  # fmt: skip
        point, boot = d[0], d[1:]
        boot = boot[~np.isnan(boot).any(axis=1)]
        centred = boot - boot.mean(axis=0)
        cov = centred.T @ centred / (len(boot) - 1) * 15 / 14
        shared = max(sum(cov[s, t] for s in range(3) for t in range(3) if s != t) / 6, 0.0)
        seeds_part = sum((x - point.mean()) ** 2 for x in point) / 2 / 3
        se = math.sqrt(shared + seeds_part)
        df = (shared + seeds_part) ** 2 / (seeds_part**2 / 2 + shared**2 / 14)
        entry = entries[metric]
        assert (entry["a"], entry["b"], entry["seeds"], entry["family"]) == (
            "MAMSE + attention ROI", "MSE + attention ROI", [0, 1, 2], "primary")  # fmt: skip
        assert entry["diff"] == pytest.approx(point.mean(), abs=1e-9)
        assert entry["se"] == pytest.approx(se, rel=1e-6) and entry["df"] == pytest.approx(df, rel=1e-6)
        half = stats.t.ppf(0.975, df) * se
        assert entry["ci_low"] == pytest.approx(point.mean() - half, rel=1e-6, abs=1e-9)
        assert entry["ci_high"] == pytest.approx(point.mean() + half, rel=1e-6, abs=1e-9)
        assert entry["p"] == pytest.approx(2 * stats.t.sf(abs(point.mean()) / se, df), rel=1e-6)
        tost = max(stats.t.sf((point.mean() + 0.02) / se, df), stats.t.cdf((point.mean() - 0.02) / se, df))
        assert entry["p_equivalence"] == pytest.approx(tost, rel=1e-6)
    # Holm over the 3 primary pairs x (superiority, equivalence): the smallest p is multiplied by 6
    ps = [e[k] for e in entries.values() for k in ("p", "p_equivalence")]
    assert min(e["p_holm"] for e in entries.values()) == pytest.approx(min(6 * min(ps), 1.0))
    for entry in entries.values():
        expected = ("a better" if entry["diff"] > 0 else "b better") if entry["p_holm"] <= 0.05 else (
            "equivalent" if entry["p_holm_equivalence"] <= 0.05 else "inconclusive")  # fmt: skip
        assert entry["verdict"] == expected
        assert entry["mdd"] > 0 and entry["mdd_alpha"] == pytest.approx(0.05 / 6)
    assert "Primary comparisons (" in printed and "| MAMSE + attention ROI | MSE + attention ROI | QWK |" in printed

    method = {m["label"]: m for m in report["methods"]}["MAMSE + attention ROI"]
    assert method["n_runs"] == 3 and method["seeds"] == [0, 1, 2]
    values = [kappa(lesions, preds["a", s], counts[0], units, None) for s in (0, 1, 2)]
    assert method["metrics"]["qwk"]["mean"] == pytest.approx(np.mean(values))
    assert method["metrics"]["qwk"]["sd"] == pytest.approx(np.std(values, ddof=1))
    assert method["metrics"]["qwk"]["ci_basis"] == "patients and seeds"
    assert set(report["mdd"]) == {"qwk", "maqwk_m", "maqwk_b"} and report["mdd"]["qwk"]["primary"] == pytest.approx(
        entries["qwk"]["mdd"]
    )


def test_identical_methods_are_not_called_different_and_two_seeds_give_no_verdict(tmp_path, capsys):
    lesions = make_lesions()
    runs = []
    for name, loss in (("mse", "mse"), ("mc", "ce")):
        for seed in (0, 1):
            runs.append(str(write_run(tmp_path / f"runs/{name}/seed_{seed}", loss, False, None, seed, lesions,
                                      predicted(lesions, 1, seed))))  # fmt: skip
    code, printed, _ = compare(capsys, *runs, "--out", str(tmp_path / "cmp"), "--resamples", "200")
    assert code == 0
    qwk = next(p for p in json.loads((tmp_path / "cmp" / "compare.json").read_text())["paired"] if p["metric"] == "qwk")
    assert (qwk["diff"], qwk["ci_low"], qwk["ci_high"]) == (0.0, 0.0, 0.0)
    assert qwk["p"] is None and qwk["verdict"] == "inconclusive" and "at least 3 seeds" in qwk["note"]
    assert "no verdict (2 seeds)" in printed


def finished_records(path, timeout: float = 60.0) -> list:
    """The records of an offline W&B run file once W&B's service has written its exit record (it writes after
    ``finish()`` returns, in its own process)."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def test_wandb_offline_run_holds_the_tables_verdicts_and_charts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    lesions = make_lesions(patients=40)
    for s in (0, 1, 2):
        write_run(tmp_path / f"runs/mse/seed_{s}", "mse", False, None, s, lesions, predicted(lesions, 1.5, s))
        write_run(
            tmp_path / f"runs/mse_attention/seed_{s}", "mse", True, None, s, lesions, predicted(lesions, 0.3, 9 + s)
        )
    out = tmp_path / "cmp"
    code, printed, err = compare(capsys, str(tmp_path / "runs/mse"), str(tmp_path / "runs/mse_attention"),
                                 "--out", str(out), "--resamples", "200", wandb=True)  # fmt: skip
    assert code == 0 and "wandb" not in printed  # W&B's own chatter stays off stdout
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    assert f"W&B run in {run_file.parent}" in err
    records = finished_records(run_file)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.project, run.job_type) == ("birads-calc", "compare")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["level"] == 0.95 and len(config["runs"]) == 6
    media = run_file.parent / "files" / "media"
    paired = json.loads(next(media.glob("table/compare/paired_*.table.json")).read_text())
    report = json.loads((out / "compare.json").read_text())
    assert len(paired["data"]) == len(report["paired"]) == 3 and "verdict" in paired["columns"]
    column = paired["columns"].index("verdict")
    assert [row[column] for row in paired["data"]] == [p["verdict"] for p in report["paired"]]
    methods = json.loads(next(media.glob("table/compare/methods_*.table.json")).read_text())
    assert [row[0] for row in methods["data"]] == ["MSE", "MSE + attention ROI"]
    assert len(list(media.glob("images/compare/*.png"))) == 2  # table.png and differences.png
    keys = {item.key: json.loads(item.value_json) for r in records if r.WhichOneof("record_type") == "summary"
            for item in r.summary.update}  # fmt: skip
    assert keys["verdict/MSE + attention ROI vs MSE/qwk"] == report["paired"][0]["verdict"] == "a better"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--resamples", "150", "--resamples must be at least 200"),
        ("--equivalence_margin", "0", "--equivalence_margin must be a positive number"),
        ("--equivalence_margin", "-0.1", "--equivalence_margin must be a positive number"),
    ],
)
def test_bad_numbers_are_refused_naming_the_option(tmp_path, capsys, option, value, message):
    run = write_run(tmp_path / "runs/mse/version_0", "mse", False, None, 0)
    code, out, err = compare(capsys, str(run), "--out", str(tmp_path / "cmp"), option, value)
    assert code == 2 and out == "" and message in err and not (tmp_path / "cmp").exists()


def test_comparisons_file_sets_primary_pairs_and_margins_and_a_bad_one_is_named(tmp_path, capsys):
    lesions = make_lesions()
    for s in (0, 1, 2):
        write_run(tmp_path / f"runs/mc/seed_{s}", "ce", False, None, s, lesions, predicted(lesions, 1.0, s))
        write_run(tmp_path / f"runs/mse/seed_{s}", "mse", False, None, s, lesions, predicted(lesions, 1.0, 10 + s))
    plan = tmp_path / "plan.yaml"
    plan.write_text("equivalence_margin: {qwk: 0.5}\nprimary:\n  - name: MC over MSE\n"
                    "    a: {loss: ce, attention: false}\n    b: {loss: mse, attention: false}\n")  # fmt: skip
    runs = [str(tmp_path / "runs/mse"), str(tmp_path / "runs/mc")]
    code, printed, _ = compare(capsys, *runs, "--out", str(tmp_path / "cmp"), "--comparisons", str(plan))
    assert code == 0
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert report["primary"] == [{"name": "MC over MSE", "a": ["ce", False, None], "b": ["mse", False, None],
                                  "compared": True}]  # fmt: skip
    qwk, maqwk_m = (next(p for p in report["paired"] if p["metric"] == m) for m in ("qwk", "maqwk_m"))
    assert (qwk["a"], qwk["b"], qwk["family"], qwk["comparison"]) == ("MC", "MSE", "primary", "MC over MSE")
    assert (qwk["margin"], maqwk_m["margin"]) == (0.5, 0.02)  # the file's margin for QWK, the default elsewhere
    assert qwk["verdict"] == "equivalent"  # same noise, a wide margin: equivalence is a finding
    assert "| MC | MSE | QWK |" in printed

    code, _, _ = compare(capsys, *runs, "--out", str(tmp_path / "cmp"), "--comparisons", str(plan),
                         "--equivalence_margin", "0.001")  # fmt: skip
    qwk = next(p for p in json.loads((tmp_path / "cmp" / "compare.json").read_text())["paired"] if p["metric"] == "qwk")
    assert code == 0 and qwk["margin"] == 0.001 and qwk["verdict"] == "inconclusive"

    plan.write_text("primary:\n  - a: {loss: mamse, attention: true}\n    b: {loss: mse, attention: true}\n")
    code, _, err = compare(capsys, *runs, "--out", str(tmp_path / "cmp"), "--comparisons", str(plan))
    assert code == 2 and f"{plan}: primary[0].a: a mamse method needs its alpha" in err
