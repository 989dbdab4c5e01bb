"""Atomic outputs: complete or absent, never half-written; ordinary permissions."""

import csv
import os

import pytest

from birads_calc.io import atomic_path, write_csv, write_json


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
