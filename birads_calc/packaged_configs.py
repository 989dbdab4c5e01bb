"""The configs that ship inside the package (``birads_calc/configs/``), found by name; ``birads-calc configs``.

The paper's method configs, the alpha sweep, the shared recipe ``base/paper.yaml`` and the CPU overlay ``demo``
are package data, so they exist wherever birads-calc is installed, not only in a clone (the repository's
top-level ``configs/`` is a link to this folder). A config is named by its path under the folder without the
suffix: ``proposed``, ``demo``, ``alpha/alpha_0.1``, ``base/paper``. The command line turns ``--config NAME``
into the packaged file before LightningCLI reads it (``birads_calc.cli``); a path to a file still works as
before, and wins over a name. Relative includes inside the files (``config: base/paper.yaml``) resolve next to
the packaged file, as in the repository.

``birads-calc configs`` lists the names with each file's first comment line; ``birads-calc configs --copy DIR``
writes editable copies (with their includes, so the copies stay self-contained).
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from birads_calc.errors import InputError
from birads_calc.io import atomic_path

SUFFIXES = (".yaml", ".yml")


def config_dir() -> Path:
    """The folder of the packaged configs (a real folder: the package is installed as files, not zipped)."""
    return Path(str(resources.files("birads_calc") / "configs"))


def config_files() -> list[Path]:
    """Every packaged config file, relative to :func:`config_dir`, sorted."""
    root = config_dir()
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file())


def config_names() -> list[str]:
    """Every packaged config's name (``alpha/alpha_0.1``, ``base/paper``, ``demo``, ``proposed``, ...)."""
    return [p.with_suffix("").as_posix() for p in config_files()]


def find_config(name: str | os.PathLike) -> Path | None:
    """The packaged file named ``name`` (``proposed``, ``proposed.yaml``, ``alpha/alpha_0.1``), else ``None``."""
    text = Path(name).as_posix()
    if text.startswith(("/", "../")) or "/../" in text:
        return None  # a path of the user's, never a name
    stem = text[: -len(Path(text).suffix)] if Path(text).suffix in SUFFIXES else text
    return next((config_dir() / f"{stem}{s}" for s in SUFFIXES if _is_file(config_dir() / f"{stem}{s}")), None)


def resolve_config(value: str) -> str:
    """The value of a ``--config`` option as LightningCLI should read it.

    An existing file (or anything that is not a config's name, such as an inline YAML string) is returned as
    given; a packaged config's name becomes its file. A path that looks like a config file but exists neither
    here nor among the packaged configs is refused, naming the packaged ones.

    Raises:
        InputError: ``value`` names a config file that does not exist.
    """
    if "\n" in value or _is_file(value):
        return value
    found = find_config(value)
    if found is not None:
        return str(found)
    if Path(value).suffix in SUFFIXES:
        name = _packaged_name_in(Path(value))
        hint = f"; the packaged one is --config {name}" if name else ""
        raise InputError(
            f"--config {value}: no such file{hint}. Packaged configs (name them without a path, e.g. "
            f"--config proposed): {', '.join(config_names())}; 'birads-calc configs --copy DIR' writes editable "
            "copies"
        )
    return value


def _is_file(value: str | os.PathLike) -> bool:
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # a name too long for a path, or a NUL: not a file
        return False


def _packaged_name_in(path: Path) -> str | None:
    """The packaged config a missing path meant (``configs/alpha/alpha_0.1.yaml`` -> ``alpha/alpha_0.1``)."""
    parts = path.with_suffix("").parts
    names = ("/".join(parts[i:]) for i in range(len(parts)))
    return next((name for name in names if find_config(name)), None)


def description(name: str) -> str:
    """The first comment line of a packaged config (what it is)."""
    path = find_config(name)
    for line in path.read_text().splitlines() if path else ():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def copy_configs(dest: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Write every packaged config into ``dest`` (same layout, so includes resolve) and return the written files.

    Raises:
        InputError: ``dest`` is a file, or a config of the same name exists there and ``overwrite`` is false
            (edited copies are never replaced without being asked).
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise InputError(f"--copy {dest}: is a file; give the folder to write the configs into")
    names = config_files()
    existing = [str(dest / n) for n in names if (dest / n).exists()]
    if existing and not overwrite:
        raise InputError(
            f"--copy {dest}: {len(existing)} config(s) exist there already (e.g. {existing[0]}); "
            "pass --overwrite true to replace them, or choose another folder"
        )
    for name in names:
        with atomic_path(dest / name) as tmp:  # each copy whole or not at all
            shutil.copyfile(config_dir() / name, tmp)
    return [dest / n for n in names]


# --- the `configs` command -----------------------------------------------------------------------------------------
def configure_parser(parser) -> None:
    """Options of ``birads-calc configs``."""
    parser.add_argument("--copy", type=str | None, default=None, help="Write editable copies into this folder.")
    parser.add_argument("--overwrite", type=bool, default=False, help="--copy: replace configs already there.")


def main(cfg) -> int:
    """``birads-calc configs``: list the packaged configs (stdout), or ``--copy DIR`` them."""
    if cfg.copy is None:
        names = config_names()
        width = max(len(n) for n in names)
        for name in names:
            print(f"{name:<{width}}  {description(name)}")
        print(f"\nUse one by name (birads-calc fit --config proposed --config demo); files in {config_dir()}")
        return 0
    written = copy_configs(cfg.copy, cfg.overwrite)
    print(f"wrote {len(written)} configs to {cfg.copy} (use them by path, e.g. --config {written[0]})")
    return 0
