"""`birads-calc fit` / `test` through the real CLI and configs on tiny generated data (CPU), plus the run plumbing."""

import csv
import json
import math
import os
import time
from pathlib import Path

import pytest
import yaml
from factories import make_tiny_dataset
from jsonargparse import Namespace
from sklearn.metrics import cohen_kappa_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from training_helpers import TINY_OVERRIDES, read_wandb_records, single_torch_thread  # noqa: F401 (autouse)

from birads_calc.categories import SIX_CLASS, risk_to_class
from birads_calc.cli import main
from birads_calc.cli.trainer import cpu_fallback
from birads_calc.data.datamodule import BiradsDataModule
from birads_calc.runs import RUN_DIR_ENV, RunFolderError, config_name, newest_best_checkpoint, resolve_run_dir
from birads_calc.training import model as model_module

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
# Table 3 rows: config -> (loss, attention, alpha written to metrics.json)
TABLE3 = {
    "mc": ("ce", False, None),
    "mse": ("mse", False, None),
    "mamse": ("mamse", False, 0.2),
    "mc_attention": ("ce", True, None),
    "mse_attention": ("mse", True, None),
    "proposed": ("mamse", True, 0.2),
}
METHODS = {
    "mc": "MC",
    "mse": "MSE",
    "mamse": "MAMSE",
    "mc_attention": "MC + attention ROI",
    "mse_attention": "MSE + attention ROI",
    "proposed": "MAMSE + attention ROI",
}
ALPHAS = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data", patients=10, size=128)


def cli(command: str, config: Path, manifest: Path, runs: Path, *extra: str) -> int:
    base = [command, "--config", str(config), "--data.manifest", str(manifest), "--runs_root", str(runs)]
    return main([*base, *TINY_OVERRIDES, *extra])


