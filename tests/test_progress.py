"""Progress and messages: a bar on a terminal, a few plain lines elsewhere, everything on stderr; results on stdout.

The loops of synth, prepare (and the cache build inside fit/test/predict), convert and predict's overlays report
through ``birads_calc.progress.track``; the CLI configures logging once (``--log_level`` / ``BIRADS_CALC_LOG``).
"""

from __future__ import annotations

import io
import logging
import os
import re

import pytest

from birads_calc import progress
from birads_calc.cli import main
from birads_calc.data.manifest import read_manifest
from birads_calc.progress import configure_logging, done_line, track
from birads_calc.reporting.overlays import write_image_overlays
from tests.factories import make_tiny_dataset

DONE = re.compile(r"birads-calc: (?P<what>.+): (?P<n>\d+) (?P<unit>\w+) in (?P<s>[\d.]+) s \((?P<per>[\d.e-]+) s/\w+\)")


@pytest.fixture(autouse=True)
def logging_as_the_cli_sets_it():
    configure_logging("info")
    yield
    configure_logging("info")


def done_lines(text: str) -> list[re.Match]:
    return [m for line in text.splitlines() if (m := DONE.fullmatch(line))]


def test_plain_lines_when_stderr_is_not_a_terminal(capsys):
    assert list(track(range(5), "job: counting", unit="thing")) == list(range(5))  # items pass unchanged
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == ""  # progress never touches stdout (results only)
    assert lines[0] == "birads-calc: job: counting: 0/5 things"
    assert len(lines) == 2, lines  # start + done: 5 quick items write no line each (CI logs stay short)
    (done,) = done_lines(captured.err)
    assert (done["what"], done["n"], done["unit"]) == ("job: counting", "5", "things")


def test_a_long_loop_says_it_is_alive_at_most_once_per_interval(capsys, monkeypatch):
    clock = iter(range(0, 1000, 10))  # every call to the clock: 10 s later
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    for _ in track(range(7), "job: slow", unit="image"):
        pass
    lines = capsys.readouterr().err.splitlines()
    # 10 s per item, a line at most every 30 s: after items 3 and 6, then the done line (never one per item)
    assert lines[1:3] == [
        "birads-calc: job: slow: 3/7 images (30 s, 10 s/image, ~40 s left)",
        "birads-calc: job: slow: 6/7 images (60 s, 10 s/image, ~10 s left)",
    ]
    assert len(lines) == 4 and [int(m["n"]) for m in done_lines(lines[3])] == [7]


def test_done_line_counts_and_time_per_item():
    assert done_line("prepare: decoding", 4, "image", 2.0) == "prepare: decoding: 4 images in 2.0 s (0.5 s/image)"
    assert done_line("x", 1, "case", 0.25) == "x: 1 case in 0.2 s (0.25 s/case)"
    assert done_line("x", 0, "row", 0.0) == "x: 0 rows in 0.0 s"


def test_a_loop_left_early_claims_nothing(capsys):
    for i in track(iter(range(10)), "job: partial", unit="row"):  # no len(): the count only
        if i == 2:
            break
    err = capsys.readouterr().err
    assert err.splitlines() == ["birads-calc: job: partial: started"]  # no done line for an unfinished loop


