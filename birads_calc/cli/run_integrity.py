"""A run folder belongs to one run, and an evaluation never includes a patient the model saw (docs/runs.md).

``fit``:

* a new run claims its folder: ``version_<k>`` is created atomically (two fits never share one), an explicit
  ``--run_dir`` must be empty or hold this very run; the claim writes ``run.json`` (the run's identity,
  ``training/identity.py``) and holds a lock (``.fit.lock``) for the life of the process;
* a folder that holds a run is written again only by that run's resume: the same identity and ``--ckpt_path``
  one of its own checkpoints; anything else is refused, naming the folder and each differing setting.

``validate`` / ``test``:

* the split is always the checkpoint's run's own (``<run>/splits.csv``, checked against the fingerprint the
  checkpoint carries), whatever ``--run_dir`` says; an explicit ``--data.splits`` that differs is an *external*
  evaluation: allowed only if it keeps every training and validation patient of the checkpoint out of the
  evaluated set (checked with the checkpoint's salted patient hashes), and written to its own folder
  (``<run>/evaluations/<name>-<hash>/`` or ``--run_dir``), never over the run's own ``metrics.json``;
* a checkpoint that records no split and has no ``splits.csv`` beside it cannot be checked, and is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from birads_calc.data.manifest import Lesion
from birads_calc.data.splits import SPLITS_FILE, read_splits
from birads_calc.io import write_json
from birads_calc.runs import (
    RUN_RECORD,
    FitLock,
    RunFolderError,
    has_checkpoints,
    holds_outputs,
    read_run_record,
    run_dir_of_checkpoint,
)
from birads_calc.training.identity import mismatches, new_salt, seen_patients, split_sha256

NAMED = 10  # patients named in a message before "and N more"
# what a resume may change without becoming another run: the code (a bug-fix release), the realised split
# (checked through splits.csv itself)
RESUME_IGNORES = ("code", "data.split_sha256")
EVALUATED = {"validate": "val", "test": "test"}
FORBIDDEN = {"validate": ("train",), "test": ("train", "val")}
FORBIDDEN_WORDS = {"validate": "train", "test": "train or validate"}


class EvaluationLeakError(RunFolderError):
    """An evaluation that would include patients the model trained or was validated on, or cannot be checked."""


# --- fit --------------------------------------------------------------------------------------------------------------
def claim_fit_folder(run_dir: Path, identity: Mapping[str, Any], resume_from: Path | None) -> tuple[FitLock, str]:
    """Lock ``run_dir`` for this fit and make sure it is this run's; return the lock and the run's patient salt.

    Raises:
        RunFolderError: another fit holds the folder, or it holds another run (naming the differing settings), or
            this run already trained there and ``--ckpt_path`` does not resume it.
    """
    run_dir = Path(run_dir)
    _check_claim(run_dir, identity, resume_from)  # refuse before touching the folder
    lock = FitLock(run_dir)
    lock.acquire()
    try:
        record = _check_claim(run_dir, identity, resume_from)  # again, now that no other fit can write it
        if record is None:
            record = {"identity": dict(identity), "salt": new_salt(), "created": _now()}
        else:
            record["identity"] = {**dict(identity), "data": {**identity["data"], "split_sha256": None}}
        write_json(run_dir / RUN_RECORD, record)
    except BaseException:
        lock.release()
        raise
    return lock, str(record["salt"])


def _check_claim(run_dir: Path, identity: Mapping[str, Any], resume_from: Path | None) -> dict[str, Any] | None:
    """The folder's run record if this fit may write into it (``None``: an empty folder to claim), else raise."""
    record = read_run_record(run_dir)
    if record is None:
        _claim_empty(run_dir)
    else:
        _check_same_run(run_dir, record, identity, resume_from)
    return record


def _claim_empty(run_dir: Path) -> None:
    found = holds_outputs(run_dir)
    if found:
        raise RunFolderError(
            f"run folder {run_dir} already holds {', '.join(found)} but no {RUN_RECORD}: it was written by an older "
            "birads-calc or by another run, so fit will not write into it. Give a new --run_dir (or none: the next "
            "free version is used)"
        )


def _check_same_run(run_dir: Path, record: Mapping[str, Any], identity: Mapping[str, Any], resume_from) -> None:
    different = mismatches(identity, record.get("identity") or {}, RESUME_IGNORES, ("this fit", "the folder's run"))
    if different:
        raise RunFolderError(
            f"run folder {run_dir} belongs to another run; this fit differs in: {'; '.join(different)}"
            ". Give a new --run_dir (or none: the next free version is used)"
        )
    if resume_from is not None:
        home = run_dir_of_checkpoint(resume_from)
        if home is None or home.resolve() != run_dir.resolve():
            raise RunFolderError(
                f"--ckpt_path {resume_from} is not a checkpoint of run folder {run_dir}: a resume continues the "
                "run in the folder of its own checkpoint"
            )
        return
    if has_checkpoints(run_dir):
        raise RunFolderError(
            f"run folder {run_dir} already holds this run's checkpoints: resume it with --ckpt_path "
            f"{run_dir / 'checkpoints' / 'last.ckpt'}, or give a new --run_dir to train again from scratch"
        )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- validate / test --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluationPlan:
    """Where an evaluation reads its split from and writes its outputs."""

    output_dir: Path
    splits: Path | None  # the split file the data module uses (None: the manifest's column or seeded rule)
    own_split: bool  # the checkpoint's run's own split: outputs may go into that run's folder