def printed_config(config: Path, capsys, gpu: bool = True, *extra: str) -> dict:
    """``fit --print_config`` as a machine with (``gpu``) or without a GPU prints it."""
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exit_info:
        patch.setattr("torch.cuda.is_available", lambda: gpu)
        main(["fit", "--config", str(config), *extra, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_print_config_shows_what_the_run_will_use(capsys, monkeypatch):
    monkeypatch.setenv("BIRADS_CALC_CPU_PRECISION", "32-true")
    cfg = printed_config(CONFIGS_DIR / "proposed.yaml", capsys, False)
    trainer = cfg["trainer"]
    assert (trainer["accelerator"], trainer["devices"], trainer["strategy"]) == ("cpu", 1, "auto")
    assert (trainer["precision"], trainer["accumulate_grad_batches"]) == ("32-true", 2)  # the global batch kept
    wandb_init = trainer["logger"]["init_args"]
    assert (wandb_init["project"], wandb_init["group"], wandb_init["job_type"]) == (
        "birads-calc",
        "mamse_attention_alpha0.2",
        "train",
    )


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# --- configs ----------------------------------------------------------------------------------------------------------
def test_proposed_config_holds_the_paper_recipe(capsys):
    cfg = printed_config(CONFIGS_DIR / "proposed.yaml", capsys)
    model, data, trainer = cfg["model"], cfg["data"], cfg["trainer"]
    assert (model["backbone"], model["pretrained"], model["loss"], model["alpha"]) == (
        "resnet18.tv_in1k",
        True,
        "mamse",
        0.2,
    )
    assert model["optimizer"]["class_path"] == "torch.optim.SGD"
    assert model["optimizer"]["init_args"]["lr"] == 0.001 and model["optimizer"]["init_args"]["momentum"] == 0.99
    assert model["lr_scheduler"]["class_path"] == "torch.optim.lr_scheduler.StepLR"
    assert (model["lr_scheduler"]["init_args"]["step_size"], model["lr_scheduler"]["init_args"]["gamma"]) == (10, 0.3)
    assert trainer["max_epochs"] == 50 and trainer["precision"] == "16-mixed" and trainer["strategy"] == "ddp"
    assert trainer["devices"] * trainer["num_nodes"] * data["batch_size"] == 32  # the paper's global batch
    assert trainer["logger"]["class_path"].endswith("WandbLogger")
    assert trainer["logger"]["init_args"]["project"] == "birads-calc"
    assert (data["window"], data["stride"], data["attention"], data["balanced_sampling"]) == (400, 100, True, True)
    assert cfg["checkpoint"]["monitor"] == "val_qwk" and cfg["checkpoint"]["mode"] == "max"


def test_table3_and_alpha_configs_differ_from_proposed_only_in_their_row(capsys):
    proposed = flatten(printed_config(CONFIGS_DIR / "proposed.yaml", capsys))
    for name, (loss, attention, _) in TABLE3.items():
        cfg = flatten(printed_config(CONFIGS_DIR / f"{name}.yaml", capsys))
        changed = {k for k in proposed if cfg[k] != proposed[k]}
        assert changed <= {"model.loss", "data.attention", "trainer.logger.init_args.group"}, name
        assert (cfg["model.loss"], cfg["data.attention"]) == (loss, attention)
    for alpha in ALPHAS:
        cfg = flatten(printed_config(CONFIGS_DIR / "alpha" / f"alpha_{alpha}.yaml", capsys))
        assert {k for k in proposed if cfg[k] != proposed[k]} <= {"model.alpha", "trainer.logger.init_args.group"}
        assert cfg["model.alpha"] == alpha


# --- fit + test for every Table 3 row ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", list(TABLE3))
def test_fit_then_test_writes_the_run_folder(name, manifest, tmp_path, capsys):
    loss, attention, alpha = TABLE3[name]
    runs = tmp_path / "runs"
    cli("fit", CONFIGS_DIR / f"{name}.yaml", manifest, runs, "--trainer.logger", "false")
    run_dir = runs / name / "version_0"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (saved["model"]["loss"], saved["data"]["attention"]) == (loss, attention)
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    fit_err = capsys.readouterr().err
    assert "no GPU found: trainer.accelerator gpu -> cpu" in fit_err
    assert "trainer.accumulate_grad_batches 1 -> 2" in fit_err and "16-mixed -> 32-true" in fit_err

    cli("test", CONFIGS_DIR / f"{name}.yaml", manifest, runs, "--trainer.logger", "false")
    last = run_dir / "checkpoints" / "last.ckpt"  # paper §3.2: the model after the last epoch is reported
    assert f"test: using the newest last checkpoint of config '{name}': {last}" in capsys.readouterr().err
    report = json.loads((run_dir / "metrics.json").read_text())
    with (run_dir / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))

    dm = BiradsDataModule(manifest=manifest, window=64, stride=32, num_workers=0)
    dm.setup("test")
    test_lesions = [dm.lesions[i] for i in dm.splits["test"]]
    assert sorted(r["lesion_id"] for r in rows) == sorted(x.lesion_id for x in test_lesions)  # each lesion once
    assert report["config"] == name and report["method"] == METHODS[name]
    assert (report["loss"], report["attention"], report["alpha"]) == (loss, attention, alpha)
    assert report["classes"] == list(SIX_CLASS) and report["checkpoint"] == str(last)
    assert (report["checkpoint_selection"], report["checkpoint_epochs"], report["seed"]) == ("last", 1, 0)
    assert report["n_lesions"] == len(rows) and report["n_patients"] == len({r["patient_id"] for r in rows})
    assert report["bootstrap"] == {"resamples": 200, "unit": "patient", "level": 0.95, "seed": 0}

    truth = [SIX_CLASS.index(r["birads_true"]) for r in rows]
    pred = [SIX_CLASS.index(r["birads_pred"]) for r in rows]
    assert report["confusion_matrix"] == sk_confusion_matrix(truth, pred, labels=range(6)).tolist()
    qwk = report["metrics"]["qwk"]
    expected = cohen_kappa_score(truth, pred, weights="quadratic", labels=list(range(6)))
    assert (qwk["value"] is None and math.isnan(expected)) or qwk["value"] == pytest.approx(expected, abs=1e-9)
    assert qwk["n"] == len(rows)
    assert report["metrics"]["maqwk_m"]["n"] == sum(r["pathology"] == "malignant" for r in rows)
    assert report["metrics"]["maqwk_b"]["n"] == sum(r["pathology"] == "benign" for r in rows)
    risks = [float(r["risk"]) for r in rows]
    assert all(0 <= r <= 1 for r in risks)
    if loss != "ce":  # regression: the class is the risk's segment (DESIGN §2)
        assert pred == risk_to_class(risks).tolist()


@pytest.mark.slow
def test_one_wandb_run_per_run_folder_holds_config_learning_rate_and_test_cis(manifest, tmp_path):
    runs = tmp_path / "runs"
    every_step = ("--trainer.log_every_n_steps", "1")
    assert cli("fit", CONFIGS_DIR / "proposed.yaml", manifest, runs, *every_step) == 0  # its WandbLogger, offline
    assert cli("fit", CONFIGS_DIR / "proposed.yaml", manifest, runs, *every_step, "--ckpt_path", "last") == 0
    assert cli("test", CONFIGS_DIR / "proposed.yaml", manifest, runs) == 0
    run_dir = runs / "proposed" / "version_0"
    offline = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 3  # fit, resumed fit, test: three sessions...
    runs_seen = [next(r.run for r in read_wandb_records(path) if r.WhichOneof("record_type") == "run")
                 for path in offline]  # fmt: skip
    assert len({run.run_id for run in runs_seen}) == 1  # ...of one W&B run, whose id the folder keeps
    assert runs_seen[0].run_id == (run_dir / ".wandb_id").read_text().strip()
    first = runs_seen[0]
    assert first.project == "birads-calc" and first.run_group == "mamse_attention_alpha0.2"
    assert first.job_type == "train" and "/seed0" in first.display_name
    config = {item.key: json.loads(item.value_json) for item in first.config.update}
    assert (config["loss"], config["attention"], config["alpha"]) == ("mamse", True, 0.2)
    assert config["method"] == "MAMSE + attention ROI" and config["config"] == "proposed" and config["seed"] == 0
    # the full resolved configuration: optimizer, scheduler, trainer, data, and the recipe
    assert config["model"]["optimizer"]["class_path"] == "torch.optim.SGD"
    assert config["model"]["lr_scheduler"]["class_path"] == "torch.optim.lr_scheduler.StepLR"
    assert config["trainer"]["max_epochs"] == 1 and config["data"]["window"] == 64
    assert config["recipe"]["global_batch"] == 8 and config["recipe"]["max_epochs"] == 1
    history = [item for path in offline for r in read_wandb_records(path) if r.WhichOneof("record_type") == "history"
               for item in r.history.item]  # fmt: skip
    key = {id(item): item.key or "/".join(item.nested_key) for item in history}  # wandb writes either
    learning_rates = [json.loads(item.value_json) for item in history if key[id(item)].startswith("lr-")]
    assert learning_rates and learning_rates[0] == pytest.approx(0.001)  # the learning-rate curve
    phases = [json.loads(item.value_json) for item in history if key[id(item)] == "phase"]
    assert phases == ["fit", "fit", "test"]
    test_records = read_wandb_records(offline[-1])
    summary = {item.key: json.loads(item.value_json) for r in test_records if r.WhichOneof("record_type") == "summary"
               for item in r.summary.update}  # fmt: skip
    report = json.loads((run_dir / "metrics.json").read_text())
    for name in ("qwk", "maqwk_m", "maqwk_b"):
        for key in ("ci_low", "ci_high", "n"):
            assert summary[f"test/{name}_{key}"] == report["metrics"][name][key]
    table = json.loads(next(offline[-1].parent.glob("files/media/table/test/predictions_*.table.json")).read_text())
    assert len(table["data"]) == report["n_lesions"] and "birads_pred" in table["columns"]


@pytest.mark.slow
def test_a_resumed_fit_keeps_the_csv_curve_of_the_epochs_before_it(manifest, tmp_path):
    """Lightning's CSV writer deletes metrics.csv when it starts; the demo overlay logs there, and a resumed fit
    must not lose the epochs before its checkpoint (nothing lost silently)."""
    runs = tmp_path / "runs"
    fit = ["fit", "--config", str(CONFIGS_DIR / "proposed.yaml"), "--config", str(CONFIGS_DIR / "demo.yaml"),
           "--data.manifest", str(manifest), "--runs_root", str(runs), *TINY_OVERRIDES, "--trainer.max_epochs", "2",
           "--trainer.log_every_n_steps", "1"]  # fmt: skip
    assert main(fit) == 0
    metrics = runs / "proposed" / "version_0" / "metrics.csv"
    with metrics.open(newline="") as file:
        before = list(csv.DictReader(file))
    assert {row["epoch"] for row in before if row.get("val_qwk")} == {"0", "1"}
    assert main([*fit, "--ckpt_path", "last"]) == 0  # resumed at its last epoch: nothing more to train
    with metrics.open(newline="") as file:
        after = list(csv.DictReader(file))
    assert after == before  # every training step and validation epoch before the checkpoint is still there
    assert len(after) >= len(before) - 1  # at most the checkpoint's own step is left to be logged again


@pytest.mark.slow
def test_nobody_logged_in_the_run_logs_offline_instead_of_asking_for_a_key(manifest, tmp_path):
    """A researcher's first ``fit`` without ``wandb login`` and without WANDB_MODE: the run goes on, offline, in its
    folder. W&B reads WANDB_MODE once, when the login check sets it up, so it has to be told offline at init.
    A process of its own: under pytest W&B is already set up offline (conftest)."""
    import subprocess
    import sys

    home = tmp_path / "home"  # no ~/.netrc, no W&B settings
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    env |= {"HOME": str(home), "WANDB_BASE_URL": "http://127.0.0.1:9", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "WANDB_CONSOLE": "off"}  # fmt: skip
    line = [sys.executable, "-m", "birads_calc", "fit", "--config", str(CONFIGS_DIR / "proposed.yaml"),
            "--data.manifest", str(manifest), "--run_dir", str(tmp_path / "run"), *TINY_OVERRIDES]  # fmt: skip
    done = subprocess.run(line, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "W&B: not logged in, logging offline" in done.stderr and "API key" not in done.stderr
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    assert offline.stat().st_size > 0


# --- errors the user can fix ---------------------------------------------------------------------------------------
def test_test_without_a_checkpoint_says_what_to_do(manifest, tmp_path, capsys):
    assert cli("test", CONFIGS_DIR / "mse.yaml", manifest, tmp_path / "runs") == 2
    err = capsys.readouterr().err
    assert "no last checkpoint of config 'mse'" in err and "birads-calc fit --config mse" in err
    assert len(err.strip().splitlines()) <= 3  # a few lines, not the usage


def test_a_bare_test_names_the_runs_it_found(manifest, tmp_path, capsys):
    runs = tmp_path / "runs"
    for version in ("version_0", "version_1"):
        (runs / "mc" / version / "checkpoints").mkdir(parents=True)
        (runs / "mc" / version / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert main(["test", "--data.manifest", str(manifest), "--runs_root", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "config 'default'" in err and "mc (2 run(s))" in err and "--config mc" in err
    assert len(err.strip().splitlines()) <= 3


def test_pretrained_offline_stops_the_cli_at_once(manifest, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(model_module, "_weights_host", lambda name: "weights.invalid")
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS_DIR / "proposed.yaml"), "--data.manifest", str(manifest),
              "--runs_root", str(tmp_path / "runs"), "--trainer.logger", "false"])  # fmt: skip
    assert exit_info.value.code == 2 and time.perf_counter() - start < 30
    err = capsys.readouterr().err
    assert "weights.invalid cannot be reached" in err and "HF_HOME" in err and "--model.weights_path" in err
    # the refused fit leaves no claimed-but-empty version folder: the next fit is version_0, not version_1
    assert not (tmp_path / "runs" / "proposed").exists() or not any((tmp_path / "runs" / "proposed").iterdir())


# --- plumbing ------------------------------------------------------------------------------------------------------
def test_cpu_fallback_changes_and_reports_each_setting():
    trainer = Namespace(accelerator="gpu", devices=2, strategy="ddp", precision="16-mixed", num_nodes=1,
                        accumulate_grad_batches=1)  # fmt: skip
    changes = cpu_fallback(trainer, cuda_available=False)
    assert changes == [
        "no GPU found: trainer.accelerator gpu -> cpu",
        "trainer.devices 2 -> 1 (one CPU process uses every core)",
        "trainer.strategy ddp -> auto",
        "trainer.accumulate_grad_batches 1 -> 2 (keeps the global batch of 2 x data.batch_size)",
        "trainer.precision 16-mixed -> 32-true (set by BIRADS_CALC_CPU_PRECISION; "  # tests/conftest.py
        "BIRADS_CALC_CPU_PRECISION=32-true|bf16-mixed or --trainer.precision decide instead)",
    ]
    assert (trainer.accelerator, trainer.devices, trainer.strategy, trainer.precision) == (
        "cpu", 1, "auto", "32-true")  # fmt: skip
    assert trainer.accumulate_grad_batches == 2
    gpu = Namespace(accelerator="gpu", devices=2, strategy="ddp", precision="16-mixed", num_nodes=1,
                    accumulate_grad_batches=1)  # fmt: skip
    assert cpu_fallback(gpu, cuda_available=True) == [] and gpu.devices == 2
    explicit_cpu_ddp = Namespace(accelerator="cpu", devices=2, strategy="ddp", precision="32", num_nodes=1,
                                 accumulate_grad_batches=1)  # fmt: skip
    assert cpu_fallback(explicit_cpu_ddp, cuda_available=False) == [] and explicit_cpu_ddp.devices == 2


def test_run_folders_versions_and_launchers(tmp_path):
    root = tmp_path / "runs"
    assert resolve_run_dir(root, "proposed", env={}) == (root / "proposed" / "version_0", True)
    (root / "proposed" / "version_0").mkdir(parents=True)
    (root / "proposed" / "version_7").mkdir()
    assert resolve_run_dir(root, "proposed", env={})[0] == root / "proposed" / "version_8"
    # processes started by rank 0's Lightning launcher inherit its choice
    assert resolve_run_dir(root, "p", env={"LOCAL_RANK": "1", RUN_DIR_ENV: "/x/version_3"})[0] == Path("/x/version_3")
    # srun / torchrun: every process derives the same name from the job
    slurm = {"SLURM_JOB_ID": "881", "SLURM_STEP_ID": "2", "SLURM_NTASKS": "8", "SLURM_PROCID": "5"}
    assert resolve_run_dir(root, "p", env=slurm)[0] == root / "p" / "slurm_881_2"
    assert resolve_run_dir(root, "p", env={"TORCHELASTIC_RUN_ID": "abc", "RANK": "3"})[0] == root / "p" / "torchrun_abc"
    with pytest.raises(RunFolderError, match="rank 3 cannot tell"):
        resolve_run_dir(root, "p", env={"TORCHELASTIC_RUN_ID": "none", "RANK": "3"})
    assert resolve_run_dir(root, "p", explicit=tmp_path / "mine", env={"RANK": "3"})[0] == tmp_path / "mine"
    assert config_name([Path("configs/base/paper.yaml"), Path("configs/alpha/alpha_0.3.yaml")]) == "alpha_0.3"


def test_newest_best_checkpoint_is_the_most_recent(tmp_path):
    root = tmp_path / "runs"
    with pytest.raises(RunFolderError, match="no best checkpoint of config 'mc'"):
        newest_best_checkpoint(root, "mc")
    older, newer = (root / "mc" / v / "checkpoints" / "best.ckpt" for v in ("version_9", "version_10"))
    for i, path in enumerate((older, newer)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        ns = 1_000_000_000_000 * (i + 1)
        os.utime(path, ns=(ns, ns))
    assert newest_best_checkpoint(root, "mc") == newer
