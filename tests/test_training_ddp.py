"""A 2-process CPU DDP `fit` + `test` (gloo) through the real CLI; its reports equal a single-process test."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from ddp_ports import ddp_subprocess_env
from factories import make_tiny_dataset
from training_helpers import TINY_OVERRIDES, single_torch_thread  # noqa: F401 (autouse)

from birads_calc.cli import main

ROOT = Path(__file__).resolve().parents[1]
DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
       "--trainer.precision", "32", "--trainer.logger", "false"]  # fmt: skip


def birads_calc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python -m birads_calc`` in a fresh process: Lightning's DDP launcher re-runs that command per rank."""
    env = ddp_subprocess_env(PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "birads_calc", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def read_rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.ddp
def test_two_process_fit_and_test_match_a_single_process(tmp_path):
    manifest = make_tiny_dataset(tmp_path / "data", patients=15, size=128)
    config = str(ROOT / "configs" / "proposed.yaml")
    common = ["--config", config, "--data.manifest", str(manifest), "--runs_root", str(tmp_path / "runs"),
              *TINY_OVERRIDES, *DDP]  # fmt: skip
    done = birads_calc("fit", *common, cwd=tmp_path)
    assert "MEMBER: 2/2" in done.stdout + done.stderr  # Lightning really started a second process
    run_dir = tmp_path / "runs" / "proposed" / "version_0"
    assert not (tmp_path / "runs" / "proposed" / "version_1").exists()  # both ranks wrote into one run folder
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file() and (run_dir / "splits.csv").is_file()

    done = birads_calc("test", *common, cwd=tmp_path)
    assert f"using the newest last checkpoint of config 'proposed': {last}" in done.stderr
    ddp_report = json.loads((run_dir / "metrics.json").read_text())
    ddp_rows = read_rows(run_dir / "predictions.csv")

    single_dir = tmp_path / "single"
    main(["test", "--config", config, "--data.manifest", str(manifest), "--runs_root", str(tmp_path / "runs"),
          *TINY_OVERRIDES, "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
          "--trainer.precision", "32", "--trainer.logger", "false", "--ckpt_path", str(last),
          "--run_dir", str(single_dir)])  # fmt: skip
    single_report = json.loads((single_dir / "metrics.json").read_text())
    single_rows = read_rows(single_dir / "predictions.csv")

    # every test lesion exactly once, although the DDP sampler pads the two shards to equal length
    assert len({r["lesion_id"] for r in ddp_rows}) == len(ddp_rows) == len(single_rows) == ddp_report["n_lesions"]
    key = {r["lesion_id"]: r for r in single_rows}
    for row in ddp_rows:
        other = key[row["lesion_id"]]
        assert row["birads_pred"] == other["birads_pred"] and row["birads_true"] == other["birads_true"]
        assert float(row["risk"]) == pytest.approx(float(other["risk"]), abs=1e-5)
    assert ddp_report["metrics"] == single_report["metrics"]
    assert ddp_report["confusion_matrix"] == single_report["confusion_matrix"]
