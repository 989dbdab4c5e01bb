"""Which finished runs ``birads-calc compare`` compares, and whether they may be compared at all.

A run is one ``metrics.json`` (written by ``birads-calc test``) and the ``predictions.csv`` beside it. Its
``identity`` records what the figures depend on besides the method and the seed: the code (package version, git
commit), the data (hashes of the manifest, of the patient split and of the test lesions with their labels and
pathology) and the training recipe (a flat dict: epochs, optimizer, scheduler, backbone, precision, batch,
window, ...). Rules (docs/compare.md):

* runs are grouped by **method** = (loss, attention, alpha) and **seed**; of several runs of one method and seed,
  the newest is kept (highest ``version_N``, then the latest ``metrics.json``) and the others are listed as left
  out, so a folder holding a whole alpha sweep compares as its alphas;
* the runs of one method must differ in nothing but the seed (code, data and recipe alike): they are pooled;
* runs of different methods must share the data (manifest, split, test lesions and labels) and the recipe: they
  are paired; a different code version between methods is listed, not refused;
* a run without an identity (written by an older birads-calc) cannot be checked and is refused.

Whatever breaks these rules is refused in one message naming each differing setting and its runs, unless the
user asks to compare anyway (``--allow_mismatch``): then the differences are returned to be printed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from birads_calc.errors import InputError

METRICS: dict[str, str] = {"qwk": "QWK", "maqwk_m": "MAQWK-M", "maqwk_b": "MAQWK-B"}
LOSS_ORDER: dict[str, int] = {"ce": 0, "cross_entropy": 0, "mc": 0, "mse": 1, "mamse": 2}
RUN_MARKERS = ("config.yaml", "checkpoints", "hparams.yaml")  # a folder holding one of these is a run folder
RUNS_NAMED = 3  # runs named per value in a refusal; the rest are counted


class CompareError(InputError, ValueError):
    """Runs that cannot be compared; the message names the runs and the problem."""


@dataclass(frozen=True)
class RunResult:
    """The parts of one run's ``metrics.json`` that the comparison uses."""

    path: Path
    method: str
    loss: str
    attention: bool | None
    alpha: float | None
    metrics: dict[str, tuple[float, float | None, float | None]]  # name -> (value, ci_low, ci_high)
    seed: int | None = None
    num_classes: int = 6
    identity: dict | None = None

    @property
    def key(self) -> tuple:
        """The method: (loss, attention, alpha)."""
        return (self.loss, bool(self.attention), self.alpha)

    @property
    def sort_key(self) -> tuple:
        """Table 3 order: gray patches first, then MC, MSE, MAMSE, then alpha."""
        return (bool(self.attention), LOSS_ORDER.get(self.loss, len(LOSS_ORDER)), self.alpha or 0.0)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def predictions(self) -> Path:
        return self.folder / "predictions.csv"

    def settings(self) -> dict[str, object]:
        """The identity as flat ``section.key`` settings, the seed and the method (what a comparison varies) left
        out (``{}`` without an identity)."""
        return _flatten({k: v for k, v in (self.identity or {}).items() if k not in ("seed", "method")})


@dataclass
class Method:
    """The runs of one method (one per seed) and their statistics per metric."""

    label: str
    runs: list[RunResult]
    stats: dict[str, dict] = field(default_factory=dict)

    @property
    def first(self) -> RunResult:
        return self.runs[0]

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]


@dataclass(frozen=True)
class LeftOut:
    """A run the comparison did not use, and why."""

    run: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"run": self.run, "reason": self.reason}


# --- finding and reading runs ----------------------------------------------------------------------------------------
def find_metrics(path: Path) -> tuple[list[Path], list[LeftOut]]:
    """The ``metrics.json`` of a file or run folder, or of every run folder inside a config folder; run folders
    there without one (unfinished, not tested) are returned as left out.

    Raises:
        CompareError: when the path does not exist or holds no finished run.
    """
    if path.is_file():
        return [path], []
    if not path.is_dir():
        raise CompareError(f"{path}: no such file or folder")
    if (path / "metrics.json").is_file():
        return [path / "metrics.json"], []
    children = sorted(child for child in path.iterdir() if child.is_dir())
    found = [child / "metrics.json" for child in children if (child / "metrics.json").is_file()]
    unfinished = [
        LeftOut(str(child), "no metrics.json (not tested, or unfinished)")
        for child in children
        if not (child / "metrics.json").is_file() and any((child / marker).exists() for marker in RUN_MARKERS)
    ]
    if not found:
        raise CompareError(
            f"{path}: no metrics.json here or in its run folders; run 'birads-calc test' on the run first"
        )
    return found, unfinished


