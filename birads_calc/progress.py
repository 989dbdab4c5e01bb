"""What a long command tells its user while it runs: progress of loops, and the one logging setup of the CLI.

Wrap any loop over a known number of items in :func:`track`::

    from birads_calc.progress import track

    for path in track(images, "prepare: decoding", unit="image"):
        decode(path)

* On a terminal (stderr is a TTY) it draws a rich progress bar: done/total, elapsed, time left and seconds per
  item. The bar disappears when the loop ends.
* Anywhere else (a log file, CI, a test capturing stderr) it writes plain lines: one when the loop starts, then at
  most one every :data:`LINE_INTERVAL_S` seconds, so a long job shows it is alive without flooding a log.
* Either way, a loop that finishes ends with one line: ``prepare: decoding: 250 images in 41.2 s (0.16 s/image)``.
  A loop left early (an error, ``break``) says nothing more; the error speaks for itself.

Everything goes to the ``birads_calc`` logger at INFO level, on stderr, never stdout (stdout is for results), so
progress shows exactly when birads-calc's info messages do: the CLI turns them on with :func:`configure_logging`
(``--log_level warning`` or ``BIRADS_CALC_LOG=warning`` silences both); a program using birads-calc as a library
sees them after ``logging.basicConfig(level=logging.INFO)`` and otherwise nothing. Call :func:`track` in the
process that owns the loop (the main process, or rank 0), not in pool workers.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

LOGGER = "birads_calc"
LEVELS = ("debug", "info", "warning", "error")
LINE_INTERVAL_S = 30.0  # plain-line mode: the most one loop writes is one line per this many seconds

T = TypeVar("T")
log = logging.getLogger(f"{LOGGER}.progress")


def track(items: Iterable[T], description: str, *, total: int | None = None, unit: str = "item") -> Iterator[T]:
    """Yield ``items`` unchanged, showing how far the loop has got (module docstring).

    Args:
        items: what the loop goes over (consumed lazily; a generator is fine).
        description: what is being done, starting with the command: ``"synth: rendering"``.
        total: the number of items, when ``items`` has no ``len()``; without either, only the count shows.
        unit: what one item is, singular (``"image"``); an ``s`` is added for the plural.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not log.isEnabledFor(logging.INFO):
        yield from items
        return
    start = time.perf_counter()
    count = 0
    if _on_terminal():
        count = yield from _with_bar(items, description, total, unit)
    else:
        count = yield from _with_lines(items, description, total, unit, start)
    log.info(done_line(description, count, unit, time.perf_counter() - start))


def done_line(description: str, count: int, unit: str, seconds: float) -> str:
    """``"<description>: 250 images in 41.2 s (0.16 s/image)"``: the one line a finished loop leaves."""
    rate = f" ({seconds / count:.2g} s/{unit})" if count else ""
    return f"{description}: {_count(count, unit)} in {seconds:.1f} s{rate}"


def _count(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def _on_terminal() -> bool:
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def _with_lines(items: Iterable[T], description: str, total: int | None, unit: str, start: float):
    """Plain lines: at the start and at most every LINE_INTERVAL_S seconds; returns the count."""
    log.info(f"{description}: 0/{_count(total, unit)}" if total is not None else f"{description}: started")
    count, last = 0, start
    for item in items:
        yield item
        count += 1
        now = time.perf_counter()
        if now - last >= LINE_INTERVAL_S and (total is None or count < total):
            last = now
            log.info(_status(description, count, total, unit, now - start))
    return count


def _status(description: str, count: int, total: int | None, unit: str, elapsed: float) -> str:
    per = elapsed / count
    if total is None:
        return f"{description}: {_count(count, unit)} ({elapsed:.0f} s, {per:.2g} s/{unit})"
    left = per * (total - count)
    return f"{description}: {count}/{_count(total, unit)} ({elapsed:.0f} s, {per:.2g} s/{unit}, ~{left:.0f} s left)"


def _with_bar(items: Iterable[T], description: str, total: int | None, unit: str):
    """A rich progress bar on stderr, removed when the loop ends; returns the count."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{unit}s"),
        TimeElapsedColumn(),
        TextColumn("elapsed,"),
        TimeRemainingColumn(),
        TextColumn("left,"),
        TextColumn("{task.fields[per]}"),
    ]
    count, start = 0, time.perf_counter()
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total, per="")
        for item in items:
            yield item
            count += 1
            per = (time.perf_counter() - start) / count
            bar.update(task, advance=1, per=f"{per:.2g} s/{unit}")
    return count


# --- logging ---------------------------------------------------------------------------------------------------------
class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a progress bar's redirect, a test's capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler.__init__ assigns it; sys.stderr always wins
        pass


class _Formatter(logging.Formatter):
    """``birads-calc: message`` for info, ``birads-calc: warning: message`` above, the logger's name for debug."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno == logging.INFO:
            return f"birads-calc: {message}"
        if record.levelno < logging.INFO:
            return f"birads-calc: debug: {record.name}: {message}"
        return f"birads-calc: {record.levelname.lower()}: {message}"


def configure_logging(level: str | int = "info") -> None:
    """Send birads-calc's log records at ``level`` and above to stderr, once per process (the CLI calls it).

    Only the ``birads_calc`` logger is touched: Lightning, W&B and the others keep their own settings. Records still
    propagate, so a program's own root handler (or pytest's ``caplog``) sees them too.

    Raises:
        ValueError: ``level`` is not one of :data:`LEVELS` (or a logging level number).
    """
    if isinstance(level, str):
        if level.lower() not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
        level = getattr(logging, level.upper())
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter())
        logger.addHandler(handler)
