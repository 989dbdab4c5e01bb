"""Run folders ``runs/<config name>/<version>/`` and the newest best checkpoint of a config (DESIGN §7).

Every process of a multi-process run must agree on one folder. Three cases:

* Lightning launches the extra processes itself (``devices: 2`` on one machine): rank 0 picks the next free
  ``version_<k>`` and passes it to the processes it starts through ``BIRADS_RUN_DIR``.
* SLURM (``srun``) or ``torchrun`` start every process: the folder is named after the job step
  (``slurm_<job>_<step>``) or the rendezvous id (``torchrun_<id>``), which all processes see alike.
* ``--run_dir`` names the folder explicitly.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from birads_calc.errors import InputError

RUN_DIR_ENV = "BIRADS_RUN_DIR"
CHECKPOINTS = "checkpoints"
BEST, LAST = "best.ckpt", "last.ckpt"
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
_VERSION = re.compile(r"^version_(\d+)$")


class RunFolderError(InputError, RuntimeError):
    """No usable run folder or checkpoint."""


def config_name(config_paths: Sequence[str | os.PathLike] | None, command_line: Sequence[str] = ()) -> str:
    """Run group name: the stem of the method's config (``configs/proposed.yaml`` -> ``proposed``).

    The method's config is the first ``--config`` of the command line; later ones are overlays (``--config
    configs/mse.yaml --config configs/demo.yaml`` -> ``mse``), so an overlay never merges several methods into
    one folder. Without a command line, the last of ``config_paths`` (the files as parsed, includes first).
    """
    first = first_config_argument(command_line)
    if first is not None:
        return Path(first).stem
    paths = [p for p in (config_paths or []) if p is not None]
    return Path(str(paths[-1])).stem if paths else "default"


def first_config_argument(command_line: Sequence[str]) -> str | None:
    """The first ``--config FILE`` / ``--config=FILE`` / ``-c FILE`` naming a config file, or ``None``."""
    args = [str(a) for a in command_line]
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--config=") else None
        if arg in ("--config", "-c") and i + 1 < len(args):
            value = args[i + 1]
        if value is not None and Path(value).suffix.lower() in CONFIG_SUFFIXES:
            return value
    return None


def next_version(root: Path, name: str) -> Path:
    """``root/name/version_<k>`` with ``k`` one more than the highest existing version (0 when none)."""
    parent = root / name
    taken = [int(m.group(1)) for p in parent.glob("version_*") if (m := _VERSION.match(p.name))]
    return parent / f"version_{max(taken, default=-1) + 1}"


def process_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's global rank from the launcher's environment (0 when launched alone)."""
    env = os.environ if env is None else env
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if env.get(key, "").isdigit():
            return int(env[key])
    return 0


def _launcher_version(env: Mapping[str, str]) -> str | None:
    """A folder name every process of an externally launched multi-process job agrees on, or ``None``."""
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_JOB_ID"):
        return f"slurm_{env['SLURM_JOB_ID']}_{env.get('SLURM_STEP_ID', '0')}"
    run_id = env.get("TORCHELASTIC_RUN_ID", "")
    if run_id and run_id != "none":
        return f"torchrun_{run_id}"
    return None


def resolve_run_dir(
    root: Path, name: str, explicit: Path | None = None, env: Mapping[str, str] | None = None
) -> tuple[Path, bool]:
    """The run folder of a new ``fit`` (or a ``test`` of a foreign checkpoint) and whether it is a fresh choice.

    Args:
        root: the runs root (default ``runs``).
        name: the config name.
        explicit: ``--run_dir``; wins when given.
        env: the environment (default ``os.environ``).

    Returns:
        ``(folder, export)``: ``export`` is True when this process chose a new version that the processes
        Lightning is about to start must inherit (see :func:`export_run_dir`).

    Raises:
        RunFolderError: a non-zero rank started by a launcher that gives no shared job id.
    """
    env = os.environ if env is None else env
    if explicit is not None:
        return Path(explicit), False
    if process_rank(env) > 0 and env.get(RUN_DIR_ENV):
        return Path(env[RUN_DIR_ENV]), False  # started by rank 0's Lightning launcher
    launched = _launcher_version(env)
    if launched is not None:
        return root / name / launched, False
    if process_rank(env) > 0:
        raise RunFolderError(
            f"process of rank {process_rank(env)} cannot tell which run folder rank 0 chose: give every process the "
            "same --run_dir, or start them with torchrun --rdzv-id=<id> or srun (SLURM)"
        )
    return next_version(root, name), True