def load_run(path: Path) -> RunResult:
    """Read one ``metrics.json`` (format in docs/architecture.md).

    Raises:
        CompareError: naming the file and the missing or malformed entry.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CompareError(f"{path}: cannot read metrics.json ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise CompareError(f"{path}: no 'metrics' object; is this a birads-calc metrics.json?")
    metrics = {}
    for key in METRICS:
        entry = data["metrics"].get(key)
        if not isinstance(entry, dict) or not (_is_number(entry.get("value")) or entry.get("value", 0) is None):
            raise CompareError(f"{path}: metrics.{key}.value is missing or not a number")
        # null = undefined for this test split (e.g. MAQWK-B without benign lesions): shown as n/a, not an error
        value = float(entry["value"]) if entry["value"] is not None else math.nan
        metrics[key] = (value, _number_or_none(entry.get("ci_low")), _number_or_none(entry.get("ci_high")))
    identity = data.get("identity")
    if identity is not None and not isinstance(identity, dict):
        raise CompareError(f"{path}: 'identity' is not an object")
    alpha, seed = data.get("alpha"), data.get("seed")
    return RunResult(
        path=path,
        method=str(data.get("method") or data.get("config") or path.parent.name),
        loss=str(data.get("loss", "")).lower(),
        attention=data.get("attention"),
        alpha=float(alpha) if _is_number(alpha) else None,
        metrics=metrics,
        seed=int(seed) if _is_number(seed) else None,
        num_classes=int(data.get("num_classes") or 6),
        identity=identity,
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_or_none(value: object) -> float | None:
    return float(value) if _is_number(value) else None


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def collect_runs(paths: Iterable[Path]) -> tuple[list[RunResult], list[LeftOut]]:
    """Every run under ``paths``; of several runs of one method and seed the newest, the others left out."""
    files: dict[Path, None] = {}
    left_out: list[LeftOut] = []
    for path in paths:
        found, unfinished = find_metrics(Path(path))
        files.update(dict.fromkeys(found))
        left_out += unfinished
    newest: dict[tuple, RunResult] = {}
    for run in sorted((load_run(p) for p in files), key=_age):
        slot = (run.key, run.seed if run.seed is not None else ("path", str(run.path)))
        if slot in newest:
            older = newest[slot]
            left_out.append(
                LeftOut(str(older.folder), f"an older run of {older.method} seed {older.seed} than {run.folder}")
            )
        newest[slot] = run
    return list(newest.values()), left_out


def _age(run: RunResult) -> tuple[int, float]:
    """``version_12`` is newer than ``version_9``; otherwise the latest ``metrics.json`` is the newest."""
    match = re.fullmatch(r"version_(\d+)", run.folder.name)
    return (int(match.group(1)) if match else -1, run.path.stat().st_mtime)


# --- grouping and comparability --------------------------------------------------------------------------------------
def group_methods(runs: Sequence[RunResult]) -> list[Method]:
    """Runs grouped by method in Table 3 order, each method's runs by seed."""
    by_key: dict[tuple, list[RunResult]] = {}
    for run in runs:
        by_key.setdefault(run.key, []).append(run)
    groups = sorted(by_key.values(), key=lambda g: g[0].sort_key)
    methods = [Method("", sorted(g, key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))) for g in groups]
    for method, label in zip(methods, row_labels(methods), strict=True):
        method.label = label
    return methods


def row_labels(methods: Sequence[Method]) -> list[str]:
    """Method names, with alpha added where one name appears several times (a sweep)."""
    counts = {m.first.method: sum(o.first.method == m.first.method for o in methods) for m in methods}
    return [
        f"{m.first.method} (alpha={m.first.alpha:g})"
        if counts[m.first.method] > 1 and m.first.alpha is not None
        else m.first.method
        for m in methods
    ]


def comparability_problems(methods: Sequence[Method]) -> tuple[list[str], list[str]]:
    """``(problems, notes)``: settings that forbid pooling or pairing (one line each), and differences that are
    only reported (the code version between methods)."""
    runs = [r for m in methods for r in m.runs]
    missing = [r for r in runs if not r.identity]
    problems = [
        f"{r.folder}: no run identity in metrics.json (written by an older birads-calc): re-run 'birads-calc test' "
        "on it to record its code, data and recipe"
        for r in missing
    ]
    checked = [m for m in methods if all(r.identity for r in m.runs)]
    within: set[str] = set()
    for method in checked:
        for key, line in _differences(method.runs, lambda key: True).items():
            problems.append(f"{method.label}: {line}")
            within.add(key)
    between = _differences([r for m in checked for r in m.runs], lambda key: key not in within)
    notes = []
    for key, line in between.items():
        (notes if key.startswith("code.") else problems).append(f"between methods: {line}")
    return problems, notes


def _differences(runs: Sequence[RunResult], wanted) -> dict[str, str]:
    """``setting -> 'setting: value (runs) vs value (runs)'`` for each setting on which the runs differ."""
    settings = [r.settings() for r in runs]
    lines = {}
    for key in sorted(set().union(*settings)) if settings else ():
        if not wanted(key):
            continue
        by_value: dict[str, list[str]] = {}
        for run, values in zip(runs, settings, strict=True):
            by_value.setdefault(_shown(values.get(key, _ABSENT)), []).append(str(run.folder))
        if len(by_value) > 1:
            lines[key] = f"{key}: " + " vs ".join(f"{value} ({_named(folders)})" for value, folders in by_value.items())
    return lines


_ABSENT = object()


def _shown(value: object) -> str:
    if value is _ABSENT:
        return "(not recorded)"
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{40,}", value):
        return value[:12]  # a hash: its first 12 hex digits tell runs apart
    return json.dumps(value) if not isinstance(value, str) else value


def _named(folders: list[str]) -> str:
    shown = ", ".join(folders[:RUNS_NAMED])
    return shown + (f" and {len(folders) - RUNS_NAMED} more" if len(folders) > RUNS_NAMED else "")


def check_comparable(methods: Sequence[Method], allow_mismatch: bool) -> list[str]:
    """The differences between the runs, one line each (to print under the table).

    Raises:
        CompareError: naming every setting that forbids pooling or pairing, unless ``allow_mismatch``.
    """
    problems, notes = comparability_problems(methods)
    if problems and not allow_mismatch:
        raise CompareError(
            "these runs are not comparable (they differ in more than the method and the seed); --allow_mismatch "
            "compares them anyway and lists the differences:\n  " + "\n  ".join(problems)
        )
    return problems + notes
