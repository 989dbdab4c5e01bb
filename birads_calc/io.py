"""Atomic file output: a crash never leaves a half-written file that looks complete; CSV cells a spreadsheet
would run as formulas are written as text.

Everything birads-calc writes for a user (manifests, predictions, metrics, masks, DICOMs, cache indexes) goes
through :func:`atomic_path`: the content is written to a temporary file in the same folder and renamed into place
only once complete (``os.replace`` is atomic on POSIX and Windows within one filesystem).

CSV text cells that start with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return are formulas to Excel,
LibreOffice and Google Sheets (a ``lesion_id`` of ``=HYPERLINK(...)`` would run when a reader opens
predictions.csv). :func:`write_csv` prefixes such a cell with an apostrophe, which spreadsheets take as "this is
text" and do not display (OWASP's CSV-injection advice); numbers, also negative ones (``-0.5``), are left alone.
:func:`read_csv` and :func:`unescape_cell` undo it, so the project's own readers get the original text back.
"""

from __future__ import annotations

import csv
import errno
import glob
import json
import os
import re
import shutil
import signal
import socket
import stat
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


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a cell starting so is a formula to a spreadsheet
TEXT_MARK = "'"  # spreadsheets read a leading apostrophe as "text follows" and hide it
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _formula_like(text: str) -> bool:
    """Whether ``text``, after any leading apostrophes, starts like a formula (a plain number such as ``-0.5`` does
    not). Apostrophes are looked through so that escaping stays reversible for text that already starts with one."""
    rest = text.lstrip(TEXT_MARK)
    return rest.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(rest)


def escape_cell(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet shows as text: ``'=1+2`` for ``=1+2``; numbers and other text unchanged.

    Example:
        >>> escape_cell("=HYPERLINK(1)"), escape_cell("-0.5"), escape_cell(-0.5), escape_cell("P001")
        ("'=HYPERLINK(1)", '-0.5', -0.5, 'P001')
    """
    return TEXT_MARK + value if isinstance(value, str) and _formula_like(value) else value


def unescape_cell(text: str) -> str:
    """Undo :func:`escape_cell`: ``'=1+2`` -> ``=1+2``; every other text is returned as it is."""
    if text.startswith(TEXT_MARK) and _formula_like(text[1:]):
        return text[1:]
    return text


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``rows`` (dicts; missing keys become empty cells, ``None`` too) to a CSV atomically; text cells that a
    spreadsheet would take for a formula get a leading apostrophe (:func:`escape_cell`)."""
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else escape_cell(row.get(c)) for c in columns})
    return path


def read_csv(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV written by :func:`write_csv`, with every cell as it was before escaping."""
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [{k: unescape_cell(v) if isinstance(v, str) else v for k, v in row.items()} for row in reader]
        return list(reader.fieldnames or []), rows


def not_a_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as an input file, or ``None`` when it is a regular file (or a link to one).

    Names the real cause (``not found``, ``is a folder``, ``is a symbolic link loop``, ``is a named pipe (FIFO)``,
    ``is a device``, ...) and never opens the path: opening a FIFO would block until someone writes to it.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a symbolic link loop (a link that leads back to itself), not a file"
        if error.errno == errno.ENOTDIR:
            return "not found (a part of the path is a file, not a folder)"
        if error.errno in (errno.ENOENT, errno.ENAMETOOLONG):
            return "file not found"
        return f"cannot be read ({error.strerror})"
    except ValueError:  # a NUL byte in the path
        return "is not a valid path (it holds a NUL byte)"
    if stat.S_ISREG(mode):
        return None
    kinds = {
        stat.S_ISDIR: "is a folder, not a file",
        stat.S_ISFIFO: "is a named pipe (FIFO), not a file; give the file itself",
        stat.S_ISCHR: "is a device (e.g. /dev/null), not a file",
        stat.S_ISBLK: "is a block device, not a file",
        stat.S_ISSOCK: "is a socket, not a file",
    }
    return next((text for test, text in kinds.items() if test(mode)), "is not a regular file")


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
def staged_outputs(dest: str | os.PathLike, owned: Iterable[str] = (), merge: Iterable[str] = ()) -> Iterator[Path]:
    """Write a command's whole output set at once: yield an empty staging folder beside ``dest``; when the block
    finishes without error, move everything in it into ``dest`` (replacing entries of the same name) with SIGINT and
    SIGTERM held back, and remove the ``owned`` names of ``dest`` the new set does not contain (a previous run's
    file that this run no longer writes). An error or interruption inside the block leaves ``dest`` as it was.

    Args:
        dest: the output folder (created if missing).
        owned: names in ``dest`` that belong to this command's output set (e.g. ``alpha.png``).
        merge: folders of ``dest`` shared with other outputs (e.g. ``masks``, where each format has its own
            subfolder): their staged files are moved in one by one instead of the folder being replaced whole.

    A staging folder left by a killed process (its name holds the host and process id) is removed by the next
    ``staged_outputs`` of the same ``dest`` on that host.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> with staged_outputs(out) as stage:
        ...     _ = (stage / "a.txt").write_text("new")
        >>> (out / "a.txt").read_text()
        'new'
    """
    dest = Path(os.path.abspath(dest))  # "." has no name to put in the staging folder's
    dest.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_stages(dest)
    owner = f"{os.getpid()}-{socket.gethostname()}"
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{owner}.", suffix=".partial", dir=dest.parent))
    try:
        yield stage
        with signals_held():
            _commit(stage, dest, owned, set(merge))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _remove_abandoned_stages(dest: Path) -> None:
    """Delete staging folders of ``dest`` whose process (on this host) is gone; others may still be writing."""
    prefix, host = f".{dest.name}.", socket.gethostname()
    for folder in dest.parent.glob(f".{glob.escape(dest.name)}.*.partial"):
        owner = folder.name[len(prefix) : -len(".partial")].rsplit(".", 1)[0]  # "<pid>-<host>"
        pid, _, folder_host = owner.partition("-")
        if pid.isdigit() and folder_host == host and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _commit(stage: Path, dest: Path, owned: Iterable[str], merge: set[str] = frozenset()) -> None:
    """Move the staged entries onto ``dest`` (a folder replaces a folder whole, or is merged file by file when named
    in ``merge``) and drop stale owned names. Merged folders go first, plain files last."""
    new = {p.name for p in stage.iterdir()}
    entries = sorted(stage.iterdir(), key=lambda p: (p.name not in merge, p.is_file(), p.name))
    for entry in entries:
        target = dest / entry.name
        if entry.name in merge and entry.is_dir():
            _merge(entry, target)
        elif target.is_dir() and not target.is_symlink():
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


def _merge(source: Path, target: Path) -> None:
    """Move every file under ``source`` to the same place under ``target``, creating folders as needed."""
    for folder, _, names in os.walk(source):
        into = target / Path(folder).relative_to(source)
        into.mkdir(parents=True, exist_ok=True)
        for name in names:
            os.replace(Path(folder, name), into / name)
