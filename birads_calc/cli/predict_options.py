"""The options ``predict`` has on both of its paths, declared once.

``birads-calc predict`` rates a manifest (LightningCLI, ``cli/trainer.py``) or DICOM studies (``--dicomweb`` /
``--dicom_dir``, ``birads_calc.clinical``). What the two share is declared here and added to both parsers, so an
option means the same on both: ``--detect`` (a plain flag: find the regions with the detector first) and
``--detect_weights`` (the detector's ranker file, from ``detect-train``),
``--pixel_spacing`` (mm per pixel of images that record none), ``--predict_dir``, ``--overlays``,
``--overlay_size``, ``--runs_root`` and the checkpoint choice (``--ckpt_path FILE|last|best``, else the config's
newest ``--evaluate_checkpoint`` checkpoint; LightningCLI declares ``--ckpt_path`` itself on its path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from jsonargparse import ActionYesNo, ArgumentParser
from jsonargparse.typing import PositiveFloat, PositiveInt

# ``birads-calc --help`` and ``birads-calc predict --help`` (the manifest path's parser): where the DICOM path is
PREDICT_DESCRIPTION = (
    "Per-calcification BI-RADS for new studies: a manifest's (predictions.csv, breasts.csv, overlays), or DICOM "
    "studies' from a PACS (--dicomweb URL) or a folder (--dicom_dir DIR) as DICOM SEG + SR; "
    "'birads-calc predict --dicom_dir DIR --help' lists the DICOM options (docs/clinical.md)."
)


def add_predict_options(parser: ArgumentParser, checkpoint: bool = True) -> None:
    """Add the shared options; ``checkpoint=False`` where the parser declares ``--ckpt_path`` itself."""
    parser.add_argument(
        "--detect",
        action=ActionYesNo,
        default=False,
        help="predict: find the calcification regions with the detector first (a plain flag; --no_detect).",
    )
    parser.add_argument(
        "--detect_weights",
        type=Path | None,
        default=None,
        help="predict --detect: the detector's ranker file (written by detect-train; default: the shipped one).",
    )
    parser.add_argument(
        "--pixel_spacing",
        type=PositiveFloat | None,
        default=None,
        help="predict: mm per pixel of images whose files record none (needed for them on every path).",
    )
    parser.add_argument(
        "--predict_dir",
        type=Path | None,
        default=None,
        help="predict: output folder (default: <run folder>/predict/<source>-<hash>).",
    )
    parser.add_argument("--overlays", type=bool, default=True, help="predict: one overlay PNG per image.")
    parser.add_argument(
        "--overlay_size", type=PositiveInt, default=1024, help="predict: longest side of an overlay's mammogram (px)."
    )
    parser.add_argument("--runs_root", type=Path, default=Path("runs"), help="Folder holding runs/<config>/.")
    parser.add_argument(
        "--evaluate_checkpoint",
        type=Literal["last", "best"],
        default="last",
        help="validate/test/predict without --ckpt_path: the run's model after its last epoch (paper §3.2) or "
        "its best validation QWK checkpoint.",
    )
    if checkpoint:
        parser.add_argument(
            "--ckpt_path", type=str | None, default=None, help="Checkpoint file, or last|best of the config's runs."
        )
