"""What a run *is*: its method, seed, data, split, training recipe and code, as plain JSON (docs/runs.md).

One record serves three checks:

* a run folder belongs to one run: ``fit`` writes the record to ``<run>/run.json`` when it claims the folder, and
  only the same run (same record, ``--ckpt_path`` of that folder) may write into it again (a resume);
* a checkpoint carries the record (``checkpoint["birads_calc"]["identity"]``) and a salted hash of its training
  and validation patients (``["split"]``), so evaluating it on one of those patients is refused even when the
  checkpoint travelled without its run folder;
* ``test`` copies the record into ``metrics.json`` (``identity``), and ``compare`` pools or pairs only runs whose
  records agree (DESIGN §7).

The record: ``{"method": {loss, attention, alpha, num_classes}, "seed", "data": {manifest_sha256, split_sha256,
split_rule}, "recipe": {...flat settings...}, "code": {version, git_commit}}``. Hashes are of file contents (the
manifest's bytes, the split's sorted ``patient,split`` pairs), never of paths, so a moved dataset is the same data.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import birads_calc

PATIENT_HASH_CHARS = 16  # 64 bits of a salted SHA-256 per patient: membership tests, not a readable id
IDENTITY_KEYS = ("method", "seed", "data", "recipe", "code")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(obj: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def split_sha256(assignment: Mapping[str, str]) -> str:
    """Fingerprint of a patient split: the same patients in the same splits give the same hash, in any order."""
    return json_sha256(sorted(assignment.items()))


def code_version(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The package version and, in a git checkout, the commit (``null`` elsewhere, e.g. an installed wheel)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    commit = None
    if (root / ".git").exists():
        try:
            done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  timeout=10, check=False)  # fmt: skip
            if done.returncode == 0 and done.stdout.strip():
                commit = done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"version": birads_calc.__version__, "git_commit": commit}


def describe_callable(spec: Any) -> str | None:
    """``torch.optim.AdamW(lr=0.001)`` from a ``class_path`` / ``init_args`` config entry (``None`` when unset)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return spec
    spec = dict(spec)
    args = dict(spec.get("init_args") or {})
    shown = ", ".join(f"{key}={args[key]!r}" for key in sorted(args))
    return f"{spec.get('class_path', '?')}({shown})"


def recipe(config: Mapping[str, Any], world_size: int = 1) -> dict[str, Any]:
    """The training recipe of a ``fit`` config (a plain dict of the resolved LightningCLI config).

    Everything that changes what a run learns apart from the method (loss, attention, alpha) and the seed:
    schedule, optimizer, backbone, precision, global batch, windows, spacing, sampling, augmentation, the
    checkpoint the run reports. ``world_size``: processes of the run (devices x nodes).
    """
    trainer, model, data = (dict(config.get(k) or {}) for k in ("trainer", "model", "data"))
    accumulate = int(trainer.get("accumulate_grad_batches") or 1)
    return {
        "max_epochs": trainer.get("max_epochs"),
        "optimizer": describe_callable(model.get("optimizer")) or "paper: torch.optim.SGD(lr=0.001, momentum=0.99)",
        "lr_scheduler": describe_callable(model.get("lr_scheduler")) or "paper: StepLR(step_size=10, gamma=0.3)",
        "backbone": model.get("backbone"),
        "pretrained": bool(model.get("pretrained")),
        "precision": str(trainer.get("precision")),
        "global_batch": int(data.get("batch_size") or 0) * world_size * accumulate,
        "window": data.get("window"),
        "stride": data.get("stride"),
        "pixel_spacing_mm": data.get("pixel_spacing_mm"),
        "voi": data.get("voi"),
        "balanced_sampling": data.get("balanced_sampling"),
        "augment": data.get("augment"),
        "weight_averaging": describe_callable(config.get("weight_averaging")),
        "limit_train_batches": trainer.get("limit_train_batches"),
        "fast_dev_run": trainer.get("fast_dev_run"),
        "checkpoint_selection": config.get("evaluate_checkpoint"),
    }


