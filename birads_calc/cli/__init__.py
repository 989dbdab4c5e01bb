"""The ``birads-calc`` program: the Lightning trainer commands and the data tools, one ``--help``.

Stage: the top of the package. It may import every other stage and nothing imports it (``__main__`` aside).
``trainer`` holds the LightningCLI of the trainer commands.

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI's (configs, ``--print_config``, overrides).
The data tools (``synth``, ``convert``, ``check-data``, ``prepare``, ``compare``) are small jsonargparse programs
that never build a model or a trainer. Each tool module exposes ``configure_parser(parser)`` and ``main(cfg)``;
they are imported only when their command runs, so ``--help`` and the trainer commands stay fast.

Before any command runs, :func:`main` reads what every command shares: ``--log_level`` (or ``BIRADS_CALC_LOG``)
configures logging once (``birads_calc.progress``), and ``--config NAME`` becomes the packaged config of that name
(``birads_calc.packaged_configs``), so the paper configs work outside a clone. Messages, progress and errors go to
stderr; stdout carries results only (tables, listings, the data tools' closing line, ``--print_config``).
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ArgumentParser

import birads_calc
from birads_calc.cli.predict_options import PREDICT_DESCRIPTION
from birads_calc.errors import BiradsError, InputError
from birads_calc.packaged_configs import resolve_config
from birads_calc.progress import LEVELS, configure_logging

DEBUG_ENV = "BIRADS_CALC_DEBUG"  # set to 1: errors show their traceback
LOG_ENV = "BIRADS_CALC_LOG"  # debug | info (default) | warning | error; --log_level wins
CONFIG_OPTIONS = ("--config", "-c")
# errno -> (exit code, what to do): the operating-system errors a user's input or machine causes
OS_ERRORS: dict[int, tuple[int, str]] = {
    errno.ENOENT: (2, "check the path"),
    errno.EISDIR: (2, "give a file, not a folder"),
    errno.ENOTDIR: (2, "a part of the path is a file, not a folder"),
    errno.EACCES: (2, "check the permissions, or choose a folder you can write (--runs_root, --out, --cache_dir)"),
    errno.EPERM: (2, "check the permissions, or choose a folder you can write (--runs_root, --out, --cache_dir)"),
    errno.EROFS: (2, "the file system is read-only: choose a writable folder (--runs_root, --out, --cache_dir)"),
    errno.EEXIST: (2, "a file is in the way where a folder is to be made: give another path, or move the file"),
    errno.ELOOP: (2, "a symbolic link loop (a link that leads back to itself): fix the link or give the real path"),
    errno.ENAMETOOLONG: (2, "the path or a name in it is too long for the file system"),
    errno.ENOSPC: (1, "the disk is full: free space and run again (finished outputs were written whole or not at all)"),
    errno.EDQUOT: (1, "the disk quota is exceeded: free space and run again"),
}
# what an interrupted command leaves behind (fit says it itself, with the checkpoint to resume from)
INTERRUPTED_NOTES: dict[str, str] = {
    "prepare": "the unfinished cache is never taken for a complete one; run the command again",
    "synth": "the unfinished dataset has no manifest.csv, so no later step takes it for complete; run it again",
    "convert": "nothing was written; an existing manifest and its masks are as they were; run the command again",
    "check-data": "nothing was written",
    "compare": "nothing was written",
    "validate": "nothing was written",
    "test": "no metrics were written (any earlier results of the run are left whole)",
    "predict": "no predictions were written (any earlier ones are left whole)",
}

TRAINER_COMMANDS: dict[str, str] = {
    "fit": "Train a model (paper §3.2); checkpoints on best val QWK and last.",
    "validate": "Evaluate a checkpoint on the validation split.",
    "test": "Evaluate on the test split: metrics.json (QWK, MAQWK-M/-B with CIs) and predictions.csv.",
    "predict": PREDICT_DESCRIPTION,
}

# command -> (module implementing it, one-line help)
TOOLS: dict[str, tuple[str, str]] = {
    "synth": ("birads_calc.data.synthetic", "Write a synthetic mammography dataset (DICOM + masks + manifest)."),
    "convert": ("birads_calc.data.adapters", "Turn a public dataset (CBIS-DDSM, INbreast, ...) into a manifest."),
    "check-data": ("birads_calc.data.manifest", "Validate a manifest; report every problem with its row."),
    "prepare": ("birads_calc.data.cache", "Build the lesion crop cache of a manifest ahead of training."),
    "compare": ("birads_calc.reporting.compare", "Table 3 layout (and Fig. 3 alpha curve) from finished runs."),
    "detect": ("birads_calc.detection.tool", "Find calcification regions on images without masks: masks + manifest."),
    "configs": (
        "birads_calc.packaged_configs",
        "List the packaged configs (use them as --config NAME); --copy DIR writes editable copies.",
    ),
    "store": ("birads_calc.clinical.store", "Send kept DICOM results of predict --dicomweb to a PACS again."),
    "detect-train": (
        "birads_calc.detection.train",
        "Train the detector's learned stage (phantoms in real films; real outlines with --outlined).",
    ),
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
    command, log_env = _command_word(args), os.environ.get(LOG_ENV)
    terminated = TerminationSignal()
    try:
        args = shared_options(args)
        command = args[0] if args else None
        if from_argv:  # LightningCLI reads sys.argv itself, and Lightning's DDP launcher re-runs it
            sys.argv[1:] = args
        with terminated:
            return _dispatch(command, args, from_argv)
    except KeyboardInterrupt:
        if os.environ.get(DEBUG_ENV):
            raise
        how = "terminated (SIGTERM)" if terminated.received else "interrupted (Ctrl-C)"
        print(f"birads-calc {command}: {how}; {INTERRUPTED_NOTES.get(command, '')}", file=sys.stderr)
        return 143 if terminated.received else 130
    except (BiradsError, OSError) as error:
        code = exit_code(error)
        if code is None or os.environ.get(DEBUG_ENV):
            raise
        print(f"birads-calc {command}: error: {error_message(error)}", file=sys.stderr)
        return code
    finally:  # --log_level was exported for this command's child processes only, not for a later main() call
        if log_env is None:
            os.environ.pop(LOG_ENV, None)
        else:
            os.environ[LOG_ENV] = log_env


def shared_options(args: Sequence[str]) -> list[str]:
    """Apply what every command shares and return the command line for the command itself.

    ``--log_level LEVEL`` (anywhere; default ``$BIRADS_CALC_LOG`` or ``info``) configures logging and is removed;
    it is exported to ``BIRADS_CALC_LOG`` so processes started by this one (DDP ranks) log alike. Each
    ``--config NAME`` naming a packaged config becomes that file's path (a file given by path stays as it is).

    Raises:
        InputError: an unknown log level, or a ``--config`` file that exists nowhere.
    """
    args, given = _take_log_level(list(args))
    level = given or os.environ.get(LOG_ENV) or "info"
    if level.lower() not in LEVELS:
        source = "--log_level" if given else LOG_ENV
        raise InputError(f"{source} {level}: not a log level; use one of {', '.join(LEVELS)}")
    os.environ[LOG_ENV] = level.lower()
    configure_logging(level)
    return resolve_config_options(args)


def resolve_config_options(args: Sequence[str]) -> list[str]:
    """``--config NAME`` / ``--config=NAME`` / ``-c NAME``: a packaged config's name becomes its file."""
    args = list(args)
    for i, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if equals and name in CONFIG_OPTIONS:
            args[i] = f"{name}={resolve_config(value)}"
        elif arg in CONFIG_OPTIONS and i + 1 < len(args):
            args[i + 1] = resolve_config(args[i + 1])
    return args


