"""The ``birads-calc`` program: the Lightning trainer commands and the data tools, one ``--help``.

Stage: the top of the package. It may import every other stage and nothing imports it (``__main__`` aside).
``trainer`` holds the LightningCLI of the trainer commands.

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI's (configs, ``--print_config``, overrides).
The data tools (``synth``, ``convert``, ``check-data``, ``prepare``, ``compare``) are small jsonargparse programs
that never build a model or a trainer. Each tool module exposes ``configure_parser(parser)`` and ``main(cfg)``;
they are imported only when their command runs, so ``--help`` and the trainer commands stay fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from jsonargparse import ArgumentParser

TRAINER_COMMANDS: dict[str, str] = {
    "fit": "Train a model (paper §3.2); checkpoints on best val QWK and last.",
    "validate": "Evaluate a checkpoint on the validation split.",
    "test": "Evaluate on the test split: metrics.json (QWK, MAQWK-M/-B with CIs) and predictions.csv.",
    "predict": "Per-calcification BI-RADS for new studies: predictions.csv, breasts.csv and overlays.",
}

# command -> (module implementing it, one-line help)
TOOLS: dict[str, tuple[str, str]] = {
    "synth": ("birads_calc.data.synthetic", "Write a synthetic mammography dataset (DICOM + masks + manifest)."),
    "convert": ("birads_calc.data.adapters", "Turn a public dataset (CBIS-DDSM, INbreast, ...) into a manifest."),
    "check-data": ("birads_calc.data.manifest", "Validate a manifest; report every problem with its row."),
    "prepare": ("birads_calc.data.cache", "Build the lesion crop cache of a manifest ahead of training."),
    "compare": ("birads_calc.reporting.compare", "Table 3 layout (and Fig. 3 alpha curve) from finished runs."),
    "detect": ("birads_calc.detection.tool", "Find calcification regions on images without masks: masks + manifest."),
}
# predict on DICOM studies (--dicomweb / --dicom_dir): birads_calc.clinical's own parser, not LightningCLI's
CLINICAL_PREDICT = (
    "birads_calc.clinical",
    "Rate the calcifications of DICOM studies from a PACS (--dicomweb) or a folder (--dicom_dir); "
    "results as DICOM SEG + SR (docs/clinical.md).",
)


def wants_clinical(args: Sequence[str]) -> bool:
    """``predict --dicomweb ...`` / ``--dicom_dir ...`` (checked without importing the clinical stack)."""
    return any(arg.split("=", 1)[0] in ("--dicomweb", "--dicom_dir") for arg in args)


def main(args: Sequence[str] | None = None) -> int:
    """Run ``birads-calc`` with ``args`` (default: ``sys.argv[1:]``) and return the exit code."""
    from_argv = args is None
    args = list(sys.argv[1:] if from_argv else args)
    command = args[0] if args else None
    if command == "predict" and wants_clinical(args[1:]):  # DICOM studies from a PACS or a folder (issue 15)
        return run_tool(command, args[1:], CLINICAL_PREDICT)
    if command == "predict" and any(arg.split("=")[0] == "--detect" for arg in args):
        from birads_calc.cli.trainer import BiradsCLI
        from birads_calc.detection.predict import predict_with_detection  # detect first, then rate each region

        return predict_with_detection(args[1:], run_predict=lambda rest: BiradsCLI(args=["predict", *rest]))
    if command in TRAINER_COMMANDS:
        from birads_calc.cli.trainer import BiradsCLI  # heavy imports (torch, lightning) only when needed

        BiradsCLI(args=None if from_argv else args)  # LightningCLI reads sys.argv itself when given None
        return 0
    if command in TOOLS:
        return run_tool(command, args[1:])
    _overview_parser().parse_args(args)  # prints help, or jsonargparse's error for an unknown command
    return 2


def run_tool(command: str, args: Sequence[str], tool: tuple[str, str] | None = None) -> int:
    """Parse ``args`` with the tool's own parser (``tool``: (module, help), default ``TOOLS[command]``) and run it."""
    module_name, help_text = tool or TOOLS[command]
    module = importlib.import_module(module_name)
    parser = ArgumentParser(prog=f"birads-calc {command}", description=help_text)
    module.configure_parser(parser)
    cfg = parser.parse_args(list(args))
    try:
        return int(module.main(cfg) or 0)
    except Exception as error:  # a case the tool does not report itself (a bug): a message, not a traceback
        if os.environ.get("BIRADS_CALC_DEBUG"):
            raise
        print(
            f"birads-calc {command}: error: {type(error).__name__}: {error}\n"
            "(set BIRADS_CALC_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


def _overview_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="birads-calc",
        description="Per-calcification BI-RADS classification on mammograms. "
        "Run 'birads-calc COMMAND --help' for the options of a command.",
    )
    commands = parser.add_subcommands(dest="command")
    for name, help_text in {**TRAINER_COMMANDS, **{k: v[1] for k, v in TOOLS.items()}}.items():
        commands.add_subcommand(name, ArgumentParser(), help=help_text)
    return parser
