"""``birads-calc compare`` compares only comparable runs: grouping by method and seed, refusals naming every
differing setting, runs left out and why, ``--allow_mismatch``, and a whole alpha sweep in one folder."""

import json
import os
from pathlib import Path

import pytest
from compare_helpers import make_lesions, predicted, write_run

from birads_calc.cli import main


def compare(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["compare", *args, "--wandb", "false", "--resamples", "200"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_refuses_pooling_runs_of_one_method_that_differ_in_recipe_data_or_code(tmp_path, capsys):
    runs = tmp_path / "runs" / "mc"
    write_run(runs / "version_0", "ce", False, None, 0)
    write_run(runs / "version_3", "ce", False, None, 1, identity={"recipe": {"max_epochs": 50, "backbone": "resnet18"}})
    write_run(
        runs / "version_4",
        "ce",
        False,
        None,
        2,
        identity={"data": {"split_sha256": "dd" * 32}, "code": {"git_commit": "f" * 40}},
    )
    code, out, err = compare(capsys, str(runs), "--out", str(tmp_path / "cmp"))
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"MC: recipe.max_epochs: 10 ({runs / 'version_0'}, {runs / 'version_4'}) vs 50 ({runs / 'version_3'})" in err
    assert f"recipe.backbone: test_resnet ({runs / 'version_0'}, {runs / 'version_4'}) vs resnet18" in err
    assert f"data.split_sha256: bbbbbbbbbbbb ({runs / 'version_0'}, {runs / 'version_3'}) vs dddddddddddd" in err
    assert "code.git_commit: 0123456789ab" in err and "ffffffffffff" in err
    assert "--allow_mismatch" in err and not (tmp_path / "cmp").exists()


def test_refuses_pairing_methods_whose_test_labels_or_recipe_differ(tmp_path, capsys):
    runs = tmp_path / "runs"
    lesions = make_lesions()
    relabelled = [dict(x, true=(x["true"] + 1) % 6) for x in lesions]  # same patients, other labels
    for seed in (0, 1):
        write_run(runs / "mse" / f"seed_{seed}", "mse", False, None, seed, lesions, predicted(lesions, 1, seed))
        write_run(
            runs / "mc" / f"seed_{seed}",
            "ce",
            False,
            None,
            seed,
            relabelled,
            predicted(lesions, 1, seed),
            identity={"data": {"test_set_sha256": "ee" * 32}, "recipe": {"optimizer": "torch.optim.SGD(lr=0.1)"}},
        )
    code, _, err = compare(capsys, str(runs / "mse"), str(runs / "mc"), "--out", str(tmp_path / "cmp"))
    assert code == 2
    assert "between methods: data.test_set_sha256: eeeeeeeeeeee" in err and "cccccccccccc" in err
    assert "between methods: recipe.optimizer: torch.optim.SGD(lr=0.1)" in err
    assert str(runs / "mc" / "seed_0") in err and str(runs / "mse" / "seed_1") in err

    # compared anyway, the differences are listed under the table and in compare.json; the predictions differ in
    # their labels, so the two methods are not paired (a paired difference would compare different truths)
    code, out, _ = compare(
        capsys, str(runs / "mse"), str(runs / "mc"), "--out", str(tmp_path / "cmp"), "--allow_mismatch", "true"
    )
    assert code == 0
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert any(line.startswith("between methods: data.test_set_sha256") for line in report["mismatches"])
    assert report["paired"] == []
    assert report["not_paired"] == [
        {"a": "MSE", "b": "MC", "reason": "their predictions.csv hold different test lesions, labels or pathology"}
    ]
    assert "Differences between the runs" in out and "recipe.optimizer" in out


def test_runs_without_an_identity_are_refused_with_what_to_do(tmp_path, capsys):
    old = write_run(tmp_path / "runs" / "mse" / "version_0", "mse", False, None, 0, identity=None)
    write_run(tmp_path / "runs" / "mse" / "version_1", "mse", False, None, 1)
    code, _, err = compare(capsys, str(tmp_path / "runs" / "mse"), "--out", str(tmp_path / "cmp"))
    assert code == 2
    assert f"{old}: no run identity in metrics.json" in err and "re-run 'birads-calc test'" in err


def test_a_different_code_version_between_methods_is_listed_not_refused(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs / "mse" / "seed_0", "mse", False, None, 0)
    write_run(runs / "mc" / "seed_0", "ce", False, None, 0, identity={"code": {"version": "0.2.0"}})
    code, out, _ = compare(capsys, str(runs / "mse"), str(runs / "mc"), "--out", str(tmp_path / "cmp"))
    assert code == 0
    assert (
        f"between methods: code.version: 0.2.0 ({runs / 'mc' / 'seed_0'}) vs 0.1.0 ({runs / 'mse' / 'seed_0'})" in out
    )


def test_newest_run_per_method_and_seed_is_kept_and_every_other_run_is_listed(tmp_path, capsys):
    config = tmp_path / "runs" / "mse"
    write_run(config / "version_2", "mse", False, None, 0, values=(0.1, 0.1, 0.1))
    write_run(config / "version_10", "mse", False, None, 0, values=(0.6877, 0.15, 0.03))  # newer than version_2
    write_run(config / "version_11", "mse", False, None, 1, values=(0.7, 0.15, 0.03))
    (config / "version_12" / "checkpoints").mkdir(parents=True)  # training, not tested yet
    (config / "compare").mkdir()  # a comparison's output folder is no run
    code, out, _ = compare(capsys, str(config), "--out", str(tmp_path / "cmp"))
    assert code == 0
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    (method,) = report["methods"]
    assert method["seeds"] == [0, 1] and method["runs"] == [str(config / "version_10"), str(config / "version_11")]
    assert method["metrics"]["qwk"]["mean"] == pytest.approx((0.6877 + 0.7) / 2)
    left = {x["run"]: x["reason"] for x in report["left_out"]}
    assert set(left) == {str(config / "version_2"), str(config / "version_12")}
    assert (
        "older run of MSE seed 0" in left[str(config / "version_2")]
        and str(config / "version_10") in left[str(config / "version_2")]
    )
    assert "no metrics.json" in left[str(config / "version_12")]
    assert f"- {config / 'version_2'}: " in out  # listed under the printed table too


def test_a_folder_holding_the_whole_alpha_sweep_compares_as_its_seven_alphas(tmp_path, capsys):
    # `wandb agent` runs `fit --config configs/proposed.yaml --model.alpha A --seed_everything S`: all 21 runs land in
    # runs/proposed/version_0..20, one method (MAMSE + attention ROI) with seven alphas
    folder = tmp_path / "runs" / "proposed"
    lesions = make_lesions(patients=10)
    alphas = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
    version = 0
    for alpha in alphas:
        for seed in (0, 1, 2):
            noise = 0.6 + abs(alpha - 0.3)  # best around 0.3, as the paper's Fig. 3
            write_run(
                folder / f"version_{version}",
                "mamse",
                True,
                alpha,
                seed,
                lesions,
                predicted(lesions, noise, 100 * version),
            )
            version += 1
    os.utime(folder / "version_0" / "metrics.json", (1, 1))  # version order wins over file times
    code, out, _ = compare(capsys, str(folder), "--out", str(tmp_path / "fig3"))
    assert code == 0
    report = json.loads((tmp_path / "fig3" / "compare.json").read_text())
    assert [m["alpha"] for m in report["methods"]] == alphas
    assert all(m["n_runs"] == 3 and m["seeds"] == [0, 1, 2] for m in report["methods"])
    assert report["methods"][0]["label"] == "MAMSE + attention ROI (alpha=0.05)"
    assert len(report["paired"]) == 21 * 3 and {p["family"] for p in report["paired"]} == {"exploratory"}
    assert [p["compared"] for p in report["primary"]] == [False, False, False] and report["left_out"] == []
    assert (tmp_path / "fig3" / "alpha.png").stat().st_size > 0
    rows = [line for line in out.splitlines() if "| 3 (0, 1, 2) |" in line]
    assert [row.split(" | ")[0] for row in rows] == [f"| MAMSE + attention ROI (alpha={a:g})" for a in alphas]


def test_a_run_folder_given_twice_counts_once(tmp_path, capsys):
    run = write_run(tmp_path / "runs" / "mse" / "version_0", "mse", False, None, 0)
    code, _, _ = compare(
        capsys, str(run), str(run / "metrics.json"), str(Path(run).parent), "--out", str(tmp_path / "cmp")
    )
    assert code == 0
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert report["methods"][0]["n_runs"] == 1 and report["left_out"] == []
