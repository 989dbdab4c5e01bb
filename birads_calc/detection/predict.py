"""``birads-calc predict --detect``: find the regions first, then rate each one (DESIGN §10).

The command line's ``predict`` hook calls :func:`detect_for_predict` with the predict arguments: it runs the
detector on the ``--data.manifest`` images (masks are not needed) into the predict folder and hands back the
arguments with ``--data.manifest`` pointing at the detected regions' manifest and ``--predict_dir`` at that
folder. After the model has rated them, :func:`add_detection_scores` puts each region's detection score beside
its BI-RADS in ``predictions.csv``.

The predict folder is ``--predict_dir`` when given, else ``<runs_root>/detect/<manifest stem>-<8 hex of its
path>/`` (the run folder is only known once the trainer has resolved the checkpoint, after detection has run).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from birads_calc.detection.tool import DetectInputError, DetectOptions, DetectSummary, run_detection
from birads_calc.io import read_csv, write_csv

FLAG = "--detect"
WEIGHTS = "--detect_weights"


class DetectOptionError(ValueError):
    """``predict --detect`` arguments that cannot work (the message names the option)."""


def predict_with_detection(args: Sequence[str], run_predict: Callable[[list[str]], object]) -> int:
    """``predict --detect ARGS``: detect into the predict folder, ``run_predict`` the regions, add the scores.

    ``args`` are the predict arguments (without the command); ``run_predict`` runs the trainer's ``predict``
    with the rewritten ones. Returns the exit code (2 with one message for unusable options or images).
    """
    if not wants_detection(args):  # --detect false: an ordinary predict
        if _options(args).get(WEIGHTS):
            print(f"birads-calc predict: error: {WEIGHTS} is the detector's; it needs --detect", file=sys.stderr)
            return 2
        run_predict(_without(args, (FLAG,)))
        return 0
    try:
        rest, folder, summary = detect_for_predict(args)
    except DetectOptionError as error:
        print(f"birads-calc predict: error: {error}", file=sys.stderr)
        return 2
    if not summary.regions:
        return report_nothing_to_rate(summary)
    run_predict(rest)
    add_detection_scores(folder)
    return 0


def wants_detection(args: Sequence[str]) -> bool:
    """Whether predict arguments ask for detection (``--detect``, ``--detect true``, ``--detect=true``)."""
    values = _options(args)
    return FLAG in values and str(values[FLAG]).lower() not in ("false", "0", "no")


def detect_for_predict(args: Sequence[str]) -> tuple[list[str], Path, DetectSummary]:
    """Run the detector for ``predict --detect`` and return (the predict arguments, the folder, the summary).

    Raises:
        DetectOptionError: no ``--data.manifest`` on the command line, or nothing could be detected on.
    """
    options = _options(args)
    manifest = options.get("--data.manifest")
    if not manifest or manifest is True:
        raise DetectOptionError("--detect needs --data.manifest MANIFEST on the command line (masks not needed)")
    spacing, weights = options.get("--pixel_spacing"), options.get(WEIGHTS)
    if weights is True:  # given without a file: not silently the shipped ranker
        raise DetectOptionError(f"{WEIGHTS} needs a ranker FILE (written by detect-train)")
    folder = Path(options["--predict_dir"]) if options.get("--predict_dir") else default_folder(options, manifest)
    detect = DetectOptions(weights=Path(weights) if weights else None)
    try:
        summary = run_detection(folder, manifest, pixel_spacing=spacing if spacing else None, progress=True,
                                options=detect)  # fmt: skip
    except (DetectInputError, ValueError) as error:
        raise DetectOptionError(f"--detect: {error}") from None
    rest = _without(args, (FLAG, WEIGHTS, "--pixel_spacing", "--data.manifest", "--predict_dir"))
    return [*rest, "--data.manifest", str(summary.manifest), "--predict_dir", str(folder)], folder, summary


def default_folder(options: dict, manifest: str) -> Path:
    """``<runs_root>/detect/<manifest stem>-<8 hex of its absolute path>``."""
    key = hashlib.sha256(str(Path(manifest).resolve()).encode()).hexdigest()[:8]
    return Path(options.get("--runs_root") or "runs") / "detect" / f"{Path(manifest).stem}-{key}"


def add_detection_scores(folder: Path) -> Path | None:
    """Insert ``detection_score`` after ``birads_pred`` in ``folder/predictions.csv`` (joined on ``lesion_id``)."""
    predictions = Path(folder) / "predictions.csv"
    if not predictions.is_file():
        return None
    # read_csv undoes write_csv's formula escaping, so a lesion_id such as "=x" is neither unmatched nor escaped twice
    scores = {row["lesion_id"]: row["score"] for row in read_csv(Path(folder) / "detections.csv")[1]}
    columns, rows = read_csv(predictions)
    if "detection_score" not in columns:
        at = columns.index("birads_pred") + 1 if "birads_pred" in columns else len(columns)
        columns.insert(at, "detection_score")
    for row in rows:
        row["detection_score"] = scores.get(row.get("lesion_id", ""), "")
    return write_csv(predictions, rows, columns)


def report_nothing_to_rate(summary: DetectSummary) -> int:
    """Exit code and message when detection found no region at all (predict would have nothing to rate)."""
    print(
        f"birads-calc predict: --detect found no calcification region on {summary.images} image(s); "
        f"nothing to rate. {summary.report} gives each image's reason.",
        file=sys.stderr,
    )
    return 0 if not summary.failed else 2


def _options(args: Sequence[str]) -> dict[str, str | bool]:
    """``--key value`` / ``--key=value`` / bare ``--flag`` pairs of a command line (last one wins)."""
    found: dict[str, str | bool] = {}
    args = list(args)
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        if "=" in arg:
            key, value = arg.split("=", 1)
            found[key] = value
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            found[arg] = args[i + 1]
        else:
            found[arg] = True
    return found


def _without(args: Sequence[str], keys: Sequence[str]) -> list[str]:
    """``args`` without the given options and their values."""
    out, skip = [], False
    args = list(args)
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        key = arg.split("=", 1)[0]
        if key in keys:
            has_value = "=" not in arg and i + 1 < len(args) and not args[i + 1].startswith("--")
            skip = has_value and not (key == FLAG and args[i + 1].lower() not in ("true", "false", "1", "0"))
            continue
        out.append(arg)
    return out
