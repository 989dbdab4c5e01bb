"""The ``birads-calc`` program: one help for trainer commands and data tools, clear errors."""

import subprocess
import sys

import pytest

from birads_calc.cli import TOOLS, TRAINER_COMMANDS, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "birads_calc", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in [*TRAINER_COMMANDS, *TOOLS]:
        assert command in result.stdout


def test_console_script_is_installed():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "birads-calc"]
    assert script.value == "birads_calc.cli:main"


def test_fit_help_is_lightning_cli():
    result = run_cli("fit", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--config", "--trainer.max_epochs", "--model", "--data", "--print_config"):
        assert option in result.stdout


def test_predict_help_points_to_the_dicom_path_and_its_options():
    """An imaging team reading ``predict --help`` finds the DICOM path, whose options its own parser lists."""
    manifest_help = run_cli("predict", "--help")
    assert manifest_help.returncode == 0, manifest_help.stderr
    text = " ".join(manifest_help.stdout.split())  # wrapped at any width
    assert "--dicomweb URL" in text and "predict --dicom_dir DIR --help" in text
    dicom_help = run_cli("predict", "--dicom_dir", "DIR", "--help")
    assert dicom_help.returncode == 0, dicom_help.stderr
    for option in ("--dicomweb", "--study", "--query", "--cad_sr", "--credentials", "--ca_bundle", "--detect"):
        assert option in dicom_help.stdout


def test_unknown_command_gives_jsonargparse_message():
    result = run_cli("frobnicate")
    assert result.returncode != 0
    assert "invalid choice: 'frobnicate'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_fit_option_gives_clear_message():
    result = run_cli("fit", "--no_such_option", "1")
    assert result.returncode != 0
    assert "no_such_option" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_command_shows_usage_not_traceback(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code != 0
    assert "birads-calc" in capsys.readouterr().err


def test_a_user_error_gives_a_message_and_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    """The error boundary: a project error (bad input) prints one line and exits 2; BIRADS_CALC_DEBUG=1 shows its
    traceback; an OS error names its file; an unexpected error (a bug) is not dressed up as the user's fault."""
    import birads_calc.data.manifest as manifest

    monkeypatch.delenv("BIRADS_CALC_DEBUG", raising=False)
    (tmp_path / "m.csv").write_text("patient_id,image,mask\n")
    prepare = ["prepare", str(tmp_path / "m.csv"), "--cache_dir", str(tmp_path / "cache")]
    assert main(prepare) == 2
    err = capsys.readouterr().err
    assert "birads-calc prepare: error:" in err and "no data rows" in err and str(tmp_path / "m.csv") in err
    assert "Traceback" not in err
    monkeypatch.setenv("BIRADS_CALC_DEBUG", "1")
    with pytest.raises(manifest.ManifestError):
        main(prepare)
    monkeypatch.delenv("BIRADS_CALC_DEBUG")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "m.csv"))

    monkeypatch.setattr(manifest, "read_manifest", denied)
    assert main(["check-data", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert f"Permission denied: {tmp_path / 'm.csv'}" in err and "Traceback" not in err

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(manifest, "read_manifest", broken)
    with pytest.raises(RuntimeError, match="simulated bug"):
        main(["check-data", str(tmp_path / "m.csv")])


def test_ctrl_c_in_a_tool_exits_130_and_says_what_it_left(tmp_path, capsys, monkeypatch):
    import birads_calc.data.cache as cache

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "ensure_cache", interrupted)
    (tmp_path / "m.csv").write_text("patient_id,image,mask\n")
    monkeypatch.setattr(cache, "read_manifest", lambda *a, **k: [], raising=False)
    assert main(["prepare", str(tmp_path / "m.csv"), "--cache_dir", str(tmp_path / "c")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "never taken for a complete one" in err and "Traceback" not in err