def _command_word(args: Sequence[str]) -> str | None:
    """The command of a raw command line: its first word that is neither an option nor ``--log_level``'s value."""
    previous = [None, *args][: len(args)]
    words = (a for before, a in zip(previous, args, strict=True) if not a.startswith("-") and before != "--log_level")
    return next(words, None)


def _take_log_level(args: list[str]) -> tuple[list[str], str | None]:
    """Remove every ``--log_level VALUE`` / ``--log_level=VALUE`` from ``args``; the last value wins."""
    rest, value, i = [], None, 0
    while i < len(args):
        if args[i] == "--log_level":
            if i + 1 >= len(args):
                raise InputError(f"--log_level needs a value: one of {', '.join(LEVELS)}")
            value, i = args[i + 1], i + 2
            continue
        if args[i].startswith("--log_level="):
            value = args[i].split("=", 1)[1]
        else:
            rest.append(args[i])
        i += 1
    return rest, value


class TerminationSignal:
    """SIGTERM handled like Ctrl-C (a batch scheduler's or ``kill``'s polite stop): it raises KeyboardInterrupt in
    the main thread, so every command stops the way it does on Ctrl-C (Lightning's graceful shutdown, nothing
    half-written under a real name) and the program exits 143 instead of 130. Lightning keeps calling this handler
    after its own SIGTERM notifier, which it installs during fit/validate/test/predict."""

    def __init__(self) -> None:
        self.received = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        self.received = True
        raise KeyboardInterrupt

    def __enter__(self) -> TerminationSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _dispatch(command: str | None, args: list[str], from_argv: bool) -> int:
    """Run ``command`` with the whole command line ``args`` (read from ``sys.argv`` when ``from_argv``)."""
    if command == "predict" and wants_clinical(args[1:]):  # DICOM studies from a PACS or a folder (issue 15)
        return run_tool(command, args[1:], CLINICAL_PREDICT)
    if command == "predict" and any(arg.split("=")[0] in ("--detect", "--detect_weights") for arg in args):
        from birads_calc.cli.trainer import BiradsCLI
        from birads_calc.detection.predict import predict_with_detection  # detect first, then rate each region

        spacing = _option_args(args, "--pixel_spacing")  # detection uses it, and so does the rating after it
        return predict_with_detection(args[1:], run_predict=lambda rest: BiradsCLI(args=["predict", *rest, *spacing]))
    if command in TRAINER_COMMANDS:
        from birads_calc.cli.trainer import BiradsCLI  # heavy imports (torch, lightning) only when needed

        cli = BiradsCLI(args=None if from_argv else args)  # LightningCLI reads sys.argv itself when given None
        if command == "fit":
            say_what_fit_wrote(cli.run_dir)
            if cli.config.fit.get("test_after_fit") and cli.run_dir is not None:
                BiradsCLI(args=test_after_fit_args(args, cli.run_dir))
        return 0
    if command in TOOLS:
        return run_tool(command, args[1:])
    _overview_parser().parse_args(args)  # prints help, or jsonargparse's error for an unknown command
    return 2


