"""Interrupted ``synth``, ``convert`` and ``prepare`` leave nothing a later run takes for complete (issue #10).

Two kinds of interruption: an exception partway (Ctrl-C, a full disk) in this process, and a real SIGKILL of a
``birads-calc`` child process (no ``finally``, no cleanup) at a chosen write: the child wraps one function so
that its N-th call kills the process. ``os.replace`` is the rename that publishes every atomic output, so killing
there leaves a complete temporary file that was never published: the worst case for a later run.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from birads_calc.cli import main as cli
from birads_calc.data import cache as cache_module
from birads_calc.data.cache import CacheSettings, ensure_cache, find_cache
from birads_calc.data.dicom import read_image
from birads_calc.data.masks import read_mask
from birads_calc.data.synthetic import generate
from tests.adapters_fixtures import write_cbis_csv, write_tcia_case
from tests.factories import make_tiny_dataset

REPO = Path(__file__).resolve().parents[1]
SYNTH = ["--patients", "3", "--seed", "7", "--image_size", "320", "256", "--pixel_spacing", "0.25", "--workers", "1"]
KILLER = """
import os, signal, sys, importlib
from birads_calc.cli import main
target = importlib.import_module({module!r})
original, calls = getattr(target, {name!r}), [0]
def killer(*args, **kwargs):
    calls[0] += 1
    if calls[0] == {at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(target, {name!r}, killer)
sys.exit(main({args!r}))
"""


def run_killed(module: str, name: str, at: int, args: list[str]) -> None:
    """Run ``birads-calc ARGS`` in a child that SIGKILLs itself at the ``at``-th call of ``module.name``."""
    script = KILLER.format(module=module, name=name, at=at, args=args)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr.decode()[-2000:])


def files_of(root: Path, skip: str = ".birads_cache") -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and skip not in p.parts
    }


def partial_files(root: Path) -> list[Path]:
    return sorted(root.rglob(".*.partial*"))


# -- synth ---------------------------------------------------------------------------------------------------------


def test_synth_killed_between_write_and_rename_then_rerun_completes(tmp_path, capsys):
    out = tmp_path / "killed"
    run_killed("os", "replace", 4, ["synth", "--out", str(out), *SYNTH])
    assert not (out / "manifest.csv").exists() and not (out / "lesions.csv").exists()
    assert partial_files(out), "the kill was meant to land between a write and its rename"
    for path in out.rglob("*"):  # everything published before the kill is whole
        if path.is_file() and path not in partial_files(out):
            (read_image if path.suffix == ".dcm" else read_mask)(path)

    assert cli(["synth", "--out", str(out), *SYNTH]) == 0  # no manifest: nothing to protect, no --overwrite needed
    assert cli(["check-data", str(out / "manifest.csv")]) == 0
    assert not partial_files(out)  # the complete run removed the killed run's temporary files
    assert cli(["synth", "--out", str(tmp_path / "fresh"), *SYNTH]) == 0
    assert files_of(out) == files_of(tmp_path / "fresh")  # byte for byte what an uninterrupted run writes


def test_interrupted_overwrite_leaves_no_manifest_over_mixed_files(tmp_path, monkeypatch):
    """Overwriting seed 7 with seed 8 and failing halfway must not leave seed 7's manifest over seed 8's files."""
    import birads_calc.data.synthetic.writer as writer

    out = tmp_path / "d"
    generate(out, patients=3, seed=7, shape=(320, 256), spacing=0.25, workers=1)
    before = files_of(out)
    calls, original = [], writer.write_mask

    def failing(path, mask):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("No space left on device")
        return original(path, mask)

    monkeypatch.setattr(writer, "write_mask", failing)
    with pytest.raises(OSError, match="No space"):
        generate(out, patients=3, seed=8, shape=(320, 256), spacing=0.25, workers=1)
    after = files_of(out)
    assert any(after.get(k) != v for k, v in before.items() if k.endswith(".dcm"))  # images were replaced ...
    assert "manifest.csv" not in after and "lesions.csv" not in after  # ... so no manifest may claim them


# -- convert -------------------------------------------------------------------------------------------------------

GOOD = [
    dict(n=1, patient="P_00001", folder="Calc-Training_P_00001_LEFT_CC", abn=1, assessment=4, pathology="MALIGNANT"),
    dict(n=2, patient="P_00001", folder="Calc-Training_P_00001_LEFT_CC", abn=2, assessment=3, pathology="BENIGN"),
    dict(n=3, patient="P_00002", folder="Calc-Training_P_00002_RIGHT_MLO", abn=1, assessment=2, pathology="BENIGN"),
]
INCOMPLETE = dict(
    n=4, patient="P_00003", folder="Calc-Training_P_00003_LEFT_MLO", abn=1, assessment=0, pathology="BENIGN"
)


def cbis_source(root: Path, cases: list[dict]) -> Path:
    from birads_calc.data.adapters.cbis_ddsm import TRAIN_CSV

    root.mkdir(parents=True)
    write_cbis_csv(root / TRAIN_CSV, cases)
    for case in cases:
        write_tcia_case(root, case, "csv")
    return root


def convert_args(src: Path, out: Path) -> list[str]:
    return ["convert", "cbis-ddsm", "--src", str(src), "--out", str(out), "--val_fraction", "0"]


def test_convert_killed_keeps_the_previous_set_or_leaves_no_manifest_and_rerun_matches(tmp_path):
    """A kill while the new set is staged leaves the previous set whole; a kill while it is moved in (after the old
    manifest is removed) leaves no manifest, never the old one over new masks; the next run cleans up and matches."""
    src = cbis_source(tmp_path / "cbis", GOOD)
    out = tmp_path / "out" / "manifest.csv"
    assert cli(convert_args(src, out)) == 0
    complete = files_of(out.parent)
    again = [*convert_args(src, out), "--overwrite", "true"]
    # os.replace calls: 3 masks and the manifest written into the staging folder, then the moves into out/
    run_killed("os", "replace", 2, again)  # while staging: nothing under out/ changed
    assert files_of(out.parent) == complete
    run_killed("os", "replace", 6, again)  # moving the masks in: the old manifest is gone already
    assert not out.exists(), "an old manifest survived over half-replaced masks"
    assert len(list(tmp_path.glob(".out.*.partial"))) == 1  # the last killed run's (it removed the first's)
    assert cli(again) == 0
    assert files_of(out.parent) == complete
    assert not list(tmp_path.glob(".out.*.partial"))  # removed: their processes are gone
    assert cli(["check-data", str(out), "--num_classes", "4"]) == 0


def test_convert_removes_a_stale_not_converted_list(tmp_path, capsys):
    out = tmp_path / "out" / "manifest.csv"
    report = out.with_name("manifest.not_converted.csv")
    assert cli(convert_args(cbis_source(tmp_path / "a", [*GOOD, INCOMPLETE]), out)) == 0
    with report.open(newline="") as f:
        assert [r["reason"] for r in csv.DictReader(f)] == ["BI-RADS 0 (incomplete assessment)"]
    assert cli([*convert_args(cbis_source(tmp_path / "b", GOOD), out), "--overwrite", "true"]) == 0
    assert not report.exists()  # the older run's list would otherwise pass for this run's
    assert "not converted: none" in capsys.readouterr().out


def test_convert_out_as_folder_is_a_clear_error(tmp_path, capsys):
    src = cbis_source(tmp_path / "cbis", GOOD[:1])
    assert cli(convert_args(src, tmp_path)) == 2
    assert "is a folder" in capsys.readouterr().err


# -- prepare / crop cache --------------------------------------------------------------------------------------------

SETTINGS = CacheSettings(window=64, stride=32)
PREPARE = ["--window", "64", "--stride", "32"]


@pytest.mark.parametrize(
    ("name", "at"),
    [("load_image", 2), ("_publish", 1)],
    ids=["mid-crops", "before-rename"],
)
def test_prepare_killed_is_never_taken_for_a_cache(tmp_path, name, at):
    manifest = make_tiny_dataset(tmp_path / "data", patients=3, size=128)
    run_killed("birads_calc.data.cache", name, at, ["prepare", str(manifest), *PREPARE])
    cache_dir = manifest.parent / ".birads_cache"
    partial = [p for p in cache_dir.iterdir() if p.name.endswith(cache_module.PARTIAL_SUFFIX)]
    assert len(partial) == 1 and (partial[0] / "owner").is_file()
    assert find_cache(manifest, SETTINGS) is None  # nothing published, so nothing reused

    rebuilt = ensure_cache(manifest, SETTINGS)
    assert not partial[0].exists()  # its process is dead: the rebuild removed it
    fresh = ensure_cache(manifest, SETTINGS, cache_dir=tmp_path / "fresh")
    for file in ("pixels.u16", "masks.u8"):
        assert (rebuilt.root / file).read_bytes() == (fresh.root / file).read_bytes()
    np.testing.assert_array_equal(rebuilt.rows, fresh.rows)
    np.testing.assert_array_equal(rebuilt.windows(0), fresh.windows(0))
    assert not (rebuilt.root / "owner").exists()


def test_a_live_build_is_left_alone(tmp_path):
    """A partial folder whose owner still runs (another rank, another prepare) must not be deleted under it."""
    manifest = make_tiny_dataset(tmp_path / "data", patients=2, size=128)
    cache_dir = manifest.parent / ".birads_cache"
    live = cache_dir / ".manifest-x.abc.partial"
    live.mkdir(parents=True)
    (live / "owner").write_text(f"{cache_module.socket.gethostname()} {os.getpid()}")
    other_host = cache_dir / ".manifest-y.def.partial"
    other_host.mkdir()
    (other_host / "owner").write_text("some-other-node 1")
    ensure_cache(manifest, SETTINGS)
    assert live.is_dir() and other_host.is_dir()