def plan_evaluation(
    subcommand: str,
    checkpoint_path: Path,
    checkpoint: Mapping[str, Any],
    explicit_splits: Path | None,
    explicit_run_dir: Path | None,
    manifest: Path,
    runs_root: Path,
) -> EvaluationPlan:
    """Decide the split and output folder of ``validate``/``test`` of a checkpoint (module docstring).

    Raises:
        EvaluationLeakError: the run's ``splits.csv`` no longer matches the checkpoint, or nothing tells which
            patients the checkpoint saw.
        RunFolderError: ``--run_dir`` is another run's folder.
    """
    run_dir = run_dir_of_checkpoint(checkpoint_path)
    record = split_record_of(checkpoint)
    pinned = run_dir / SPLITS_FILE if run_dir is not None and (run_dir / SPLITS_FILE).is_file() else None
    if pinned is not None and record is not None and split_sha256(read_splits(pinned)) != record["sha256"]:
        raise EvaluationLeakError(
            f"{pinned} is not the split checkpoint {checkpoint_path} was trained with (its fingerprint differs): it "
            "was edited or replaced. Restore the run's splits.csv"
        )
    if pinned is None and record is None:
        raise EvaluationLeakError(
            f"checkpoint {checkpoint_path} records no split and no {SPLITS_FILE} lies in its run folder, so nothing "
            f"tells which patients it trained on; {subcommand} of it could include them. Use a checkpoint inside "
            "its run folder (runs/<config>/<version>/checkpoints/), or one written by this birads-calc"
        )
    same_as_pinned = (
        explicit_splits is not None
        and pinned is not None
        and (split_sha256(read_splits(explicit_splits)) == split_sha256(read_splits(pinned)))
    )
    if explicit_splits is not None and not same_as_pinned:
        splits, own = Path(explicit_splits), False  # an external evaluation: the guard checks its patients
    else:
        splits, own = pinned, pinned is not None  # None: a checkpoint away from its run; the guard checks
    output = _output_dir(run_dir, explicit_run_dir, own, splits or manifest, runs_root, subcommand)
    return EvaluationPlan(output_dir=output, splits=splits, own_split=own)


def _output_dir(
    run_dir: Path | None, explicit: Path | None, own: bool, source: Path, runs_root: Path, subcommand: str
) -> Path:
    """``--run_dir`` (unless another run's folder); the run's own folder for its own split; else a folder of the
    evaluation's own, named after its split file (or manifest) and a hash of that path."""
    if explicit is not None:
        if read_run_record(explicit) is not None and (run_dir is None or explicit.resolve() != run_dir.resolve()):
            raise RunFolderError(
                f"--run_dir {explicit} is the folder of another run ({RUN_RECORD}); {subcommand} writes its results "
                "into the checkpoint's own run folder, or into a folder of no other run"
            )
        return Path(explicit)
    if own and run_dir is not None:
        return run_dir
    name = f"{Path(source).stem}-{hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:8]}"
    return (run_dir if run_dir is not None else Path(runs_root)) / "evaluations" / name


def split_record_of(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The split record a checkpoint carries (``training/identity.split_record``), or ``None``."""
    record = (checkpoint.get("birads_calc") or {}).get("split")
    return record if isinstance(record, dict) and {"sha256", "salt"} <= record.keys() else None


def split_guard(
    checkpoint: Mapping[str, Any], source: str
) -> Callable[[dict[str, list[int]], Sequence[Lesion], str], None]:
    """The data module's check after its split is made (``BiradsDataModule.split_guard``).

    For ``validate``/``test``: the evaluated split is not empty, and none of its patients is one the checkpoint
    trained (or, for ``test``, validated) on, by the checkpoint's salted patient hashes.
    """
    record = split_record_of(checkpoint)

    def guard(splits: dict[str, list[int]], lesions: Sequence[Lesion], stage: str) -> None:
        if stage not in EVALUATED:
            return
        evaluated = EVALUATED[stage]
        patients = sorted({lesions[i].patient_id for i in splits.get(evaluated, [])})
        if not patients:
            raise EvaluationLeakError(
                f"{stage}: the {evaluated} split of {source} holds no patient of the manifest: nothing to evaluate "
                "(were the patients removed from the manifest, or does the split put every patient elsewhere?)"
            )
        seen = seen_patients(record, patients, FORBIDDEN[stage]) if record is not None else []
        if seen:
            shown = ", ".join(seen[:NAMED]) + (f" and {len(seen) - NAMED} more" if len(seen) > NAMED else "")
            raise EvaluationLeakError(
                f"{stage}: {len(seen)} patient(s) of the {evaluated} split ({source}) were used to "
                f"{FORBIDDEN_WORDS[stage]} this checkpoint: {shown}. Evaluate on patients the model never saw (the "
                "run's own splits.csv)"
            )

    return guard
