"""birads-calc as a user installs it: a wheel that holds the configs, every import declared, one version, and the
README's commands run from an empty folder by the installed wheel alone (not the clone)."""

from __future__ import annotations

import ast
import email
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import birads_calc
from birads_calc.cli import main, resolve_config_options
from birads_calc.errors import InputError
from birads_calc.packaged_configs import config_dir, config_names
from birads_calc.runs import config_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "birads_calc"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# what a tiny run needs on top of the README's `--config proposed --config demo` (tests/training_helpers.py)
TINY = ["--data.window", "64", "--data.stride", "32", "--data.batch_size", "4", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--bootstrap_resamples", "50"]  # fmt: skip


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built as `pip wheel` builds it, from a copy of its sources: no build/ folder is left in the
    clone, and the clone's top-level configs/ link cannot stand in for the packaged files."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "birads_calc", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
               "-w", str(dist), str(source)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = dist.glob("birads_calc-*.whl")
    return built


def test_the_wheel_holds_every_config_one_version_and_the_script(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = sorted(p.relative_to(ROOT).as_posix() for p in (PACKAGE / "configs").rglob("*.yaml"))
    assert len(configs) >= 16 and {"birads_calc/configs/proposed.yaml", "birads_calc/configs/demo.yaml"} <= set(configs)
    assert set(configs) <= names  # methods, alpha sweep, base/paper.yaml, demo, and any config added later
    assert not any(n.startswith(("configs/", "tests/", "bench/")) for n in names)
    info = zipfile.ZipFile(wheel)
    dist_info = f"birads_calc-{birads_calc.__version__}.dist-info"
    metadata = email.message_from_bytes(info.read(f"{dist_info}/METADATA"))
    assert metadata["Version"] == birads_calc.__version__  # one source: birads_calc.__version__
    assert "sweeps" in metadata.get_all("Provides-Extra")
    assert "birads-calc = birads_calc.cli:main" in info.read(f"{dist_info}/entry_points.txt").decode()


def _optional_imports(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``try: ... except ImportError`` (the code runs without the package)."""
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError") for h in node.handlers
        ):
            optional |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return optional


def test_every_imported_package_is_declared():
    # a package the code needs is a dependency; one it can do without (imported under except ImportError) an extra
    def names(specs):
        return {normalized(re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0]) for d in specs}

    declared = names(PYPROJECT["project"]["dependencies"])
    extras = names(d for group in PYPROJECT["project"]["optional-dependencies"].values() for d in group)
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        optional = _optional_imports(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            allowed = declared | extras if id(node) in optional else declared
            for top in {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - {"birads_calc"}:
                if not {normalized(d) for d in providers.get(top, [])} & allowed:
                    undeclared.setdefault(top, str(path.relative_to(ROOT)))
    assert undeclared == {}, (
        f"imported but not in pyproject.toml's dependencies (or, if optional, an extra): {undeclared}"
    )


def test_version_is_written_once():
    assert PYPROJECT["project"]["dynamic"] == ["version"] and "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "birads_calc.__version__"}
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0


# --- configs by name --------------------------------------------------------------------------------------------------
def printed(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit):
        main(["fit", *args, "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)


def test_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert {"proposed", "demo", "mc", "base/paper", "alpha/alpha_0.1", "alpha/sweep"} <= set(config_names())
    cfg = printed(capsys, "--config", "alpha/alpha_0.1", "--config=demo")
    assert cfg["model"]["alpha"] == 0.1 and cfg["model"]["loss"] == "mamse"  # alpha_0.1 -> proposed -> base/paper
    assert cfg["trainer"]["max_epochs"] == 10 and cfg["model"]["backbone"] == "test_resnet"  # the demo overlay
    args = resolve_config_options(["fit", "-c", "alpha/alpha_0.1.yaml", "--config", "demo"])
    assert args[2] == str(config_dir() / "alpha" / "alpha_0.1.yaml")
    assert config_name([], args) == "alpha_0.1"  # the run folder is still named after the first --config


def test_a_file_given_by_path_wins_and_a_missing_one_names_the_packaged(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("proposed.yaml").write_text("model:\n  alpha: 0.7\n")  # the user's own file of the same name
    assert printed(capsys, "--config", "proposed.yaml")["model"]["alpha"] == 0.7
    assert printed(capsys, "--config", "proposed")["model"]["alpha"] == 0.2  # the bare name: the packaged one
    with pytest.raises(InputError, match="configs/mc.yaml: no such file; the packaged one is --config mc"):
        resolve_config_options(["fit", "--config", "configs/mc.yaml"])
    with pytest.raises(InputError, match="the packaged one is --config alpha/alpha_0.1"):
        resolve_config_options(["fit", "--config=configs/alpha/alpha_0.1.yaml"])
    inline = ["fit", "--config", "trainer:\n  max_epochs: 1", "--config", "x" * 5000]  # not names: left to jsonargparse
    assert resolve_config_options(inline) == inline
    assert main(["test", "--config", "configs/mc.yaml"]) == 2
    assert "birads-calc test: error: --config configs/mc.yaml: no such file" in capsys.readouterr().err


def test_configs_lists_and_copies(tmp_path, capsys):
    assert main(["configs"]) == 0
    listing = capsys.readouterr().out
    for name in config_names():
        assert re.search(rf"^{re.escape(name)}\s+\S", listing, re.M), name  # each name with its description
    assert main(["configs", "--copy", str(tmp_path / "mine")]) == 0
    copies = sorted(p.relative_to(tmp_path / "mine") for p in (tmp_path / "mine").rglob("*.yaml"))
    assert copies == sorted(p.relative_to(config_dir()) for p in config_dir().rglob("*.yaml"))
    capsys.readouterr()
    (tmp_path / "mine" / "base" / "paper.yaml").write_text(
        (tmp_path / "mine" / "base" / "paper.yaml").read_text().replace("max_epochs: 50", "max_epochs: 7")
    )  # an edit in the copy reaches the configs that include it
    cfg = printed(capsys, "--config", str(tmp_path / "mine" / "alpha" / "alpha_0.3.yaml"))
    assert cfg["model"]["alpha"] == 0.3 and cfg["trainer"]["max_epochs"] == 7
    assert main(["configs", "--copy", str(tmp_path / "mine")]) == 2  # never over the user's edits unasked
    assert "pass --overwrite true" in capsys.readouterr().err
    assert main(["configs", "--copy", str(tmp_path / "mine"), "--overwrite", "true"]) == 0
    assert "max_epochs: 50" in (tmp_path / "mine" / "base" / "paper.yaml").read_text()


def test_the_repository_configs_link_is_the_packaged_folder():
    assert (ROOT / "configs").resolve() == config_dir().resolve()


# --- installed from the wheel, run from an empty folder ---------------------------------------------------------------
@pytest.mark.slow
def test_the_installed_wheel_runs_the_readme_from_an_empty_folder(wheel, tmp_path):
    """pip install --no-deps of the wheel into a folder of its own (the venv supplies the dependencies), then the
    README's quick start with the packaged configs by name: synth, a tiny fit and test, nothing of the clone used."""
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
               str(wheel)]  # fmt: skip
    done = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline"}
    script = site / "bin" / "birads-calc"

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(script), *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-4000:])
        return done

    where = subprocess.run([sys.executable, "-c", "import birads_calc; print(birads_calc.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(site) and not Path(where).is_relative_to(ROOT)  # the wheel, not the clone
    assert run("--version").stdout.strip() == f"birads-calc {birads_calc.__version__}"

    synth = run("synth", "--out", "data/demo", "--patients", "8", "--workers", "1", "--image_size", "320", "256",
                "--pixel_spacing", "0.25")  # fmt: skip
    assert "synth: rendering:" in synth.stderr and "data/demo/manifest.csv" in synth.stdout
    fit = run("fit", "--config", "proposed", "--config", "demo", *TINY)  # data.manifest: demo's data/demo/...
    run_dir = work / "runs" / "proposed" / "version_0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "config.yaml").is_file()
    assert "crop cache: decoding:" in fit.stderr  # the cache build inside fit shows its progress
    assert f"fit: wrote {Path('runs/proposed/version_0')}: checkpoints/" in fit.stdout  # fit's closing line
    run("test", "--config", "proposed", "--config", "demo", *TINY)
    metrics = (run_dir / "metrics.json").read_text()
    assert '"qwk"' in metrics and not (work / "configs").exists()