def export_run_dir(run_dir: Path) -> None:
    """Hand ``run_dir`` to the processes that Lightning's DDP launcher starts from this one."""
    os.environ[RUN_DIR_ENV] = str(Path(run_dir).resolve())


CheckpointKind = Literal["last", "best"]
CHECKPOINT_FILES: dict[str, str] = {"last": LAST, "best": BEST}


def newest_best_checkpoint(root: Path, name: str) -> Path:
    """The most recently written ``best.ckpt`` among ``root/name/*/checkpoints/`` (see :func:`newest_checkpoint`)."""
    return newest_checkpoint(root, name, "best")


def newest_checkpoint(root: Path, name: str, kind: CheckpointKind) -> Path:
    """The most recently written ``last.ckpt`` (the model after the last epoch) or ``best.ckpt`` (best validation
    QWK) among ``root/name/*/checkpoints/``: the one place ``--ckpt_path last|best`` and the default are resolved.

    Raises:
        RunFolderError: none exists, saying where it looked and what to do.
    """
    filename = CHECKPOINT_FILES[kind]
    found = [p for p in (root / name).glob(f"*/{CHECKPOINTS}/{filename}") if p.is_file()]
    if not found:
        others = trained_configs(root)
        seen = (
            "runs with checkpoints under " + str(root) + ": " + ", ".join(f"{n} ({k} run(s))" for n, k in others)
            + f". Use e.g. --config {others[0][0]}, or --ckpt_path {root}/{others[0][0]}/<version>/checkpoints/"
            f"{filename}"
            if others else f"no run with checkpoints under {root} at all: train one first "
            f"('birads-calc fit --config {name if name != 'default' else '<method>'}')"
        )  # fmt: skip
        raise RunFolderError(f"no {kind} checkpoint of config '{name}' ({root / name}/*/{CHECKPOINTS}/). {seen}")
    return max(found, key=lambda p: p.stat().st_mtime_ns)


def trained_configs(root: Path) -> list[tuple[str, int]]:
    """``(config name, runs with a checkpoint)`` for every config folder under the runs root, most runs first."""
    counts: dict[str, int] = {}
    for run in Path(root).glob(f"*/*/{CHECKPOINTS}"):
        if any(run.glob("*.ckpt")):
            counts[run.parent.parent.name] = counts.get(run.parent.parent.name, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def run_dir_of_checkpoint(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/x.ckpt``), or ``None`` for a foreign file."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name == CHECKPOINTS:
        return checkpoint.parent.parent
    return None


# --- one run per folder ---------------------------------------------------------------------------------------------
RUN_RECORD = "run.json"  # the run's identity, written by the fit that claims the folder (training/identity.py)
LOCK_FILE = ".fit.lock"
RUN_OUTPUTS = ("config.yaml", CHECKPOINTS, "metrics.json", "predictions.csv", "splits.csv")


def read_run_record(run_dir: Path) -> dict | None:
    """The folder's ``run.json``, or ``None`` when it has none.

    Raises:
        RunFolderError: the file exists but is not a JSON object.
    """
    path = Path(run_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFolderError(f"{path}: not a readable run record ({error}); was it edited by hand?") from None
    if not isinstance(record, dict):
        raise RunFolderError(f"{path}: not a run record (expected a JSON object)")
    return record


def holds_outputs(run_dir: Path) -> list[str]:
    """The names of a run's outputs present in the folder (config, checkpoints, metrics, predictions, split)."""
    run_dir = Path(run_dir)
    return [name for name in RUN_OUTPUTS if (run_dir / name).exists()]


def has_checkpoints(run_dir: Path) -> bool:
    """Whether the run folder holds any ``.ckpt`` file."""
    return any((Path(run_dir) / CHECKPOINTS).glob("*.ckpt"))


class FitLock:
    """An exclusive lock on a run folder for the life of one ``fit`` process (``fcntl.flock`` on ``.fit.lock``).

    The operating system releases it when the process ends, however it ends, so a crash never leaves a stale lock.
    Where ``fcntl`` does not exist (Windows) the lock is a no-op.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._file = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunFolderError` naming the folder and the process holding it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunFolderError(
                f"run folder {self.path.parent} is being written by another fit ({holder}); wait for it to end, "
                "or give this fit another --run_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def claim_new_version(root: Path, name: str) -> Path:
    """Create and return the next free ``root/name/version_<k>``; two processes never get the same folder."""
    while True:
        candidate = next_version(root, name)
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue  # another fit took it between the listing and the mkdir
