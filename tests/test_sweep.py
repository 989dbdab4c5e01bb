"""configs/alpha/sweep.yaml: a W&B grid over alpha x seed whose agent command the birads-calc CLI accepts."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from birads_calc.cli import main

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "configs" / "alpha" / "sweep.yaml"


def test_sweep_grid_covers_fig3_alphas_and_three_seeds():
    cfg = yaml.safe_load(SWEEP.read_text())
    assert cfg["method"] == "grid" and cfg["metric"] == {"name": "val_qwk", "goal": "maximize"}
    alphas = sorted(float(p.stem.split("_")[1]) for p in (ROOT / "configs" / "alpha").glob("alpha_*.yaml"))
    assert cfg["parameters"]["model.alpha"]["values"] == alphas
    assert len(cfg["parameters"]["seed_everything"]["values"]) >= 3
    # the packaged config by name: the agent's machine needs birads-calc installed, not a clone
    assert cfg["command"][-1] == "${args}" and cfg["command"][cfg["command"].index("--config") + 1] == "proposed"


def test_wandb_accepts_the_sweep_config():
    sweeps = pytest.importorskip(
        "sweeps", reason="W&B's sweep validator: pip install 'birads-calc[sweeps]' (make install does)"
    )
    from wandb.sdk.launch.sweeps.utils import load_sweep_config

    cfg = load_sweep_config(str(SWEEP))
    assert sweeps.schema_violations_from_proposed_config(cfg) == []


def test_agent_command_parses_with_the_cli(capsys, tmp_path, monkeypatch):
    """The agent replaces ${args} with ``--name=value`` per parameter; the CLI must take them as written, from any
    folder (here an empty one)."""
    monkeypatch.chdir(tmp_path)
    cfg = yaml.safe_load(SWEEP.read_text())
    values = {name: spec["values"] for name, spec in cfg["parameters"].items()}
    point = dict(zip(values, next(itertools.islice(itertools.product(*values.values()), 10, None)), strict=True))
    command = [word for word in cfg["command"] if word not in ("${env}", "${args}")]
    assert command[0] == "birads-calc"
    args = command[1:]
    args += [f"--{name}={value}" for name, value in point.items()]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["alpha"] == point["model.alpha"]
    assert printed["seed_everything"] == point["seed_everything"]


@pytest.mark.slow
def test_an_agent_run_trains_and_tests_into_the_agents_wandb_run(tmp_path):
    """What ``wandb agent`` does for one grid point, without a W&B server: it sets the run and sweep ids in the
    environment and runs the sweep's command with ``${args}`` filled in. Fit and test must both land in that run,
    with the test metrics and their CIs in its summary. The CPU overlay keeps W&B logging on."""
    from factories import make_tiny_dataset
    from training_helpers import TINY_OVERRIDES, read_wandb_records

    manifest = make_tiny_dataset(tmp_path / "data", patients=10, size=96)
    cfg = yaml.safe_load(SWEEP.read_text())
    command = [word for word in cfg["command"] if word not in ("${env}", "${args}")]
    args = [*command[1:], "--config", "demo", "--model.alpha=0.3", "--seed_everything=1"]
    # the agent starts the command as a process of its own, in its folder, with the run's ids in the environment
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_RUN_ID": "agent0001", "WANDB_SWEEP_ID": "sweep0001",
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # fmt: skip
    line = [sys.executable, "-m", "birads_calc", *args, "--data.manifest", str(manifest), *TINY_OVERRIDES]
    done = subprocess.run(line, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "proposed").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["alpha"] == 0.3  # tested after the fit
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2  # fit and test: two sessions of the agent's one run
    summary = {}
    for path in files:
        records = read_wandb_records(path)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        assert (run.run_id, run.sweep_id) == ("agent0001", "sweep0001")
        for record in records:
            if record.WhichOneof("record_type") == "summary":
                summary |= {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.summary.update}  # fmt: skip
    assert {"test/qwk", "test/qwk_ci_low", "test/qwk_ci_high"} <= summary.keys()