def method(model: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The method of Table 3: loss, attention ROI, MAMSE alpha (``None`` for the other losses), scale."""
    loss = model.get("loss")
    return {
        "loss": loss,
        "attention": bool(data.get("attention")),
        "alpha": float(model["alpha"]) if loss == "mamse" and model.get("alpha") is not None else None,
        "num_classes": int(data.get("num_classes") or model.get("num_classes") or 6),
    }


def split_rule(data: Mapping[str, Any]) -> dict[str, Any]:
    """How the split is made: the seeded 3:1:1 rule, or an explicit file (by content)."""
    splits = data.get("splits")
    if splits:
        return {"file_sha256": file_sha256(splits)}
    return {"split_seed": data.get("split_seed"), "split_ratios": list(data.get("split_ratios") or [])}


def identity(config: Mapping[str, Any], manifest: str | os.PathLike, world_size: int = 1) -> dict[str, Any]:
    """The record of a ``fit`` before it starts (``data.split_sha256`` is added once the split is made)."""
    model, data = dict(config.get("model") or {}), dict(config.get("data") or {})
    record = {
        "method": method(model, data),
        "seed": config.get("seed_everything"),
        "data": {"manifest_sha256": file_sha256(manifest), "split_rule": split_rule(data), "split_sha256": None},
        "recipe": recipe(config, world_size),
        "code": code_version(),
    }
    # plain JSON values only (jsonargparse's PositiveInt, paths): checkpoints are loaded weights-only
    return json.loads(json.dumps(record, default=str))


def mismatches(
    mine: Mapping[str, Any], theirs: Mapping[str, Any], ignore: Iterable[str] = (), names: tuple[str, str] = ("", "")
) -> list[str]:
    """``"recipe.max_epochs: 10 (this fit), 50 (the folder's run)"`` for every leaf that differs.

    Args:
        mine, theirs: two records (nested dicts of JSON values).
        ignore: dotted keys to skip (``"code"``, ``"data.split_sha256"``).
        names: what to call each side in the lines.
    """
    ignore = set(ignore)
    found = []
    for key in sorted(set(mine) | set(theirs)):
        if key in ignore:
            continue
        a, b = mine.get(key), theirs.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            inner = {rest for item in ignore for head, _, rest in [item.partition(".")] if head == key and rest}
            found += [f"{key}.{line}" for line in mismatches(a, b, inner, names)]
        elif a != b:
            found.append(f"{key}: {json.dumps(a)}{_named(names[0])}, {json.dumps(b)}{_named(names[1])}")
    return found


def _named(name: str) -> str:
    return f" ({name})" if name else ""


def new_salt() -> str:
    """A random salt for the patient hashes of one run."""
    return secrets.token_hex(16)


def patient_hash(patient_id: str, salt: str) -> str:
    """A salted, truncated SHA-256 of a patient id: lets a checkpoint tell its training patients apart from others
    without carrying their ids."""
    return hashlib.sha256(f"{salt}:{patient_id}".encode()).hexdigest()[:PATIENT_HASH_CHARS]


def split_record(assignment: Mapping[str, str], salt: str | None = None) -> dict[str, Any]:
    """What a checkpoint keeps of its run's split: its fingerprint and the hashed training/validation patients."""
    salt = salt or new_salt()
    hashed = {
        name: sorted(patient_hash(patient, salt) for patient, split in assignment.items() if split == name)
        for name in ("train", "val")
    }
    return {"sha256": split_sha256(assignment), "salt": salt, **hashed}


def seen_patients(record: Mapping[str, Any], patients: Iterable[str], splits: Iterable[str]) -> list[str]:
    """The ``patients`` the checkpoint's run used in any of ``splits`` (``train``, ``val``), by their hashes."""
    hashes = {h for name in splits for h in record.get(name) or ()}
    return sorted(p for p in set(patients) if patient_hash(p, record["salt"]) in hashes)


TEST_SET_FIELDS = ("patient_id", "image", "lesion_id", "row", "birads_true", "pathology")


def test_set_sha256(rows: Iterable[Mapping[str, Any]]) -> str:
    """Fingerprint of an evaluated set: its lesions (patient, image, id, manifest row) with their labels and
    pathology, in any order. Two runs with equal fingerprints were scored on the same lesions and truths."""
    return json_sha256(sorted([str(row.get(key, "")) for key in TEST_SET_FIELDS] for row in rows))


def evaluation_identity(
    saved: Mapping[str, Any] | None, rows: Iterable[Mapping[str, Any]], selection: str | None, epochs: int | None
) -> dict[str, Any] | None:
    """The ``identity`` of ``metrics.json``: the checkpoint's run record (``saved``: its ``checkpoint["birads_calc"]``)
    with the evaluated set's fingerprint, the epochs the evaluated model trained and how it was chosen (``None`` for
    a checkpoint without a record)."""
    record = (saved or {}).get("identity")
    if not isinstance(record, Mapping):
        return None
    data = record.get("data") or {}
    return {
        "method": record.get("method"),
        "seed": record.get("seed"),
        "code": record.get("code"),
        "data": {
            "manifest_sha256": data.get("manifest_sha256"),
            "split_sha256": data.get("split_sha256"),
            "test_set_sha256": test_set_sha256(rows),
        },
        "recipe": {**(record.get("recipe") or {}), "epochs_trained": epochs, "checkpoint_selection": selection},
    }
