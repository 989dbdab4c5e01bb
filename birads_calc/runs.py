"""Run folders ``runs/<config name>/<version>/`` and the newest best checkpoint of a config (DESIGN §7).

Every process of a multi-process run must agree on one folder. Three cases:

* Lightning launches the extra processes itself (``devices: 2`` on one machine): rank 0 picks the next free
  ``version_<k>`` and passes it to the processes it starts through ``BIRADS_RUN_DIR``.
* SLURM (``srun``) or ``torchrun`` start every process: the folder is named after the job step
  (``slurm_<job>_<step>``) or the rendezvous id (``torchrun_<id>``), which all processes see alike.
* ``--run_dir`` names the folder explicitly.
"""

from __future__ import annotations

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


def _rank(env: Mapping[str, str]) -> int:
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
    if _rank(env) > 0 and env.get(RUN_DIR_ENV):
        return Path(env[RUN_DIR_ENV]), False  # started by rank 0's Lightning launcher
    launched = _launcher_version(env)
    if launched is not None:
        return root / name / launched, False
    if _rank(env) > 0:
        raise RunFolderError(
            f"process of rank {_rank(env)} cannot tell which run folder rank 0 chose: give every process the same "
            "--run_dir, or start them with torchrun --rdzv-id=<id> or srun (SLURM)"
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
        raise RunFolderError(
            f"no {kind} checkpoint of config '{name}' under {root / name}/*/{CHECKPOINTS}/{filename}: run "
            f"'birads-calc fit --config <{name}.yaml>' first, or pass --ckpt_path"
        )
    return max(found, key=lambda p: p.stat().st_mtime_ns)


def run_dir_of_checkpoint(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/x.ckpt``), or ``None`` for a foreign file."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name == CHECKPOINTS:
        return checkpoint.parent.parent
    return None