def test_warning_level_silences_progress(capsys):
    configure_logging("warning")
    assert sum(track(range(3), "job: quiet")) == 3
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_a_bar_and_the_done_line(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert list(track(["a", "b", "c"], "job: drawing", unit="image")) == ["a", "b", "c"]
    text = terminal.getvalue()
    assert "\x1b[" in text and "3/3" in text  # rich drew (and then removed) the bar: done/total
    assert "birads-calc: job: drawing: 3 images in" in text


def test_log_records_of_the_package_go_to_stderr_and_still_propagate(capsys, caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("birads_calc.data.cache").info("built cache %s", "X")
    assert capsys.readouterr().err == "birads-calc: built cache X\n"
    assert "built cache X" in caplog.text  # a program's own handler (here pytest's) sees it too


def test_unknown_log_level_is_refused():
    with pytest.raises(ValueError, match="debug, info, warning, error"):
        configure_logging("loud")


# --- the commands ---------------------------------------------------------------------------------------------------
SYNTH = ["--patients", "2", "--workers", "1", "--image_size", "320", "256", "--pixel_spacing", "0.25"]


def test_synth_and_prepare_report_progress_on_stderr_and_their_result_on_stdout(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "d"), *SYNTH]) == 0
    captured = capsys.readouterr()
    images = len({x.image for x in read_manifest(tmp_path / "d" / "manifest.csv")})
    (done,) = done_lines(captured.err)
    assert (done["what"], int(done["n"]), done["unit"]) == ("synth: rendering", images, "images")
    assert captured.out.splitlines()[-1].startswith(f"wrote {images} images")  # the closing line names the manifest
    assert captured.out.rstrip().endswith("manifest.csv") and "rendering" not in captured.out

    assert main(["prepare", str(tmp_path / "d" / "manifest.csv"), "--window", "64", "--stride", "32"]) == 0
    captured = capsys.readouterr()
    assert "birads-calc: building the crop cache of" in captured.err  # the cache's info lines show now
    (done,) = done_lines(captured.err)
    assert (done["what"], int(done["n"])) == ("crop cache: decoding", images)
    assert float(done["per"]) > 0  # time per image
    assert captured.out.startswith("cache ") and len(captured.out.splitlines()) == 1

    assert main(["prepare", str(tmp_path / "d" / "manifest.csv"), "--window", "64", "--stride", "16",
                 "--log_level", "warning"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "crop cache" not in captured.err and captured.out.startswith("cache ")  # quiet, result still there


def test_log_level_anywhere_on_the_command_line_for_this_command_only(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BIRADS_CALC_LOG", raising=False)
    assert main(["--log_level", "warning", "synth", "--out", str(tmp_path / "d"), *SYNTH]) == 0
    assert "rendering" not in capsys.readouterr().err
    assert "BIRADS_CALC_LOG" not in os.environ  # exported for the command's child processes (DDP), not kept
    assert main(["synth", "--out", str(tmp_path / "e"), *SYNTH, "--log_level=info"]) == 0
    assert "synth: rendering:" in capsys.readouterr().err


def test_log_level_from_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BIRADS_CALC_LOG", "warning")
    assert main(["synth", "--out", str(tmp_path / "d"), *SYNTH]) == 0
    assert "rendering" not in capsys.readouterr().err
    monkeypatch.setenv("BIRADS_CALC_LOG", "chatty")
    assert main(["synth", "--out", str(tmp_path / "e"), *SYNTH]) == 2
    captured = capsys.readouterr()
    assert "BIRADS_CALC_LOG chatty: not a log level" in captured.err and captured.out == ""


def test_errors_go_to_stderr(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "manifest.csv").write_text("x")
    assert main(["synth", "--out", str(tmp_path / "d"), *SYNTH]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "birads-calc synth: error:" in captured.err and "already exists" in captured.err
    assert main(["fit", "--log_level"]) == 2
    assert "--log_level needs a value" in capsys.readouterr().err


def test_overlays_report_progress(tmp_path, capsys):
    manifest = make_tiny_dataset(tmp_path, patients=2, lesions_per_image=2, size=128)
    lesions = read_manifest(manifest)
    rows = [{"image": str(x.image), "row": x.row, "birads_pred": "4A", "risk": 0.5} for x in lesions]
    names = write_image_overlays(tmp_path / "overlays", rows, {x.row: x for x in lesions}, num_classes=6)
    (done,) = done_lines(capsys.readouterr().err)
    assert (done["what"], int(done["n"])) == ("predict: drawing overlays", len(names))
    assert len(names) == len({x.image for x in lesions}) == len(list((tmp_path / "overlays").iterdir()))
