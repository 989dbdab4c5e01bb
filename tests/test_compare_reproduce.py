"""bench/reproduce.py records the settings beside the data and the runs it makes, and refuses to reuse a data folder
or a finished run made with other settings (issue 20: it reused them whatever --patients or --trainer.max_epochs
said). The commands are replaced by a recorder: these tests check the bookkeeping, not the training."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce_under_test", ROOT / "bench" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Recorder:
    """Stands in for ``birads-calc``: writes what each command would leave behind and records the calls."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str], env: dict[str, str]) -> None:
        self.calls.append(args)
        option = {args[k]: args[k + 1] for k in range(1, len(args) - 1) if args[k].startswith("--")}
        if args[0] == "synth":
            Path(option["--out"]).mkdir(parents=True, exist_ok=True)
            (Path(option["--out"]) / "manifest.csv").write_text("patient_id\n")
        elif args[0] == "fit":
            (Path(option["--run_dir"]) / "checkpoints").mkdir(parents=True, exist_ok=True)
        elif args[0] == "test":
            (Path(option["--run_dir"]) / "metrics.json").write_text("{}")
        elif args[0] == "compare":
            Path(option["--out"]).mkdir(parents=True, exist_ok=True)
            for png in ("table.png", "alpha.png"):
                (Path(option["--out"]) / png).write_bytes(b"png")

    def commands(self) -> list[str]:
        return [c[0] for c in self.calls]


def run(reproduce, tmp_path, recorder, **kwargs):
    options = dict(
        patients=40,
        seed=1,
        seeds=(0,),
        data=tmp_path / "data",
        runs=tmp_path / "runs",
        figures=tmp_path / "figures",
        methods=("mse", "proposed"),
        jobs=1,
        runner=recorder,
    )
    return reproduce.reproduce(**{**options, **kwargs})


def test_settings_are_recorded_and_a_rerun_with_the_same_settings_trains_nothing(reproduce, tmp_path):
    first = Recorder()
    run(reproduce, tmp_path, first, extra=["--trainer.max_epochs", "2"], split_ratios=(3, 1, 2))
    assert first.commands() == ["synth", "fit", "test", "fit", "test", "compare"]
    fit = next(c for c in first.calls if c[0] == "fit")
    assert fit[fit.index("--data.split_ratios") + 1] == "[3,1,2]" and "--trainer.max_epochs" in fit
    data = json.loads((tmp_path / "data" / "reproduce.json").read_text())
    assert (data["patients"], data["seed"], data["pathology"]) == (40, 1, "paper")
    record = json.loads((tmp_path / "runs" / "proposed" / "seed_0" / "reproduce.json").read_text())
    assert record["config"] == "proposed" and record["seed"] == 0 and record["data"] == data
    assert record["extra_arguments"] == ["--data.split_ratios", "[3,1,2]", "--trainer.max_epochs", "2"]

    again = Recorder()
    run(reproduce, tmp_path, again, extra=["--trainer.max_epochs", "2"], split_ratios=(3, 1, 2))
    assert again.commands() == ["compare"]  # the finished runs are this reproduction's: kept


def test_a_data_folder_made_with_other_settings_is_refused_before_anything_runs(reproduce, tmp_path):
    run(reproduce, tmp_path, Recorder())
    refused = Recorder()
    with pytest.raises(reproduce.ReproduceError) as error:
        run(reproduce, tmp_path, refused, patients=120, runs=tmp_path / "other_runs")
    assert refused.calls == []
    assert str(tmp_path / "data") in str(error.value) and "patients: 40 there vs 120 now" in str(error.value)


def test_a_finished_run_made_with_other_settings_is_refused_naming_the_run_and_setting(reproduce, tmp_path):
    run(reproduce, tmp_path, Recorder(), extra=["--trainer.max_epochs", "2"])
    refused = Recorder()
    with pytest.raises(reproduce.ReproduceError) as error:
        run(reproduce, tmp_path, refused, extra=["--trainer.max_epochs", "8"])
    message = str(error.value)
    assert refused.calls == []
    assert f"{tmp_path / 'runs' / 'mse' / 'seed_0'}: extra_arguments:" in message and '"8"] now' in message
    assert str(tmp_path / "runs" / "proposed" / "seed_0") in message


def test_a_finished_run_without_a_record_is_refused_and_an_unfinished_one_redone(reproduce, tmp_path):
    (tmp_path / "runs" / "mse" / "seed_0").mkdir(parents=True)
    (tmp_path / "runs" / "mse" / "seed_0" / "metrics.json").write_text("{}")  # made by hand or an older script
    with pytest.raises(reproduce.ReproduceError, match="no reproduce.json"):
        run(reproduce, tmp_path, Recorder())
    (tmp_path / "runs" / "mse" / "seed_0" / "metrics.json").unlink()  # now unfinished: started again
    recorder = Recorder()
    run(reproduce, tmp_path, recorder)
    assert recorder.commands() == ["synth", "fit", "test", "fit", "test", "compare"]


def test_main_prints_the_refusal_on_stderr_with_exit_code_2(reproduce, tmp_path, capsys, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.csv").write_text("patient_id\n")  # no record: unknown settings
    code = reproduce.main(["--data", str(tmp_path / "data"), "--runs", str(tmp_path / "runs"), "--seeds", "0"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("reproduce: error: ") and "no reproduce.json" in captured.err


def test_a_sweep_only_run_compares_the_alphas_and_leaves_table3_alone(reproduce, tmp_path):
    """`make reproduce-alpha` after `make reproduce`: its one Table 3 config (proposed, alpha 0.2) is a point of the
    curve, not a one-row Table 3 that would replace the real one."""
    recorder = Recorder()
    run(reproduce, tmp_path, recorder, methods=("proposed", "alpha/alpha_0.5"))
    compares = [c for c in recorder.calls if c[0] == "compare"]
    assert len(compares) == 1 and compares[0][-1] == str(tmp_path / "runs" / "compare" / "fig3")
    assert compares[0][1:3] == [str(tmp_path / "runs" / "proposed"), str(tmp_path / "runs" / "alpha_0.5")]


def test_a_failing_command_ends_main_with_its_exit_code_and_one_line(reproduce, capsys, monkeypatch):
    """e.g. compare refusing runs that are not comparable: its own message is on stderr already."""
    import subprocess
    import sys

    def refused(*args, **kwargs):
        raise subprocess.CalledProcessError(2, [sys.executable, "-m", "birads_calc", "compare", "runs/x"])

    monkeypatch.setattr(reproduce, "reproduce", refused)
    assert reproduce.main(["--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reproduce: error: birads-calc compare ... exited 2") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
