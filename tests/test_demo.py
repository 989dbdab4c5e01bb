"""The CPU overlay configs/demo.yaml (`make demo`, `make reproduce`) and the pipeline of bench/reproduce.py."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from factories import make_tiny_dataset
from jsonargparse import Namespace
from training_helpers import TINY_OVERRIDES, single_torch_thread  # noqa: F401 (autouse)

from birads_calc.cli import main
from birads_calc.cli.trainer import cpu_fallback

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
OVERLAY = CONFIGS / "demo.yaml"
COMPARISONS = CONFIGS / "comparisons.yaml"  # compare's primary comparisons, not a training config
PAPER_CONFIGS = sorted(
    p for p in [*CONFIGS.glob("*.yaml"), *CONFIGS.glob("alpha/alpha_*.yaml")] if p not in (OVERLAY, COMPARISONS)
)
# What the overlay may change: scale, hardware, logging, and the from-scratch optimizer (docs/reproduction.md).
SIZE_KEYS = {
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
    "trainer.num_nodes",
    "trainer.precision",
    "trainer.max_epochs",
    "trainer.logger",
    "model.backbone",
    "model.pretrained",
    "model.optimizer",
    "model.lr_scheduler",
    "data.manifest",
    "data.window",
    "data.stride",
    "data.batch_size",
    "data.num_workers",
}
# What makes a Table 3 row or a Fig. 3 point: never touched by the overlay.
ROW_KEYS = {"model.loss", "model.alpha", "data.attention"}


def load_reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "bench" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def printed_config(capsys, *configs: Path) -> dict:
    args = ["fit"]
    for config in configs:
        args += ["--config", str(config)]
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exit_info:
        patch.setattr("torch.cuda.is_available", lambda: True)  # the configs as written (no CPU fallback)
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and "class_path" not in value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value  # a class (logger, optimizer) is one setting: its class and arguments
    return out


def test_demo_config_is_cpu_only_small_and_offline(capsys):
    cfg = printed_config(capsys, CONFIGS / "proposed.yaml", OVERLAY)
    trainer, model, data = cfg["trainer"], cfg["model"], cfg["data"]
    assert (trainer["accelerator"], trainer["devices"], trainer["strategy"]) == ("cpu", 1, "auto")
    assert trainer["precision"] == "32-true"
    # W&B (offline unless the user is logged in: nothing needs the network) and metrics.csv in the run folder
    assert [logger["class_path"].rsplit(".", 1)[-1] for logger in trainer["logger"]] == ["WandbLogger", "CSVLogger"]
    assert model["pretrained"] is False  # no ImageNet download
    assert trainer["devices"] * trainer["num_nodes"] * data["batch_size"] == 32  # the paper's global batch
    assert data["manifest"] == "data/demo/manifest.csv" and data["window"] <= 160
    # Even where a GPU exists the demo stays on the CPU exactly as configured: the fallback has nothing to change.
    trainer_ns = Namespace(**{k: trainer[k] for k in ("accelerator", "devices", "num_nodes", "precision")})
    trainer_ns.strategy, trainer_ns.accumulate_grad_batches = trainer["strategy"], 1
    assert cpu_fallback(trainer_ns, cuda_available=True) == []
    assert cpu_fallback(trainer_ns, cuda_available=False) == []


def test_overlay_changes_every_paper_config_only_in_the_keys_it_states(capsys):
    stated = flatten(yaml.safe_load(OVERLAY.read_text()))
    assert set(stated) <= SIZE_KEYS and not set(stated) & ROW_KEYS
    assert len(PAPER_CONFIGS) == 13  # the six Table 3 rows and the seven alpha values
    for config in PAPER_CONFIGS:
        paper = flatten(printed_config(capsys, config))
        demo = flatten(printed_config(capsys, config, OVERLAY))
        changed = {key for key in paper.keys() | demo.keys() if paper.get(key) != demo.get(key)}
        assert changed <= set(stated), (config.name, changed - set(stated))
        for key, value in stated.items():
            if isinstance(value, list):  # a list of classes (the loggers): the stated classes and arguments
                assert [v["class_path"] for v in value] == [d["class_path"] for d in demo[key]], (config.name, key)
                for mine, printed in zip(value, demo[key], strict=True):
                    assert mine["init_args"].items() <= printed["init_args"].items(), (config.name, key)
            elif isinstance(value, dict):  # a class: the stated class with the stated arguments
                assert demo[key]["class_path"] == value["class_path"], (config.name, key)
                assert value.get("init_args", {}).items() <= demo[key]["init_args"].items(), (config.name, key)
            else:
                assert demo[key] == value, (config.name, key)
        assert {k: demo[k] for k in ROW_KEYS} == {k: paper[k] for k in ROW_KEYS}, config.name


@pytest.mark.slow
def test_reproduce_pipeline_runs_table_and_sweep_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the commands name configs/ relative to the repository, as `make reproduce` runs them
    reproduce = load_reproduce()
    manifest = make_tiny_dataset(tmp_path / "data", patients=20, lesions_per_image=3, size=128)  # benign in test

    def in_process(args: list[str], env: dict[str, str]) -> None:
        assert main(args) in (0, None), args

    methods = ("mc", "proposed", "alpha/alpha_0.5")
    kwargs = dict(manifest=manifest, runs=tmp_path / "runs", figures=tmp_path / "figures", methods=methods)
    summary = reproduce.reproduce(seeds=(0, 1), jobs=1, extra=TINY_OVERRIDES, runner=in_process, **kwargs)

    runs = tmp_path / "runs"
    assert set(summary["run_seconds"]) == {f"{m}/seed_{s}" for m in ("mc", "proposed", "alpha_0.5") for s in (0, 1)}
    for name, loss, attention in (("mc", "ce", False), ("proposed", "mamse", True), ("alpha_0.5", "mamse", True)):
        for seed in (0, 1):
            run = runs / name / f"seed_{seed}"
            config = yaml.safe_load((run / "config.yaml").read_text())
            assert (config["model"]["loss"], config["data"]["attention"]) == (loss, attention)  # the row survives
            assert config["trainer"]["accelerator"] == "cpu" and config["seed_everything"] == seed  # overlay, seed
            report = json.loads((run / "metrics.json").read_text())
            assert report["metrics"]["qwk"]["value"] is not None and report["seed"] == seed
            assert report["checkpoint_selection"] == "given" and report["checkpoint"].endswith("last.ckpt")
            assert "val_qwk" in (run / "metrics.csv").read_text()  # the training curve outlives `test`
    table = (runs / "compare" / "table3" / "table.md").read_text()
    assert "| MC | 2 (0, 1) |" in table and "MAMSE + attention ROI" in table and "alpha=0.5" not in table
    paired = json.loads((runs / "compare" / "table3" / "compare.json").read_text())["paired"]
    assert {(p["a"], p["b"], p["seeds"] == [0, 1]) for p in paired} == {("MAMSE + attention ROI", "MC", True)}
    sweep = (runs / "compare" / "fig3" / "table.md").read_text()
    assert "alpha=0.2" in sweep and "alpha=0.5" in sweep and "| MC |" not in sweep
    assert (tmp_path / "figures" / "reproduce_table3.png").stat().st_size > 0
    assert (tmp_path / "figures" / "reproduce_fig3.png").stat().st_size > 0
    assert json.loads((runs / "summary.json").read_text())["run_seconds"] == summary["run_seconds"]

    calls = []
    again = reproduce.reproduce(seeds=(0, 1), jobs=1, extra=TINY_OVERRIDES, runner=lambda a, e: calls.append(a[0]),
                                **kwargs)  # fmt: skip
    assert calls == ["compare", "compare"]  # finished runs are kept, not trained again
    assert set(again["run_seconds"].values()) == {0}


def test_a_cpu_overlay_run_ends_with_the_learning_rate_annealed(tmp_path):
    # the last-epoch model is what test reports: the schedule must have brought the rate down by then
    manifest = make_tiny_dataset(tmp_path / "data", patients=8, size=96)
    args = ["fit", "--config", "proposed", "--config", "demo", "--data.manifest", str(manifest), "--runs_root",
            str(tmp_path / "runs"), "--data.window", "64", "--data.stride", "32", "--data.batch_size", "4",
            "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    assert main(args) == 0
    (last,) = (tmp_path / "runs" / "proposed").glob("*/checkpoints/last.ckpt")
    saved = torch.load(last, weights_only=True, map_location="cpu")
    start = saved["lr_schedulers"][0]["base_lrs"][0]
    assert start == 0.001 and saved["global_step"] == 6
    assert saved["lr_schedulers"][0]["_last_lr"][0] <= 0.01 * start
