"""The ``birads-calc`` program: the Lightning trainer commands and the data tools, one ``--help``.

Stage: the top of the package. It may import every other stage and nothing imports it (``__main__`` aside).
``trainer`` holds the LightningCLI of the trainer commands.

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI's (configs, ``--print_config``, overrides).
The data tools (``synth``, ``convert``, ``check-data``, ``prepare``, ``compare``) are small jsonargparse programs
that never build a model or a trainer. Each tool module exposes ``configure_parser(parser)`` and ``main(cfg)``;
they are imported only when their command runs, so ``--help`` and the trainer commands stay fast.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from collections.abc import Sequence

from jsonargparse import ArgumentParser

from birads_calc.errors import BiradsError

DEBUG_ENV = "BIRADS_CALC_DEBUG"  # set to 1: errors show their traceback
# errno -> (exit code, what to do): the operating-system errors a user's input or machine causes
OS_ERRORS: dict[int, tuple[int, str]] = {
    errno.ENOENT: (2, "check the path"),
    errno.EISDIR: (2, "give a file, not a folder"),
    errno.ENOTDIR: (2, "a part of the path is a file, not a folder"),
    errno.EACCES: (2, "check the permissions, or choose a folder you can write (--runs_root, --out, --cache_dir)"),
    errno.EPERM: (2, "check the permissions, or choose a folder you can write (--runs_root, --out, --cache_dir)"),
    errno.EROFS: (2, "the file system is read-only: choose a writable folder (--runs_root, --out, --cache_dir)"),
    errno.ENOSPC: (1, "the disk is full: free space and run again (finished outputs were written whole or not at all)"),
    errno.EDQUOT: (1, "the disk quota is exceeded: free space and run again"),
}
# what an interrupted command leaves behind (fit says it itself, with the checkpoint to resume from)
INTERRUPTED_NOTES: dict[str, str] = {
    "prepare": "the unfinished cache is never taken for a complete one; run the command again",
    "synth": "the unfinished dataset has no manifest.csv, so no later step takes it for complete; run it again",
    "convert": "no manifest was written; run the command again",
    "check-data": "nothing was written",
    "compare": "nothing was written",
    "validate": "nothing was written",
    "test": "no metrics were written",
    "predict": "no predictions were written",
}

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
    "detect-train": ("birads_calc.detection.train", "Train the detector's learned stage on phantoms in real films."),
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
    """Run ``birads-calc`` with ``args`` (default: ``sys.argv[1:]``) and return the exit code.

    The program's one error boundary (docs/reliability.md): an error the user can act on (the project's own,
    :mod:`birads_calc.errors`, or an expected operating-system error: missing file, permission, read-only or full
    disk) prints one message and gives its exit code (2 for bad input); Ctrl-C gives 130. Set
    ``BIRADS_CALC_DEBUG=1`` for the traceback. A bug keeps its traceback. A bad command line exits through the
    parser as usual (``SystemExit(2)`` with usage and the option at fault).
    """
    from_argv = args is None
    args = list(sys.argv[1:] if from_argv else args)
    command = args[0] if args else None
    try:
        return _dispatch(command, args, from_argv)
    except KeyboardInterrupt:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"birads-calc {command}: interrupted (Ctrl-C); {INTERRUPTED_NOTES.get(command, '')}", file=sys.stderr)
        return 130
    except (BiradsError, OSError) as error:
        code = exit_code(error)
        if code is None or os.environ.get(DEBUG_ENV):
            raise
        print(f"birads-calc {command}: error: {error_message(error)}", file=sys.stderr)
        return code


def _dispatch(command: str | None, args: list[str], from_argv: bool) -> int:
    """Run ``command`` with the whole command line ``args`` (read from ``sys.argv`` when ``from_argv``)."""
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
    return int(module.main(cfg) or 0)


def exit_code(error: BaseException) -> int | None:
    """The exit code of an error the user can act on, or ``None`` for a bug (which keeps its traceback)."""
    if isinstance(error, BiradsError):
        return error.exit_code
    if isinstance(error, OSError) and error.errno in OS_ERRORS:
        return OS_ERRORS[error.errno][0]
    return None


def error_message(error: BaseException) -> str:
    """One message for the user: the error's own, or for an OS error its cause, file and what to do."""
    if isinstance(error, OSError) and not isinstance(error, BiradsError):
        files = " -> ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
        hint = OS_ERRORS[error.errno][1]
        return f"{error.strerror or error}: {files or '(no file named)'}; {hint}"
    text = str(error)
    # A DataLoader worker re-raises the worker's error with its traceback in the message: keep the message only.
    if "Original Traceback" in text:
        text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return text


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
