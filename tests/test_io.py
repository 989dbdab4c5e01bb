"""Atomic outputs: complete or absent, never half-written; ordinary permissions."""

import csv
import os
import socket
import subprocess
import sys

import pytest

from birads_calc.io import (
    atomic_path,
    escape_cell,
    not_a_file,
    read_csv,
    staged_outputs,
    unescape_cell,
    write_csv,
    write_json,
)


def test_failure_leaves_neither_file_nor_partial(tmp_path):
    target = tmp_path / "predictions.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("patient_id,risk\nP1,0.")
        raise RuntimeError("killed mid-write")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_the_previous_complete_file(tmp_path):
    target = write_json(tmp_path / "metrics.json", {"qwk": 0.5})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{")
        raise RuntimeError
    assert target.read_text().strip().endswith("}")


def test_write_csv_round_trip_and_empty_cells(tmp_path):
    path = write_csv(tmp_path / "m.csv", [{"a": 1, "b": None}, {"a": "x"}], ["a", "b"])
    assert list(csv.DictReader(path.open())) == [{"a": "1", "b": ""}, {"a": "x", "b": ""}]


def test_written_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "a.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


# -- CSV cells a spreadsheet would run as formulas (issue 23) ------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("=1+2", "'=1+2"),
        ("+SUM(A1)", "'+SUM(A1)"),
        ("-2+3", "'-2+3"),  # a formula, not a number
        ('@HYPERLINK("http://x")', '\'@HYPERLINK("http://x")'),
        ("\t=1", "'\t=1"),
        ("'=1", "''=1"),  # text that already starts with the mark stays reversible
        ("-0.5", "-0.5"),  # a negative number in a text cell is a number, shown as one
        ("-1e-3", "-1e-3"),
        ("P-01", "P-01"),
        ("'quoted", "'quoted"),
        ("", ""),
    ],
)
def test_formula_cells_get_a_leading_apostrophe_and_read_back_as_written(tmp_path, text, written):
    path = write_csv(tmp_path / "p.csv", [{"lesion_id": text, "risk": -0.5}], ["lesion_id", "risk"])
    with path.open(newline="") as f:
        assert list(csv.DictReader(f)) == [{"lesion_id": written, "risk": "-0.5"}]  # numbers are never escaped
    assert read_csv(path) == (["lesion_id", "risk"], [{"lesion_id": text, "risk": "-0.5"}])
    assert unescape_cell(escape_cell(text)) == text


# -- inputs that are not regular files are named as what they are, without opening them ----------------------------
def test_not_a_file_names_folders_pipes_devices_loops_and_missing_paths(tmp_path):
    (tmp_path / "plain.csv").write_text("a\n")
    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "loop.csv").symlink_to("loop.csv")
    (tmp_path / "link.csv").symlink_to("plain.csv")
    assert not_a_file(tmp_path / "plain.csv") is None and not_a_file(tmp_path / "link.csv") is None
    assert not_a_file(tmp_path) == "is a folder, not a file"
    assert not_a_file(tmp_path / "pipe.csv").startswith("is a named pipe (FIFO)")  # opening it would block
    assert not_a_file("/dev/null").startswith("is a device")
    assert not_a_file(tmp_path / "loop.csv").startswith("is a symbolic link loop")
    assert not_a_file(tmp_path / "gone.csv") == "file not found"
    assert not_a_file(tmp_path / "plain.csv" / "x").startswith("not found (a part of the path is a file")


# -- staged_outputs: shared folders merged, staging folders of dead processes removed ------------------------------
def test_staged_outputs_merges_a_shared_folder_file_by_file(tmp_path):
    out = tmp_path / "data"
    (out / "masks" / "inbreast").mkdir(parents=True)
    (out / "masks" / "inbreast" / "a.png").write_text("other format")
    (out / "masks" / "cbis-ddsm").mkdir()
    (out / "masks" / "cbis-ddsm" / "old.png").write_text("other manifest of this format")
    with staged_outputs(out, owned=["manifest.not_converted.csv"], merge=["masks"]) as stage:
        (stage / "masks" / "cbis-ddsm").mkdir(parents=True)
        (stage / "masks" / "cbis-ddsm" / "new.png").write_text("new")
        (stage / "manifest.csv").write_text("new manifest")
    files = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*") if p.is_file()}
    assert files == {
        "masks/inbreast/a.png": "other format",
        "masks/cbis-ddsm/old.png": "other manifest of this format",
        "masks/cbis-ddsm/new.png": "new",
        "manifest.csv": "new manifest",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # the staging folder is gone


def test_staged_outputs_removes_only_the_stages_of_dead_processes_of_this_host(tmp_path):
    out = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    abandoned = tmp_path / f".run.{int(dead.stdout)}-{host}.abc123.partial"
    live = tmp_path / f".run.{os.getpid()}-{host}.def456.partial"
    foreign = tmp_path / f".run.{int(dead.stdout)}-another-host.ghi789.partial"
    for folder in (abandoned, live, foreign):
        folder.mkdir()
        (folder / "predictions.csv").write_text("half")
    with staged_outputs(out) as stage:
        (stage / "metrics.json").write_text("{}")
    assert not abandoned.exists() and live.exists() and foreign.exists()
    assert (out / "metrics.json").read_text() == "{}"


def test_an_error_inside_staged_outputs_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "manifest.csv").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged_outputs(out, merge=["masks"]) as stage:
        (stage / "manifest.csv").write_text("new")
        raise KeyboardInterrupt
    assert (out / "manifest.csv").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