def test_after_fit_args(args: Sequence[str], run_dir: os.PathLike) -> list[str]:
    """``fit ... --test_after_fit true`` -> the ``test`` of the run it just trained (its last checkpoint, its run
    folder, the same configs and overrides; the fit's own ``--ckpt_path``/``--run_dir`` dropped)."""
    fit_only = ("--ckpt_path", "--run_dir", "--test_after_fit")
    kept, skip = [], False
    for arg in list(args)[1:]:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in fit_only:
            skip = "=" not in arg
            continue
        kept.append(arg)
    return ["test", *kept, "--run_dir", str(run_dir)]


def _option_args(args: Sequence[str], option: str) -> list[str]:
    """``[option, value]`` of the last ``option VALUE`` / ``option=VALUE`` in ``args`` (``[]`` when absent)."""
    found: list[str] = []
    for i, arg in enumerate(args):
        if arg.startswith(option + "="):
            found = [option, arg.split("=", 1)[1]]
        elif arg == option and i + 1 < len(args):
            found = [option, args[i + 1]]
    return found


def run_tool(command: str, args: Sequence[str], tool: tuple[str, str] | None = None) -> int:
    """Parse ``args`` with the tool's own parser (``tool``: (module, help), default ``TOOLS[command]``) and run it."""
    module_name, help_text = tool or TOOLS[command]
    module = importlib.import_module(module_name)
    parser = ArgumentParser(prog=f"birads-calc {command}", description=help_text)
    if tool is CLINICAL_PREDICT:
        from birads_calc.cli.predict_options import add_predict_options

        add_predict_options(parser)  # the options both predict paths share (cli/predict_options.py)
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


def say_what_fit_wrote(run_dir: Path | None) -> None:
    """fit's closing line: the run folder and the files a later command uses (rank 0 only)."""
    from birads_calc.cli.trainer import result
    from birads_calc.runs import CHECKPOINTS

    if run_dir is None:
        return
    names = [f"{CHECKPOINTS}/{p.name}" for p in sorted((run_dir / CHECKPOINTS).glob("*.ckpt"))]
    names += [name for name in ("config.yaml", "splits.csv") if (run_dir / name).is_file()]
    result(f"fit: wrote {run_dir}: {', '.join(names) or 'no checkpoint'}")


def _overview_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="birads-calc",
        description="Per-calcification BI-RADS classification on mammograms. "
        "Run 'birads-calc COMMAND --help' for the options of a command. Every command also takes "
        f"--log_level {{{','.join(LEVELS)}}} (default: ${LOG_ENV} or info); the trainer commands take --config "
        "NAME for a packaged config ('birads-calc configs' lists them).",
        version=birads_calc.__version__,
    )
    commands = parser.add_subcommands(dest="command")
    for name, help_text in {**TRAINER_COMMANDS, **{k: v[1] for k, v in TOOLS.items()}}.items():
        commands.add_subcommand(name, ArgumentParser(), help=help_text)
    return parser
