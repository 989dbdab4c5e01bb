"""Atomic file output: a crash never leaves a half-written file that looks complete.

Everything birads-calc writes for a user (manifests, predictions, metrics, masks, DICOMs, cache indexes) goes
through :func:`atomic_path`: the content is written to a temporary file in the same folder and renamed into place
only once complete (``os.replace`` is atomic on POSIX and Windows within one filesystem).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block finishes without error.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
        >>> with atomic_path(out) as tmp:
        ...     np.save(tmp, np.zeros(3))
        >>> out.exists()
        True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".partial" + "".join(path.suffixes), dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); outputs should get the permissions an ordinary open() would give.
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``rows`` (dicts; missing keys become empty cells, ``None`` too) to a CSV atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return path


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the block (a few renames), then deliver any that arrived.

    Only the main thread can block signals for the process; elsewhere (or on platforms without
    ``pthread_sigmask``) the block runs unprotected.
    """
    can_block = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if not can_block:
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def staged_outputs(dest: str | os.PathLike, owned: Iterable[str] = ()) -> Iterator[Path]:
    """Write a command's whole output set at once: yield an empty staging folder beside ``dest``; when the block
    finishes without error, move everything in it into ``dest`` (replacing entries of the same name) with SIGINT and
    SIGTERM held back, and remove the ``owned`` names of ``dest`` the new set does not contain (a previous run's
    file that this run no longer writes). An error or interruption inside the block leaves ``dest`` as it was.

    Args:
        dest: the output folder (created if missing).
        owned: names in ``dest`` that belong to this command's output set (e.g. ``alpha.png``).

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> with staged_outputs(out) as stage:
        ...     _ = (stage / "a.txt").write_text("new")
        >>> (out / "a.txt").read_text()
        'new'
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        yield stage
        with signals_held():
            _commit(stage, dest, owned)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _commit(stage: Path, dest: Path, owned: Iterable[str]) -> None:
    """Move the staged entries onto ``dest`` (a folder replaces a folder whole) and drop stale owned names."""
    new = {p.name for p in stage.iterdir()}
    for entry in sorted(stage.iterdir()):
        target = dest / entry.name
        if target.is_dir() and not target.is_symlink():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(entry, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(entry, target)
    for name in set(owned) - new:
        stale = dest / name
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
