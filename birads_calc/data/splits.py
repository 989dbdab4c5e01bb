"""The patient split (paper §3.1: patients split 3:1:1 into train, validation and test) and pinning it to a run.

``fit`` writes the split it used into the run folder as ``splits.csv`` (``patient_id,split``); every later
``fit`` (resume), ``validate`` and ``test`` of that run reads it back instead of recomputing the split, so editing
the manifest (dropping a patient, ``skip_bad_rows``) can never move a training patient into the test set.
``--data.splits FILE`` gives a split explicitly (e.g. one file shared by every method of a comparison).

A manifest that does not fit the pinned split is refused with :class:`SplitError`, naming the patients: patients
the split does not know (nobody can say whether the model saw them) and patients whose manifest ``split`` column
says otherwise. Patients of the file missing from the manifest are only reported (their rows were dropped). A split
that leaves a split a command needs empty (every patient in test, ratios ``[0, 0, 1]``, a test after the test
patients left the manifest) is refused as well, naming where the split came from (:func:`require_splits`).
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from birads_calc.data.manifest import SPLITS, Lesion
from birads_calc.errors import InputError
from birads_calc.io import not_a_file, read_csv, write_csv

SPLITS_FILE = "splits.csv"
SPLIT_COLUMNS = ("patient_id", "split")
NAMED = 10  # patients named in a message before "and N more"


class SplitError(InputError, ValueError):
    """A split file that cannot be read, a manifest that does not fit the pinned split, or a split left empty.
    Bad input: exit code 2."""


class DroppedPatientsWarning(UserWarning):
    """Patients of the pinned split that the manifest no longer holds."""


def split_by_patient(lesions: Sequence[Lesion], ratios: Sequence[float] = (3, 1, 1), seed: int = 0) -> dict:
    """Lesion positions per split (``train``/``val``/``test``): the manifest's ``split`` column when it has one,
    otherwise patients shuffled with ``seed`` and cut by ``ratios`` (every patient in exactly one split).
    """
    if any(x.split for x in lesions):
        return positions_of({x.patient_id: x.split for x in lesions}, lesions)
    patients = sorted({x.patient_id for x in lesions})
    order = np.random.default_rng(seed).permutation(len(patients))
    weights = np.asarray(ratios, dtype=np.float64) / float(sum(ratios))
    cuts = np.round(np.cumsum(weights) * len(patients)).astype(int)
    assignment = {}
    for rank, p in enumerate(order):
        assignment[patients[p]] = SPLITS[int(np.searchsorted(cuts, rank, side="right"))]
    return positions_of(assignment, lesions)


def positions_of(assignment: Mapping[str, str], lesions: Sequence[Lesion]) -> dict[str, list[int]]:
    """Lesion positions per split under a patient -> split assignment."""
    return {name: [i for i, x in enumerate(lesions) if assignment[x.patient_id] == name] for name in SPLITS}


def assignment_of(splits: Mapping[str, Sequence[int]], lesions: Sequence[Lesion]) -> dict[str, str]:
    """Patient -> split, from lesion positions per split."""
    return {lesions[i].patient_id: name for name, positions in splits.items() for i in positions}


def write_splits(path: str | os.PathLike, assignment: Mapping[str, str]) -> Path:
    """Write ``splits.csv`` (``patient_id,split``; train, then val, then test, patients sorted) atomically."""
    order = {name: k for k, name in enumerate(SPLITS)}
    rows = [{"patient_id": p, "split": s} for p, s in sorted(assignment.items(), key=lambda ps: (order[ps[1]], ps[0]))]
    return write_csv(path, rows, SPLIT_COLUMNS)


def read_splits(path: str | os.PathLike) -> dict[str, str]:
    """Patient -> split from a ``splits.csv``.

    Raises:
        SplitError: the file is missing or unreadable, lacks a column, names an unknown split or a patient twice.
    """
    path = Path(path)
    problem = not_a_file(path)
    if problem:
        raise SplitError(f"split file {path}: {problem}")
    try:
        header, table = read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SplitError(f"split file {path}: cannot read it ({error})") from None
    missing = [c for c in SPLIT_COLUMNS if c not in header]
    if missing:
        raise SplitError(f"split file {path}: no column {', '.join(missing)} (expected patient_id,split)")
    rows = [(line, row["patient_id"], (row["split"] or "").strip().lower()) for line, row in enumerate(table, 2)]
    assignment: dict[str, str] = {}
    for line, patient, split in rows:
        if split not in SPLITS:
            raise SplitError(f"split file {path}, line {line}: unknown split {split!r}; expected train, val or test")
        if assignment.setdefault(patient, split) != split:
            raise SplitError(f"split file {path}, line {line}: patient {patient!r} is in two splits")
    return assignment


def pinned_split(lesions: Sequence[Lesion], assignment: Mapping[str, str], source: str | os.PathLike) -> dict:
    """Lesion positions per split under a pinned assignment, after checking that the manifest fits it.

    Raises:
        SplitError: naming the patients the split does not know, or whose manifest ``split`` column disagrees
            (e.g. a training patient the manifest now puts into test).
    """
    patients = {x.patient_id for x in lesions}
    unknown = sorted(patients - assignment.keys())
    moved = sorted({(x.patient_id, x.split) for x in lesions if x.split and x.patient_id in assignment
                    and assignment[x.patient_id] != x.split})  # fmt: skip
    problems = []
    if unknown:
        problems.append(
            f"{len(unknown)} patient(s) of the manifest are not in the pinned split, so nobody can tell whether the "
            f"model trained on them: {_names(unknown)}"
        )
    if moved:
        listed = [f"{p} ({assignment[p]} in the split, {s} in the manifest)" for p, s in moved]
        problems.append(f"{len(moved)} patient(s) change split: {_names(listed)}")
    if problems:
        raise SplitError(
            f"the manifest does not fit the pinned split {source}; evaluating it could put training or validation "
            "patients into the test set:\n  " + "\n  ".join(problems) + "\nUse the manifest the run was trained "
            "on, or pass another split with --data.splits FILE (patient_id,split)."
        )
    gone = sorted(assignment.keys() - patients)
    if gone:
        warnings.warn(
            f"{len(gone)} patient(s) of the pinned split {source} are not in the manifest (left out): {_names(gone)}",
            DroppedPatientsWarning,
            stacklevel=2,
        )
    return positions_of(assignment, lesions)


def require_splits(splits: Mapping[str, Sequence[int]], lesions: Sequence[Lesion], needed: Sequence[str], source: str):
    """Refuse a split that leaves one of the ``needed`` splits without a lesion.

    Args:
        splits: lesion positions per split.
        lesions: the manifest's lesions (for the patient counts in the message).
        needed: the splits the command uses (``fit``: train and val; ``test``: test).
        source: where the split came from, as the message should name it (``split file runs/.../splits.csv``,
            ``--data.split_ratios [0, 0, 1]``, ``the manifest's split column``).

    Raises:
        SplitError: naming the empty splits, the patients per split and ``source``.
    """
    empty = [name for name in needed if not splits.get(name)]
    if not empty:
        return
    patients = {name: len({lesions[i].patient_id for i in splits.get(name, [])}) for name in SPLITS}
    counts = ", ".join(f"{name} {patients[name]}" for name in SPLITS)
    raise SplitError(
        f"{source} leaves no patient of the manifest in the {' and '.join(empty)} split (patients per split: "
        f"{counts}); this command needs {' and '.join(needed)}. Give a split with patients in each, or a manifest "
        "that holds them"
    )


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(str(x) for x in items[:NAMED])
    return shown + (f" and {len(items) - NAMED} more" if len(items) > NAMED else "")
