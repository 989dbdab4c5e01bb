"""The package layout stays true: imports flow one way, from the foundations up to the command line.

Every ``import``/``from ... import`` of ``birads_calc`` inside the package (module level or inside a function) is
read from the source with :mod:`ast`. A module may import its own stage and any stage of a lower level; a higher
level, or another stage of its own level, is a layering error. A new top-level module or folder must be given a
level here (and in docs/architecture.md) before it can land.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import birads_calc

PACKAGE = Path(birads_calc.__file__).parent

# stage (first name under birads_calc) -> level; docs/architecture.md draws the same order.
LEVELS: dict[str, int] = {
    "__init__": 0,
    "categories": 0,
    "errors": 0,
    "io": 0,
    "packaged_configs": 0,  # the configs shipped in the wheel, found by name
    "progress": 0,  # progress bars/lines and the CLI's logging setup
    "runs": 0,
    "data": 1,
    "metrics": 1,
    "losses": 1,
    "training": 2,
    "detection": 2,  # breast, specks, regions without masks (issue 14)
    "inference": 3,
    "reporting": 3,
    "clinical": 4,  # DICOM in and out (PACS, SEG, SR): everything below, never the cli
    "cli": 5,
    "__main__": 6,  # `python -m birads_calc` runs the cli
}
FOUNDATIONS = {name for name, level in LEVELS.items() if level == 0}


def _stage(module: str) -> str:
    """``birads_calc.data.cache`` -> ``data``; ``birads_calc`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    relative = path.relative_to(package.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every absolute import of ``birads_calc`` in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("birads_calc")]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; use the absolute path"
            if node.module and node.module.startswith("birads_calc"):
                # `from birads_calc import training` imports the stage named after the dot
                names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "birads_calc" else []
                found += [(node.lineno, name) for name in names or [node.module]]
    return found


def _package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def layering_errors(files: list[Path], package: Path = PACKAGE) -> list[str]:
    errors = []
    for path in files:
        own = _stage(_module_name(path, package))
        for line, imported in _imports(path):
            other = _stage(imported)
            if other == own or (own in FOUNDATIONS and other in FOUNDATIONS and other != "__init__"):
                continue
            if LEVELS[other] >= LEVELS[own]:
                where = f"{path.relative_to(package.parent)}:{line}"
                errors.append(f"{where}: {own} (level {LEVELS[own]}) imports {imported} (level {LEVELS[other]})")
    return errors


def test_every_stage_has_a_level():
    stages = {_stage(_module_name(p)) for p in _package_files()}
    assert stages - set(LEVELS) == set(), "new top-level module or folder: give it a level in LEVELS"
    assert stages == set(LEVELS), f"LEVELS names stages that do not exist: {set(LEVELS) - stages}"


def test_imports_flow_from_the_foundations_up():
    assert layering_errors(_package_files()) == []


def test_each_stage_folder_says_what_it_owns():
    for folder in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        docstring = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert docstring and len(docstring.split()) >= 20, f"{folder.name}/__init__.py needs a docstring paragraph"


@pytest.mark.parametrize(
    ("source", "stage", "expected"),
    [
        ("from birads_calc.cli.trainer import BiradsCLI\n", "training", True),  # upward
        ("from birads_calc.reporting import reports\n", "inference", True),  # sideways, same level
        ("import birads_calc.training.model\n", "data", True),
        ("def f():\n    from birads_calc.training.model import BiradsClassifier\n", "metrics", True),  # lazy
        ("from birads_calc.data.roi import crop\n", "training", False),  # downward
        ("from birads_calc.training import model\n", "training", False),  # own stage
        ("from birads_calc import categories\n", "reporting", False),
    ],
)
def test_the_check_catches_what_runs_against_the_order(tmp_path, source, stage, expected):
    probe = tmp_path / "birads_calc" / stage / "probe.py"  # a module of that stage in a stand-in package tree
    probe.parent.mkdir(parents=True)
    probe.write_text(source)
    assert bool(layering_errors([probe], package=tmp_path / "birads_calc")) is expected
